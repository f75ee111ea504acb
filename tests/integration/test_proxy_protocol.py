"""--proxy-protocol behind a real HAProxy (send-proxy and send-proxy-v2), and direct peers.

The client binds to an address the test chooses (127.0.0.5) and connects to HAProxy, which
connects to forkserve from 127.0.0.1 (in --forwarded-allow-ips) and writes the PROXY header: the
app must see 127.0.0.5 and the client's own port, over HTTP and WebSocket, with every --http
protocol and every --balance mode. HAProxy's health checks (v2 LOCAL) must find the server up.
Peers not in --forwarded-allow-ips are served as themselves, and refused if they send a header.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

from tests.conftest import free_port, wait_until
from tests.examples.components import require

CLIENT = "127.0.0.5"  # the real client, as HAProxy reports it
STRANGER = "127.0.0.7"  # a direct peer not in --forwarded-allow-ips
REQUEST = b"GET /x HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"


@dataclass
class HAProxy:
    proc: subprocess.Popen[bytes]
    directory: Path
    v1_port: int
    v2_port: int

    @property
    def log(self) -> str:
        return (self.directory / "haproxy.log").read_text(errors="replace")

    def server_status(self) -> dict[str, str]:
        """backend -> the status HAProxy's health checks give forkserve (UP, DOWN...)."""
        with socket.socket(socket.AF_UNIX) as stats:
            stats.settimeout(5)
            stats.connect(str(self.directory / "stats.sock"))
            stats.sendall(b"show stat\n")
            text = b"".join(iter(lambda: stats.recv(65536), b"")).decode()
        rows = csv.DictReader(text.lstrip("# ").splitlines())
        return {row["pxname"]: row["status"] for row in rows if row["svname"] == "forkserve"}


HAPROXY_CONFIG = """
global
    maxconn 200
    stats socket {directory}/stats.sock mode 600 level user
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend front_v1
    bind 127.0.0.1:{v1_port}
    default_backend send_v1
frontend front_v2
    bind 127.0.0.1:{v2_port}
    default_backend send_v2
backend send_v1
    server forkserve 127.0.0.1:{target} send-proxy
backend send_v2
    # Health checks carry a v2 LOCAL header (the proxy speaking for itself).
    option httpchk GET /health
    server forkserve 127.0.0.1:{target} send-proxy-v2 check check-send-proxy inter 300ms
"""


@contextlib.contextmanager
def haproxy(target: int) -> Iterator[HAProxy]:
    binary = require("haproxy", "haproxy", ("/usr/sbin/haproxy",))
    directory = Path(tempfile.mkdtemp(prefix="forkserve-haproxy-"))
    v1_port, v2_port = free_port(), free_port()
    config = directory / "haproxy.cfg"
    config.write_text(
        HAPROXY_CONFIG.format(directory=directory, v1_port=v1_port, v2_port=v2_port, target=target)
    )
    with open(directory / "haproxy.log", "wb") as log:
        proc = subprocess.Popen(
            [binary, "-db", "-f", str(config)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    proxy = HAProxy(proc, directory, v1_port, v2_port)
    try:

        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"haproxy exited with {proc.returncode}\n{proxy.log}")
            return all(_port_open(port) for port in (v1_port, v2_port))

        wait_until(listening, 15, "haproxy to listen", lambda: proxy.log)
        yield proxy
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for leftover in directory.iterdir():
            leftover.unlink()
        directory.rmdir()


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def exchange(port: int, data: bytes, source: str = CLIENT, timeout: float = 10.0) -> tuple[bytes, int]:
    """(everything the server sent until it closed, the client's own port)."""
    with socket.socket() as sock:
        sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        client_port = sock.getsockname()[1]
        sock.sendall(data)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    return received, client_port


def body(response: bytes) -> str:
    head, _, rest = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response
    return rest.decode()


def websocket_peer(port: int) -> tuple[str, int]:
    """(the text the app sent over a WebSocket through PORT, the client's port)."""
    sock = socket.socket()
    sock.bind((CLIENT, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    client_port = sock.getsockname()[1]
    with ws_connect(f"ws://127.0.0.1:{port}/ws", sock=sock, proxy=None, open_timeout=10) as ws:
        text = ws.recv(timeout=10)
    assert isinstance(text, str)
    return text, client_port


def through_haproxy(server: Any, proxy: HAProxy) -> None:
    for port in (proxy.v1_port, proxy.v2_port):
        response, client_port = exchange(port, REQUEST)
        assert body(response) == f"http {CLIENT} {client_port}", server.tail()
        text, client_port = websocket_peer(port)
        assert text == f"websocket {CLIENT} {client_port}", server.tail()


@pytest.mark.parametrize("http", ["fast", "httptools", "h11", "zttp"])
def test_haproxy_v1_and_v2_give_the_app_the_real_client(serve: Any, http: str) -> None:
    server = serve(
        "--proxy-protocol", "--http", http, "-w", "1", "--health-path", "/health", app="peer:app", wait=1
    )
    with haproxy(server.port) as proxy:
        through_haproxy(server, proxy)
        # HAProxy's v2 health checks are LOCAL: served as the proxy itself, so the server is UP.
        wait_until(lambda: proxy.server_status().get("send_v2") == "UP", 10, "haproxy's check to pass",
                   lambda: f"{proxy.server_status()}\n{proxy.log}\n{server.tail()}")  # fmt: skip
    assert "Traceback" not in server.log(), server.tail()


@pytest.mark.parametrize("balance", ["reuseport", "round-robin", "least-conn", "ip-hash"])
def test_every_balance_mode_reads_the_header(serve: Any, balance: str) -> None:
    server = serve("--proxy-protocol", "--balance", balance, "-w", "2", app="peer:app", wait=2)
    with haproxy(server.port) as proxy:
        for _ in range(3):
            through_haproxy(server, proxy)
    assert "Traceback" not in server.log(), server.tail()


def test_direct_peers_forged_headers_and_silent_proxies(serve: Any) -> None:
    server = serve("--proxy-protocol", "-w", "1", "--header-timeout", "1", app="peer:app", wait=1)
    forged = b"PROXY TCP4 203.0.113.9 10.0.0.1 4242 80\r\n" + REQUEST

    # A peer not in --forwarded-allow-ips is served as itself...
    response, client_port = exchange(server.port, REQUEST, source=STRANGER)
    assert body(response) == f"http {STRANGER} {client_port}"
    # ...and closed, unanswered, if it claims to speak for someone else.
    assert exchange(server.port, forged, source=STRANGER)[0] == b""
    forged_v2 = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes(12) + REQUEST
    assert exchange(server.port, forged_v2, source=STRANGER)[0] == b""
    server.wait_log(
        rf"refused a connection: {STRANGER} sent a PROXY header but is not in --forwarded-allow-ips"
    )

    # A trusted peer (a proxy) must send the header: without it, or with a broken one, refused.
    assert exchange(server.port, REQUEST, source="127.0.0.1")[0] == b""
    assert (
        exchange(server.port, b"PROXY TCP4 1.2.3.04 10.0.0.1 1 2\r\n" + REQUEST, source="127.0.0.1")[0] == b""
    )
    # With a valid one, split across writes at an awkward place, served as the client it names.
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.connect(("127.0.0.1", server.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for part in (forged[:9], forged[9:40], forged[40:]):
            sock.sendall(part)
        assert body(b"".join(iter(lambda: sock.recv(65536), b""))) == "http 203.0.113.9 4242"

    # A header that does not finish within --header-timeout is closed.
    with socket.socket() as sock:
        sock.settimeout(15)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"PROXY TCP4 203.0.113.9")
        assert sock.recv(1) == b""
    assert "Traceback" not in server.log(), server.tail()


def test_proxy_protocol_with_tls_is_a_config_error(serve: Any, tmp_path: Path) -> None:
    certfile = tmp_path / "cert.pem"
    certfile.write_text("not read: refused before")
    server = serve("--proxy-protocol", "--certfile", str(certfile), app="peer:app")
    assert server.wait_exit() == 2
    assert "--proxy-protocol with --certfile" in server.log(), server.tail()
