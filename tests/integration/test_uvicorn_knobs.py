"""uvicorn's knobs under their uvicorn names, each seen to act on a real server."""

from __future__ import annotations

import base64
import os
import socket
import time

import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from tests.conftest import wait_until


def ws_url(server) -> str:
    return server.url.replace("http://", "ws://") + "/ws"


def test_ws_max_size_closes_an_oversized_message_with_1009(serve):
    server = serve("--ws-max-size", "1024", app="wsecho:app", wait=1)
    with connect(ws_url(server), max_size=None) as ws:
        ws.send("x" * 1000)
        assert ws.recv(timeout=10) == "x" * 1000
        ws.send("x" * 2000)
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


@pytest.mark.parametrize(("flags", "offered"), [((), True), (("--ws-per-message-deflate", "false"), False)])
def test_ws_per_message_deflate(serve, flags, offered):
    server = serve(*flags, app="wsecho:app", wait=1)
    with connect(ws_url(server)) as ws:  # the client offers permessage-deflate
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
        assert ("permessage-deflate" in extensions) is offered
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi"


def raw_websocket(server) -> socket.socket:
    """A client that completes the handshake and then never answers a ping."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_ws_ping_interval_and_timeout_close_a_silent_client(serve):
    server = serve("--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.3", app="wsecho:app", wait=1)
    sock = raw_websocket(server)
    opcodes = []
    deadline = time.monotonic() + 10
    with sock:
        while time.monotonic() < deadline:
            first = sock.recv(2)
            if not first:
                break
            opcodes.append(first[0] & 0x0F)
            length = first[1] & 0x7F
            if length:
                sock.recv(length)
            if opcodes[-1] == 0x8:
                break
    assert opcodes[:1] == [0x9], opcodes  # a ping first
    assert opcodes[-1] == 0x8 or not first, opcodes  # then, unanswered, the connection is closed


def server_headers(server) -> list[tuple[bytes, bytes]]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    return [
        (name.strip().lower(), value.strip()) for name, _, value in (line.partition(b":") for line in head)
    ]


@pytest.mark.parametrize(
    ("flags", "servers", "dated"),
    [
        ((), [b"uvicorn"], True),
        (("--no-server-header",), [], True),
        (("--no-date-header",), [b"uvicorn"], False),
        # Replaces uvicorn's own rather than adding a second one.
        (("--secure-header", "Server=forkserve"), [b"forkserve"], True),
        (("--secure-headers", "--secure-header", "Server="), [], True),
    ],
)
@pytest.mark.parametrize("http", ["fast", "h11"])
def test_server_and_date_headers(serve, flags, servers, dated, http):
    server = serve("--http", http, *flags, wait=1)
    headers = server_headers(server)
    assert [value for name, value in headers if name == b"server"] == servers
    assert (b"date" in [name for name, _ in headers]) is dated


def reloads(server) -> list[str]:
    return [line for line in server.log().splitlines() if "--reload: " in line and "reloading" in line]


def test_reload_dir_include_exclude(serve, tmp_path):
    watched = tmp_path / "templates"
    watched.mkdir()
    server = serve(
        "--reload", "--reload-dir", str(watched), "--reload-include", "*.html",
        "--reload-exclude", "skip_*", "--reload-delay", "0.1", wait=1,
    )  # fmt: skip
    server.wait_log("--reload: watching")
    (watched / "skip_me.html").write_text("ignored")
    (watched / "page.html").write_text("v2")
    wait_until(lambda: reloads(server), 15, "a reload", server.tail)
    server.wait_log(r"\[worker 1 gen 2\] \[INFO\] Application startup complete", timeout=15)
    assert all("skip_me" not in line for line in reloads(server)), reloads(server)
    assert "page.html" in reloads(server)[0]


def test_reload_dir_must_exist(serve, tmp_path):
    server = serve("--reload", "--reload-dir", str(tmp_path / "nowhere"))
    assert server.wait_exit() == 2
    assert "--reload-dir" in server.log() and "is not a directory" in server.log()
