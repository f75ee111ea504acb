"""Rolling reload, recycling and stopping, under real load: not one request may fail."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.conftest import alive, wait_until
from tests.integration.load import background_load


def write_app(directory: Path, version: str, *, broken: bool = False) -> None:
    """A versioned app: the response names the code's version, so a test can see new code serve."""
    source = f"""
        import asyncio

        VERSION = {version!r}
        {"def broken(:" if broken else ""}

        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    kind = message["type"].rsplit(".", 1)[1]
                    await send({{"type": message["type"] + ".complete"}})
                    if kind == "shutdown":
                        return
            if scope["path"] == "/slow":
                await asyncio.sleep(3)
            body = VERSION.encode()
            await send({{"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(len(body)).encode())]}})
            await send({{"type": "http.response.body", "body": body}})
    """
    (directory / "versioned.py").write_text(textwrap.dedent(source))


def generation_only(server, generation: int, workers: int) -> bool:
    titles = sorted(server.processes().values())
    expected = [f"forkserve: worker {i} [versioned:app] gen {generation}" for i in range(1, workers + 1)]
    return titles == [*expected, f"forkserve: zygote [versioned:app] gen {generation}"]


def start_versioned(serve, tmp_path: Path, *args: str, workers: int = 2):
    write_app(tmp_path, "v1")
    return serve("--app-dir", str(tmp_path), "-w", str(workers), *args, app="versioned:app", wait=workers)


def test_four_hups_under_load_fail_nothing_and_serve_new_code(serve, tmp_path):
    server = start_versioned(serve, tmp_path)
    original = set(server.workers())
    with background_load(server.url) as load:
        for version in ("v2", "v3", "v4", "v5"):
            time.sleep(2.5)  # the scenario: HUPs 2.5 s apart under steady load
            write_app(tmp_path, version)
            server.signal(signal.SIGHUP)
        wait_until(lambda: generation_only(server, 5, 2), 20, "generation 5 alone", server.tail)
        settled = load.ok
        wait_until(lambda: load.ok > settled + 50, 10, "more requests on generation 5")
    assert load.failed == 0, f"{load}\n{server.tail()}"
    assert load.ok > 500, load
    assert not set(server.workers()) & original
    assert server.get().text == "v5"
    assert {b"v1", b"v5"} <= load.bodies()


def test_request_in_flight_across_a_hup_completes(serve, tmp_path):
    server = start_versioned(serve, tmp_path, workers=1)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(server.get, "/slow")
        wait_until(lambda: server.accepted() == 1, 5, "the slow request to be accepted", server.tail)
        write_app(tmp_path, "v2")
        server.signal(signal.SIGHUP)
        response = slow.result(timeout=15)
    assert (response.status_code, response.text) == (200, "v1")
    wait_until(lambda: generation_only(server, 2, 1), 15, "generation 2", server.tail)
    assert server.get().text == "v2"


def test_hup_with_broken_code_keeps_the_old_workers_serving(serve, tmp_path):
    server = start_versioned(serve, tmp_path)
    before = set(server.workers())
    write_app(tmp_path, "v2", broken=True)
    with background_load(server.url, keep_alive=4, fresh=2) as load:
        server.signal(signal.SIGHUP)
        server.wait_log(r"reload aborted: generation 2 failed to load: cannot load versioned:app")
        server.wait_log(r"generation 1 keeps serving; fix the app and send HUP again")
        mark = load.ok
        wait_until(lambda: load.ok > mark + 20, 10, "requests after the failed reload")
    assert load.failed == 0, load
    assert set(server.workers()) == before
    assert "SyntaxError" in server.log()
    assert server.get().text == "v1"
    # The next HUP, with the code fixed, goes through.
    write_app(tmp_path, "v3")
    server.signal(signal.SIGHUP)
    wait_until(lambda: generation_only(server, 3, 2), 15, "generation 3", server.tail)
    assert server.get().text == "v3"


def test_hup_storm_converges_to_one_generation(serve, tmp_path):
    server = start_versioned(serve, tmp_path)
    fd_dir = Path(f"/proc/{server.pid}/fd")
    fds_before = len(list(fd_dir.iterdir()))
    with background_load(server.url, keep_alive=8, fresh=4) as load:
        for _ in range(10):
            server.signal(signal.SIGHUP)
            time.sleep(0.3)
        wait_until(lambda: generation_only(server, 11, 2), 30, "generation 11 alone", server.tail)
    assert load.failed == 0, f"{load}\n{server.tail()}"
    seen_zygotes = [pid for pid, title in server.processes().items() if "zygote" in title]
    assert len(seen_zygotes) == 1
    assert len(list(fd_dir.iterdir())) == fds_before


def test_max_requests_recycles_workers_under_load_without_failures(serve, tmp_path):
    server = start_versioned(serve, tmp_path, "--max-requests", "300", "--max-requests-jitter", "50")
    original = set(server.workers())
    with background_load(server.url, keep_alive=8, fresh=2) as load:
        server.wait_log(r"retiring worker \d \(pid \d+\): replaced \(recycled\)", count=4, timeout=30)
    assert load.failed == 0, f"{load}\n{server.tail()}"
    assert not set(server.workers()) & original
    assert "asking to be replaced" in server.log()


def test_ttou_drains_under_load_without_failures(serve, tmp_path):
    server = start_versioned(serve, tmp_path, workers=3)
    with background_load(server.url, keep_alive=8, fresh=2) as load:
        server.signal(signal.SIGTTOU)
        wait_until(lambda: len(server.workers()) == 2, 15, "two workers", server.tail)
        mark = load.ok
        wait_until(lambda: load.ok > mark + 50, 10, "requests after scaling down")
    assert load.failed == 0, load


def test_term_answers_every_connection_waiting_in_the_accept_queue(serve):
    server = serve("-w", "1", wait=1)
    host, port = "127.0.0.1", server.port
    with ThreadPoolExecutor(1) as pool:
        # Block the only worker's loop, so new connections wait in the kernel's accept queue.
        # 2 s of CPU: long enough to be seen holding the worker however slow this machine is today.
        blocker = pool.submit(lambda: httpx.get(server.url + "/cpu?seconds=2", timeout=20))
        wait_until(lambda: server.accepted() == 1, 5, "the blocking request", server.tail)
        queued = []
        for _ in range(20):
            client = socket.create_connection((host, port), timeout=10)
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            queued.append(client)
        server.signal(signal.SIGTERM)
        answers = []
        for client in queued:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(4096)
                if not chunk:
                    break
                data += chunk
            answers.append(data.split(b"\r\n", 1)[0])
            client.close()
        assert blocker.result().status_code == 200
    assert answers == [b"HTTP/1.1 200 OK"] * 20, answers
    assert server.wait_exit() == 0


def test_shutdown_delay_keeps_serving_while_health_says_503(serve):
    server = serve("-w", "2", "--shutdown-delay", "2", "--health-path", "/healthz", wait=2)
    assert server.get("/healthz").status_code == 200
    family = set(server.processes())
    server.signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    wait_until(lambda: server.get("/healthz").status_code == 503, 2, "health to say 503", server.tail)
    # Still serving the app meanwhile, on new connections.
    while time.monotonic() - stopped_at < 1.5:
        assert server.get("/").status_code == 200
        time.sleep(0.1)
    assert server.wait_exit(10) == 0
    assert time.monotonic() - stopped_at >= 2.0
    assert not [pid for pid in family if alive(pid)]


def masters_in_group(server) -> dict[int, str]:
    import psutil

    found = {}
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            title = " ".join(process.info["cmdline"] or []).strip()
            if title.startswith("forkserve: master") and os.getpgid(process.pid) == server.pid:
                found[process.pid] = title
        except (psutil.Error, ProcessLookupError):
            continue
    server.seen.update(found)
    return found


def successor_pid(pidfile: Path, old: int) -> int:
    try:
        pid = int(pidfile.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0
    return pid if pid != old else 0


def test_usr2_hands_over_to_a_new_master_without_failures(serve, tmp_path):
    pidfile = tmp_path / "app.pid"
    server = start_versioned(serve, tmp_path, "--pid", str(pidfile))
    old_workers = set(server.workers())
    with background_load(server.url, keep_alive=8, fresh=4) as load:
        write_app(tmp_path, "v2")
        server.signal(signal.SIGUSR2)
        new_master = wait_until(
            lambda: successor_pid(pidfile, server.pid), 15, "the new pid file", server.tail
        )
        assert int((tmp_path / "app.pid.oldbin").read_text()) == server.pid
        # Its workers serve beside the old ones, then the operator stops the old master.
        wait_until(lambda: b"v2" in load.bodies(), 15, "the new master's workers to answer", server.tail)
        server.signal(signal.SIGTERM)
        assert server.wait_exit(15) == 0
        mark = load.ok
        wait_until(lambda: load.ok > mark + 100, 10, "requests after the old master left")
    assert load.failed == 0, f"{load}\n{server.tail()}"
    assert list(masters_in_group(server)) == [new_master]
    assert not [pid for pid in old_workers if alive(pid)]
    assert not (tmp_path / "app.pid.oldbin").exists()
    assert server.get().text == "v2"
    os.kill(new_master, signal.SIGTERM)
    wait_until(lambda: not alive(new_master), 15, "the new master to stop")
    assert not pidfile.exists()


def test_dev_reload_rolls_in_a_saved_change(serve, tmp_path):
    server = start_versioned(serve, tmp_path, "--reload")
    server.wait_log("--reload: watching")
    assert server.get().text == "v1"
    write_app(tmp_path, "v2")
    wait_until(lambda: server.get().text == "v2", 15, "the saved change to serve", server.tail)
    server.wait_log(r"--reload: versioned\.py changed; reloading")


def test_reload_refuses_an_app_object(tmp_path):
    import forkserve

    async def app(scope, receive, send):  # pragma: no cover - never served
        pass

    try:
        forkserve.run(app, reload=True, bind="127.0.0.1:0")
    except forkserve.ConfigError as error:
        assert "--reload needs the app as an import string" in str(error)
        assert error.exit_code == 2
    else:
        raise AssertionError("expected ConfigError")


def read_until_closed(client: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = client.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_closing_a_connection_never_resets_it(serve):
    # An upload the app answers without reading (as a 413 or an auth failure would): the server
    # closes while the client is still sending. A close with unread input is an RST, which can
    # destroy the response before the client reads it; forkserve half-closes and drains instead.
    server = serve("-w", "1", wait=1)
    body_size = 16 * 1024 * 1024
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
            head = f"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {body_size}\r\n\r\n"

            def upload(client: socket.socket = client, head: str = head) -> None:
                with contextlib.suppress(OSError):
                    client.sendall(head.encode() + b"x" * body_size)

            with ThreadPoolExecutor(1) as pool:
                pool.submit(upload)
                response = read_until_closed(client)
        assert response.startswith(b"HTTP/1.1 200 OK"), response[:100]
