"""HTTP/1.1 on a real worker, byte by byte: forkserve's fast protocol and uvicorn's httptools one.

Each test speaks raw HTTP over a socket to a real forkserve server (one worker), so what is
checked is what a client sees: keep-alive, pipelining, chunked bodies, ``Expect: 100-continue``,
back-pressure both ways, a client leaving mid-body, and large heads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import APPS, Server, alive, free_port, wait_until


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


class Connection:
    """A raw HTTP/1.1 client connection that reads responses exactly as framed."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError(f"connection closed; unread: {self.buffer[:200]!r}")
        self.buffer += chunk

    def read_until(self, separator: bytes) -> bytes:
        while separator not in self.buffer:
            self._fill()
        data, _, self.buffer = self.buffer.partition(separator)
        return data

    def read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def head(self) -> tuple[int, dict[bytes, bytes]]:
        status_line, *lines = self.read_until(b"\r\n\r\n").split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    def response(self, head_request: bool = False) -> Response:
        status, headers = self.head()
        if head_request or status in (204, 304) or status < 200:
            return Response(status, headers, b"")
        if headers.get(b"transfer-encoding") == b"chunked":
            parts = []
            while size := int(self.read_until(b"\r\n").split(b";")[0], 16):
                parts.append(self.read_exact(size))
                self.read_exact(2)
            self.read_until(b"\r\n")
            return Response(status, headers, b"".join(parts))
        return Response(status, headers, self.read_exact(int(headers[b"content-length"])))


def request(method: str, path: str, body: bytes = b"", headers: tuple[str, ...] = ()) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


@pytest.fixture(scope="module", params=["fast", "httptools", "zttp"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One forkserve server (one worker) per protocol, shared by this module's tests."""
    port = free_port()
    log_path = tmp_path_factory.mktemp(f"edges-{request.param}") / "server.log"
    argv = [sys.executable, "-m", "forkserve", "http_edges:app", "--app-dir", str(APPS)]
    argv += ["-b", f"127.0.0.1:{port}", "-w", "1", "--http", request.param, "--keep-alive", "30"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    running = Server(proc, log_path, port)
    try:
        running.wait_workers(1)
        yield running
    finally:
        running.processes()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for pid in running.seen:
            wait_until(lambda pid=pid: not alive(pid), 5.0, f"pid {pid} to end")


@pytest.fixture
def connect(server: Server) -> Iterator[type[Connection]]:
    opened: list[Connection] = []

    def open_connection() -> Connection:
        connection = Connection(server.port or 0)
        opened.append(connection)
        return connection

    yield open_connection  # type: ignore[misc]
    for connection in opened:
        connection.close()


def test_keep_alive_serves_many_requests_on_one_connection(connect):
    connection = connect()
    for i in range(50):
        connection.send(request("POST", "/echo", f"body {i}".encode()))
        response = connection.response()
        assert (response.status, response.body) == (200, f"body {i}".encode())
        assert b"connection" not in response.headers
        assert response.headers[b"date"] and response.headers[b"server"] == b"uvicorn"


def test_http_1_0_closes_after_the_response(connect):
    connection = connect()
    connection.send(b"GET / HTTP/1.0\r\n\r\n")
    response = connection.response()
    assert (response.status, response.body, response.headers[b"connection"]) == (200, b"hello", b"close")
    with pytest.raises(EOFError):
        connection.read_exact(1)


def test_pipelined_requests_are_answered_in_order(connect):
    connection = connect()
    batch = b"".join(
        request("POST", "/echo", f"body {i}".encode(), (f"X-Tag: {i}",))
        if i % 2
        else request("GET", f"/echo?n={i}", headers=(f"X-Tag: {i}",))
        for i in range(20)
    )
    connection.send(batch)
    for i in range(20):
        response = connection.response()
        assert response.headers[b"x-tag"] == str(i).encode()
        assert response.body == (f"body {i}".encode() if i % 2 else b"")
        assert response.headers[b"x-method"] == (b"POST" if i % 2 else b"GET")


def test_chunked_request_body_arriving_in_pieces(connect):
    connection = connect()
    parts = [os.urandom(n) for n in (1, 100, 5000, 70000, 3)]
    connection.send(b"POST /digest HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
    for part in parts:
        connection.send(b"%x\r\n" % len(part))
        connection.send(part + b"\r\n")
    connection.send(b"0\r\n\r\n")
    body = b"".join(parts)
    assert connection.response().body == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()


def test_chunked_response_then_head_request(connect):
    connection = connect()
    connection.send(request("GET", "/stream"))
    response = connection.response()
    assert response.headers[b"transfer-encoding"] == b"chunked"
    assert response.body == b"one two three"
    connection.send(request("HEAD", "/big?n=1000"))
    response = connection.response(head_request=True)
    assert (response.status, response.headers[b"content-length"], response.body) == (200, b"1000", b"")
    connection.send(request("GET", "/"))
    assert connection.response().body == b"hello"


def test_a_streamed_head_is_not_held_back_until_the_first_chunk(connect):
    connection = connect()
    connection.send(request("GET", "/stream?pause=3"))
    connection.head()
    head_at = time.monotonic()
    assert b"one" not in connection.buffer
    connection.read_until(b"one")
    assert time.monotonic() - head_at > 1.0


def test_expect_100_continue_is_answered_before_the_body_is_sent(connect):
    connection = connect()
    body = b"x" * 5000
    connection.send(
        b"POST /digest HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
    )
    interim = connection.response()
    assert interim.status == 100
    connection.send(body)
    assert connection.response().body == f"5000 {hashlib.sha256(body).hexdigest()}".encode()


def test_a_slow_reader_does_not_stall_other_clients(connect):
    slow = connect()
    size = 32 * 1024 * 1024
    slow.send(request("GET", f"/big?n={size}"))
    # The worker's send buffer fills (the response is far larger than the socket buffers), so it
    # must pause writing; meanwhile its loop keeps serving others.
    other = connect()
    for _ in range(5):
        other.send(request("GET", "/"))
        assert other.response().body == b"hello"
    response = slow.response()
    assert len(response.body) == size and response.body.count(b"x") == size


def test_a_body_the_app_reads_late_is_not_lost(connect):
    connection = connect()
    body = os.urandom(4 * 1024 * 1024)
    # The app waits before reading: the worker must stop reading the socket (bounded buffering)
    # and resume when the app asks, without losing or reordering a byte.
    connection.send(request("POST", "/echo?delay=0.5", body))
    assert connection.response().body == body


def test_a_client_leaving_mid_body_is_a_disconnect_for_the_app(server, connect):
    before = server.log().count("client went away mid-body")
    leaving = connect()
    leaving.send(b"POST /digest HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
    leaving.close()
    server.wait_log("client went away mid-body", count=before + 1)
    connection = connect()
    connection.send(request("GET", "/"))
    assert connection.response().body == b"hello"


def test_large_request_and_response_heads(connect):
    connection = connect()
    headers = tuple(f"X-Big-{i}: {'v' * 1000}" for i in range(40))
    connection.send(request("GET", "/headers?n=200", headers=headers))
    response = connection.response()
    assert response.body == b"41"  # the 40 above and Host
    assert all(response.headers[b"x-h-%d" % i] == b"v" * 100 for i in range(200))


def test_a_head_over_the_limit_gets_431(connect):
    connection = connect()
    headers = tuple(f"X-Big-{i}: {'v' * 1000}" for i in range(70))
    connection.send(request("GET", "/", headers=headers))
    assert connection.response().status == 431


def test_proxy_headers_from_a_trusted_peer(connect):
    connection = connect()
    connection.send(
        request("GET", "/client", headers=("X-Forwarded-For: 203.0.113.9", "X-Forwarded-Proto: https"))
    )
    assert connection.response().body == b"203.0.113.9 https"
    connection.send(request("GET", "/client"))
    assert connection.response().body == b"127.0.0.1 http"


def test_proxy_headers_from_an_untrusted_peer_are_ignored(serve):
    # With the health check on too: its wrapper goes inside the proxy layer (http.protocol.wrap_app).
    flags = ("-w", "1", "--forwarded-allow-ips", "10.0.0.1", "--health-path", "/healthz")
    server = serve(*flags, app="http_edges:app", wait=1)
    assert server.get("/healthz").status_code == 200
    connection = Connection(server.port or 0)
    try:
        connection.send(
            request("GET", "/client", headers=("X-Forwarded-For: 203.0.113.9", "X-Forwarded-Proto: https"))
        )
        assert connection.response().body == b"127.0.0.1 http"
    finally:
        connection.close()


TRAILERS = b"Authorization: Bearer stolen\r\nCookie: session=victim\r\nX-Forwarded-For: 203.0.113.9\r\n"
TRAILERS += b"X-Forwarded-Proto: https\r\nExpect: 100-continue\r\n"


@pytest.mark.parametrize("pipelined", [True, False])
def test_trailers_of_a_chunked_request_never_become_the_next_requests_headers(connect, pipelined):
    # The trusted-proxy headers matter most: the server trusts 127.0.0.1 (the default), so a leaked
    # X-Forwarded-For would also forge the next request's client address and scheme.
    connection = connect()
    first = b"POST /seen HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
    first += b"5\r\nhello\r\n0\r\n" + TRAILERS + b"\r\n"
    second = request("GET", "/seen", headers=("X-Second: yes",))
    if pipelined:
        connection.send(first + second)
        answers = [connection.response(), connection.response()]
    else:
        connection.send(first)
        answers = [connection.response()]
        connection.send(second)
        answers.append(connection.response())
    for answer in answers:
        assert answer.status == 200
        seen = answer.body.decode().splitlines()
        assert not {"authorization", "cookie", "x-forwarded-for", "x-forwarded-proto", "expect"} & set(seen)
        assert "client=127.0.0.1" in seen and "scheme=http" in seen
    assert answers[0].body.decode().splitlines()[:2] == ["host", "transfer-encoding"]
    assert answers[1].body.decode().splitlines()[:2] == ["host", "x-second"]
    assert b"100 Continue" not in connection.buffer


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


@pytest.mark.parametrize("unread", [False, True], ids=["in-flight", "response-unread"])
@pytest.mark.parametrize("http", ["fast", "httptools", "h11", "zttp"])
def test_a_huge_head_behind_a_slow_request_gets_431_and_the_worker_stays_small(serve, http, unread):
    # The second request's head arrives while the first is still being answered (its app is
    # sleeping, or its large response is not being read): the head limit holds all the same, and
    # the first response is not cut off. A server of its own, so the peak RSS is this test's.
    server = serve("-w", "1", "--http", http, app="http_edges:app", wait=1)
    (worker,) = server.workers()
    before = _peak_rss_kib(worker)
    connection = Connection(server.port or 0, timeout=30.0)
    first = request("GET", "/big?size=2000000") if unread else request("POST", "/echo?delay=1", b"slow")
    huge = b"GET / HTTP/1.1\r\nHost: test\r\nX-Huge: " + b"v" * (48 << 20)

    def flood() -> None:
        # The server closes once it has refused the head (after reading and dropping the rest for
        # a moment, so that the client sees the 431 rather than a reset).
        with contextlib.suppress(OSError):
            connection.send(first + huge)

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    if unread:
        wait_until(lambda: not sender.is_alive(), 30.0, "the server to refuse the head")
    answer = connection.response()
    assert answer.status == 200
    assert len(answer.body) == (2000000 if unread else 4)
    # h11 and zttp have head limits of their own (h11's at 16 KiB), answered with 400.
    assert connection.response().status in ((431,) if http in ("fast", "httptools") else (400, 431))
    with pytest.raises(EOFError):
        connection.response()
    sender.join(30.0)
    grown = _peak_rss_kib(worker) - before
    assert grown < 16 << 10, f"the worker's peak RSS grew by {grown} KiB"
    connection.close()
    # The worker goes on serving.
    again = Connection(server.port or 0)
    again.send(request("GET", "/"))
    assert again.response().body == b"hello"
    again.close()


@pytest.mark.parametrize("http", ["fast", "httptools"])
def test_a_late_head_behind_a_slow_request_is_closed_after_its_response(serve, http):
    # Half a head sent while the first request's app sleeps past --header-timeout: the first
    # response is sent whole, then the connection closes (not at the 60 s keep-alive timeout).
    flags = ("-w", "1", "--http", http, "--header-timeout", "1", "--keep-alive", "60")
    server = serve(*flags, app="http_edges:app", wait=1)
    connection = Connection(server.port or 0, timeout=20.0)
    try:
        connection.send(request("POST", "/echo?delay=2", b"slow") + b"GET / HTTP/1.1\r\nHost: te")
        started = time.monotonic()
        assert connection.response().body == b"slow"
        with pytest.raises(EOFError):
            connection.response()
        assert time.monotonic() - started < 15.0
    finally:
        connection.close()
