"""Past one machine: two forkserve hosts behind a real nginx (the recipe in docs/cluster.md).

Reloading one host under load through nginx fails no request; killing one host outright (master
and workers, SIGKILL) makes nginx route around it, also without a failed request; ip_hash keeps a
client on one host; nginx serves the static files itself; examples/chat on both hosts, sharing one
Redis, passes a message sent through nginx to a client of one host to the clients of both.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import APPS, free_port, wait_until
from tests.examples.components import Component, start_nginx, start_redis
from tests.examples.helpers import REPO, fresh_client
from tests.examples.hosts import Host, Hosts
from tests.integration.load import background_load

HOST_PORT = 8000


def nginx_http_block(hosts: list[Host], port: int, sticky_port: int, static: str) -> str:
    """The upstreams and servers of docs/cluster.md, pointed at HOSTS."""

    def upstream(name: str, method: str) -> str:
        servers = "".join(
            f"        server {host.address}:{HOST_PORT} max_fails=1 fail_timeout=10s;\n" for host in hosts
        )
        return f"    upstream {name} {{\n        {method};\n{servers}        keepalive 16;\n    }}\n"

    proxy = (
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n'
        "            proxy_set_header Host $host;\n"
        "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
        "            proxy_set_header X-Forwarded-Proto $scheme;\n"
        "            proxy_connect_timeout 1s;\n"
        "            proxy_next_upstream error timeout http_502 http_503 http_504;\n"
        "            proxy_next_upstream_tries 3;\n"
    )
    websocket = (
        "            proxy_http_version 1.1;\n"
        "            proxy_set_header Upgrade $http_upgrade;\n"
        '            proxy_set_header Connection "upgrade";\n'
        "            proxy_read_timeout 1h;\n"
    )
    return (
        upstream("app", "least_conn")
        + upstream("app_sticky", "ip_hash")
        + f"    server {{\n        listen 127.0.0.1:{port};\n"
        f"        location /static/ {{\n            alias {static}/;\n        }}\n"
        f"        location / {{\n            proxy_pass http://app;\n{proxy}        }}\n"
        f"        location /ws {{\n            proxy_pass http://app;\n{websocket}        }}\n    }}\n"
        f"    server {{\n        listen 127.0.0.1:{sticky_port};\n"
        f"        location / {{\n            proxy_pass http://app_sticky;\n{proxy}        }}\n    }}\n"
    )


class Cluster:
    def __init__(
        self,
        serve,
        hosts: list[Host],
        app: str = "hello:app",
        app_dir: Path = APPS,
        env: Callable[[Host], dict[str, str]] | None = None,
    ) -> None:
        self.hosts = hosts
        self.servers = []
        for host in hosts:
            argv = [sys.executable, "-m", "forkserve", app, "--app-dir", str(app_dir), "-w", "2"]
            argv += ["-b", f"{host.address}:{HOST_PORT}", "--health-path", "/healthz"]
            server = serve(command=host.command(argv), env=env(host) if env else None)
            self.servers.append(server)
        for server in self.servers:
            server.wait_workers(2, timeout=30)
        self.port, self.sticky_port = free_port(), free_port()
        # nginx's own directory: its workers (nobody, when started as root) may read there.
        self.nginx: Component = start_nginx(
            nginx_http_block(hosts, self.port, self.sticky_port, "{dir}/static"), self.port
        )
        (self.nginx.directory / "static").mkdir(mode=0o755)
        (self.nginx.directory / "static" / "hello.txt").write_text("served by nginx\n")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def host_of(self, body: str) -> int:
        """Which host's worker answered (the hello app's body starts with the worker's pid)."""
        pid = int(body.split()[0])
        for index, server in enumerate(self.servers):
            if pid in server.seen or pid in server.workers():
                return index
        raise AssertionError(f"pid {pid} belongs to no host")

    def tail(self) -> str:
        return "\n".join([*(server.tail(15) for server in self.servers), self.nginx.tail()])


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    made = Hosts(2)
    # The serve fixture kills the hosts' processes; a namespace outlives its deletion until they are gone.
    yield made
    made.remove()


@pytest.fixture
def cluster(serve, hosts) -> Iterator[Cluster]:
    built = Cluster(serve, hosts.hosts)
    yield built
    built.nginx.stop(signal.SIGQUIT)


def only_generation(server, generation: int) -> bool:
    titles = list(server.processes().values())
    workers = [title for title in titles if "forkserve: worker" in title]
    return len(workers) == 2 and all(title.endswith(f"gen {generation}") for title in titles)


def test_reloading_one_host_under_load_through_nginx_fails_nothing(cluster):
    with background_load(cluster.url, keep_alive=8, fresh=4) as load:
        wait_until(lambda: load.ok > 100, 15, "load through nginx", cluster.tail)
        first = cluster.servers[0]
        first.signal(signal.SIGHUP)
        wait_until(lambda: only_generation(first, 2), 30, "host 0 on generation 2", cluster.tail)
        mark = load.ok
        wait_until(lambda: load.ok > mark + 100, 15, "load after the reload", cluster.tail)
    assert load.failed == 0, f"{load}\n{cluster.tail()}"
    assert {cluster.host_of(body.decode()) for body in load.bodies()} == {0, 1}
    # Generation 2 of host 0 served through nginx too.
    assert any(body.endswith(b" 2") for body in load.bodies())


def test_killing_a_host_makes_nginx_route_around_it(cluster):
    doomed = cluster.servers[0]
    with background_load(cluster.url, keep_alive=8, fresh=4) as load:
        wait_until(lambda: load.ok > 100, 15, "load through nginx", cluster.tail)
        doomed.processes()  # remember its workers, for the leak check
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.proc.wait(10)
        killed_at = load.ok
        wait_until(lambda: load.ok > killed_at + 200, 20, "load after the kill", cluster.tail)
    assert load.failed == 0, f"{load}\n{cluster.tail()}"
    # Afterwards only the survivor answers.
    with fresh_client(cluster.url) as client:
        survivors = {cluster.host_of(client.get("/").text) for _ in range(20)}
    assert survivors == {1}


def test_ip_hash_keeps_each_client_on_one_host_and_nginx_serves_static_files(cluster):
    for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        with fresh_client(f"http://127.0.0.1:{cluster.sticky_port}", local_address=address) as client:
            hosts = {cluster.host_of(client.get("/").text) for _ in range(12)}
        assert len(hosts) == 1, (address, hosts)
    response = httpx.get(cluster.url + "/static/hello.txt", timeout=10)
    assert (response.status_code, response.text) == (200, "served by nginx\n")
    assert response.headers["server"].startswith("nginx")


def test_a_chat_message_reaches_clients_on_both_hosts_through_nginx(serve, hosts):
    redis = start_redis(bind=tuple(dict.fromkeys(host.gateway for host in hosts.hosts)))
    try:
        cluster = Cluster(
            serve, hosts.hosts, "examples.chat.app:app", REPO,
            env=lambda host: {"REDIS_URL": redis.extra["url"].replace(hosts.hosts[0].gateway, host.gateway)},
        )  # fmt: skip
        try:
            check_chat(cluster)
        finally:
            cluster.nginx.stop(signal.SIGQUIT)
    finally:
        redis.stop()


def check_chat(cluster: Cluster) -> None:
    url = f"ws://127.0.0.1:{cluster.port}/ws"
    with ExitStack() as stack:
        clients: list[tuple[Any, int]] = []

        def connect_one() -> bool:
            websocket = stack.enter_context(connect(url, open_timeout=10))
            hello = json.loads(websocket.recv(timeout=10))
            clients.append((websocket, cluster.host_of(str(hello["worker"]))))
            return {host for _, host in clients} == {0, 1}

        wait_until(connect_one, 20, "clients on both hosts", cluster.tail)
        for sender_host in (0, 1):
            sender = next(ws for ws, host in clients if host == sender_host)
            sender.send(f"from host {sender_host}")
            for websocket, host in clients:
                received = json.loads(websocket.recv(timeout=10))
                assert received["text"] == f"from host {sender_host}", (host, received)
