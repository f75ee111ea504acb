"""Request limits on a real worker, in every HTTP/1.1 protocol forkserve offers.

Each test starts its own server (one worker) so that the worker's peak RSS (``VmHWM``) is the
test's alone, sends a hostile request over a raw socket, and checks what the client sees (the
status, then the close), that the worker did not grow with the attack, and that it goes on serving.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import pytest

from tests.conftest import Server
from tests.integration.test_http_edges import Connection, _peak_rss_kib, request

PROTOCOLS = ["fast", "httptools", "h11", "zttp"]
# 40 MiB of hostile bytes: a server that buffers them grows by at least that much.
HUGE = 40 << 20
# What a worker may grow by while refusing them (reads in flight, allocator slack).
GROWTH_LIMIT_KIB = 16 << 10
CHUNKED_POST = b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"


def _start(serve: Callable[..., Server], http: str, *flags: str) -> tuple[Server, int, int]:
    server = serve("-w", "1", "--http", http, *flags, app="http_edges:app", wait=1)
    (worker,) = server.workers()
    return server, worker, _peak_rss_kib(worker)


def _refused(server: Server, data: bytes, statuses: tuple[int, ...]) -> None:
    """Send DATA (in the background: the server stops reading it); expect one of STATUSES, then EOF."""
    connection = Connection(server.port or 0, timeout=30.0)

    def flood() -> None:
        with contextlib.suppress(OSError):  # the server closes once it has refused the request
            connection.send(data)

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    try:
        status, _ = connection.head()
        assert status in statuses
        # Then the close (after the answer's body: h11's 400 is delimited by the close alone).
        with pytest.raises((EOFError, ConnectionResetError)):
            while True:
                connection.read_exact(len(connection.buffer) + 1)
        sender.join(30.0)
        assert not sender.is_alive(), "the server kept reading the refused request"
    finally:
        connection.close()


def _still_serves(server: Server, worker: int, before: int) -> None:
    grown = _peak_rss_kib(worker) - before
    assert grown < GROWTH_LIMIT_KIB, f"the worker's peak RSS grew by {grown} KiB"
    again = Connection(server.port or 0)
    try:
        again.send(request("GET", "/"))
        assert again.response().body == b"hello"
    finally:
        again.close()


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_huge_trailer_field_is_refused_and_the_worker_stays_small(serve, http):
    # llhttp hands a trailer field over only once it is complete, and httptools buffers it until
    # then: unbounded, one 40 MiB field grew a worker by 80 MiB. The trailer section counts
    # toward --max-header-size like a head.
    server, worker, before = _start(serve, http)
    _refused(server, CHUNKED_POST + b"5\r\nhello\r\n0\r\nX-Huge: " + b"v" * HUGE, (400, 431))
    _still_serves(server, worker, before)


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_huge_chunk_extension_is_refused(serve, http):
    server, worker, before = _start(serve, http)
    _refused(server, CHUNKED_POST + b"5;ext=" + b"e" * HUGE, (400, 431))
    _still_serves(server, worker, before)


@pytest.mark.parametrize("http", PROTOCOLS)
def test_trailers_and_extensions_within_the_limit_are_accepted(serve, http):
    server, _, _ = _start(serve, http, "--max-header-size", "4096")
    connection = Connection(server.port or 0)
    try:
        extension = b";name=" + b"e" * 1000
        body = b"5" + extension + b"\r\nhello\r\n6" + extension + b"\r\n world\r\n0\r\n"
        trailers = b"X-One: " + b"t" * 1000 + b"\r\nX-Two: " + b"t" * 1000 + b"\r\n\r\n"
        # Many chunks: the trailer budget is per stretch without body bytes, not per message.
        many = b"".join(b"1;e=" + b"e" * 100 + b"\r\nx\r\n" for _ in range(100))
        connection.send(CHUNKED_POST + body + trailers)
        assert connection.response().body == b"hello world"
        connection.send(CHUNKED_POST + many + b"0\r\n\r\n")
        assert connection.response().body == b"x" * 100
    finally:
        connection.close()


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_body_over_the_size_limit_gets_413(serve, http):
    server, worker, before = _start(serve, http, "--limit-max-request-size", "1M")
    # Announced: refused from the head, before any of it is read.
    announced = b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % HUGE
    _refused(server, announced + b"x" * HUGE, (413,))
    # Streamed: refused as it passes the limit.
    chunk = b"%x\r\n%b\r\n" % (1 << 16, b"x" * (1 << 16))
    _refused(server, CHUNKED_POST + chunk * (HUGE >> 16), (413,))
    _still_serves(server, worker, before)
    # At the limit: served.
    connection = Connection(server.port or 0)
    try:
        connection.send(request("POST", "/echo", b"y" * (1 << 20)))
        assert len(connection.response().body) == 1 << 20
    finally:
        connection.close()


@pytest.mark.parametrize("http", PROTOCOLS)
def test_more_header_fields_than_the_count_limit_get_431(serve, http):
    server, worker, before = _start(serve, http, "--max-header-count", "20")
    fields = tuple(f"X-F{i}: v" for i in range(19))  # and Host: 20
    connection = Connection(server.port or 0)
    try:
        connection.send(request("GET", "/", headers=fields))
        assert connection.response().body == b"hello"
    finally:
        connection.close()
    _refused(server, request("GET", "/", headers=(*fields, "X-Last: v")), (431,))
    _still_serves(server, worker, before)


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_request_line_over_the_limit_gets_414(serve, http):
    server, worker, before = _start(serve, http, "--limit-request-line", "100")
    # "GET " + target + " HTTP/1.1" is the line: 100 bytes exactly is served, 101 is refused.
    target = "/?q=" + "a" * (100 - len("GET  HTTP/1.1") - 4)
    connection = Connection(server.port or 0)
    try:
        connection.send(request("GET", target))
        assert connection.response().body == b"hello"
    finally:
        connection.close()
    _refused(server, request("GET", target + "a"), (414,))
    # Past --max-header-size as well, the head limit's 431 comes first (nothing is buffered).
    _refused(server, b"GET /" + b"a" * HUGE, (400, 414, 431))
    _still_serves(server, worker, before)


@pytest.mark.parametrize("http", PROTOCOLS)
def test_a_body_the_app_leaves_unread_is_not_taken_for_the_next_head(serve, http):
    # The app answers before reading a body larger than --max-header-size: the rest of the body
    # is the request's, not a head, so no 431 follows the answer and the connection serves on.
    server, _, _ = _start(serve, http, "--max-header-size", "4096")
    connection = Connection(server.port or 0)
    try:
        body = b"b" * (1 << 20)
        head = b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(body)
        connection.send(head + body[:1000])
        assert connection.response().body == b"hello"
        connection.send(body[1000:])
        connection.send(request("GET", "/echo", b"next"))
        assert connection.response().body == b"next"
        chunks = b"".join(b"%x\r\n%b\r\n" % (1 << 14, body[: 1 << 14]) for _ in range(64))
        connection.send(CHUNKED_POST.replace(b"/echo", b"/") + chunks[:1000])
        assert connection.response().body == b"hello"
        connection.send(chunks[1000:] + b"0\r\n\r\n" + request("GET", "/echo", b"again"))
        assert connection.response().body == b"again"
    finally:
        connection.close()
