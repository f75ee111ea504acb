"""The fast protocol's own behaviour, apart from uvicorn: it no longer inherits any of it.

Tables for the pure parts (upgrade detection, response-header rules, status lines, the access
line's fields, the request line's length), then the class on a real event loop with a recording
transport: the WebSocket hand-off, 400s, shutdown, the keep-alive timer, and flow control both
ways. uvicorn's own suite runs over the same class in tests/protocol (the peer oracle).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from forkserve.http import fast_cycle, fast_plan
from forkserve.http.choice import http_protocol_class
from forkserve.http.fast import FastHttpToolsProtocol, websocket_requested
from forkserve.http.fast_cycle import client_text, target_text
from forkserve.http.flow import HIGH_WATER_LIMIT
from forkserve.http.protocol import LingeringTransport, release_held, request_line_length


@pytest.mark.parametrize(
    ("headers", "requested"),
    [
        ([(b"connection", b"upgrade"), (b"upgrade", b"websocket")], True),
        ([(b"connection", b"keep-alive, Upgrade"), (b"upgrade", b"WebSocket")], True),
        ([(b"upgrade", b"websocket")], False),  # Connection must name it
        ([(b"connection", b"upgrade"), (b"upgrade", b"h2c")], False),
        ([(b"connection", b"upgrade"), (b"upgrade", b"websocket"), (b"connection", b"close")], False),
        ([], False),
    ],
)
def test_websocket_requested(headers, requested):
    assert websocket_requested(headers) is requested


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        (b"content-type", True),
        (b"x-a_b.c~d", True),
        (b"bad name", False),
        (b"a:b", False),
        (b"a\r\nb", False),
    ],
)
def test_response_header_names(name, valid):
    assert (fast_plan.HEADER_RE.search(name) is None) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (b"text/plain; charset=utf-8", True),
        (b"a\tb", True),
        (b"a\r\nSet-Cookie: x", False),
        (b"a\x00", False),
    ],
)
def test_response_header_values(value, valid):
    assert (fast_plan.HEADER_VALUE_RE.search(value) is None) is valid


@pytest.mark.parametrize(
    ("status", "line"),
    [
        (200, b"HTTP/1.1 200 OK\r\n"),
        (431, b"HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        (599, b"HTTP/1.1 599 \r\n"),
    ],
)
def test_status_lines(status, line):
    assert fast_plan.STATUS_LINE[status] == line


@pytest.mark.parametrize(
    ("scope", "client", "target"),
    [
        ({"client": ("10.0.0.1", 5000), "raw_path": b"/a", "query_string": b""}, "10.0.0.1:5000", "/a"),
        ({"client": None, "raw_path": b'/"x', "query_string": b'q="y"'}, "", "/%22x?q=%22y%22"),
    ],
)
def test_access_line_fields(scope, client, target):
    assert (client_text(scope), target_text(scope)) == (client, target)


@pytest.mark.parametrize(
    ("parts", "line"),
    [
        (("GET", b"/", b"", ""), "GET / HTTP/1.1"),
        (("POST", b"/a", b"b=1", ""), "POST /a?b=1 HTTP/1.1"),
        (("GET", b"/api/x", b"", "/api"), "GET /x HTTP/1.1"),  # the root path was not on the line
    ],
)
def test_request_line_length(parts, line):
    scope = dict(zip(("method", "raw_path", "query_string", "root_path"), parts, strict=True))
    assert request_line_length(scope) == len(line)


def on_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop, bounded."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 10.0))

    return run


class Transport:
    """Records what the protocol writes and asks of its transport."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False
        self.reading = True
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        self.written += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return False  # LingeringTransport then closes at once

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


class WebSocketStandIn:
    """Takes the connection over as uvicorn's WebSocket protocol classes do."""

    made: list[WebSocketStandIn] = []

    def __init__(self, config: Any, server_state: Any, app_state: Any) -> None:
        self.transport: Any = None
        self.received = b""
        WebSocketStandIn.made.append(self)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data


async def hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"hello"})


def connect(app: Any, **config: Any) -> tuple[FastHttpToolsProtocol, Transport]:
    settings = uvicorn.Config(app, log_config=None, lifespan="off", **config)
    protocol = FastHttpToolsProtocol(settings, ServerState(), {})
    transport = Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: k\r\n\r\n"
)


@on_loop
async def test_an_upgrade_is_handed_to_the_websocket_class_with_the_head_replayed():
    WebSocketStandIn.made.clear()
    protocol, transport = connect(hello, ws=WebSocketStandIn)
    protocol.data_received(UPGRADE)
    (ws,) = WebSocketStandIn.made
    # The real transport, not the HTTP side's lingering wrapper (protocol.upgraded_transport).
    assert transport.protocol is ws and ws.transport is transport
    assert ws.received.startswith(b"GET /ws HTTP/1.1\r\n")
    assert b"upgrade: websocket\r\n" in ws.received and ws.received.endswith(b"\r\n\r\n")
    assert protocol not in protocol.connections
    assert transport.written == b""  # the HTTP side answered nothing


class Recorded(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@on_loop
async def test_an_upgrade_without_a_websocket_library_is_served_as_http():
    protocol, transport = connect(hello, ws="none")
    recorded = Recorded()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(recorded)  # on the logger itself: other tests may stop its propagation
    try:
        protocol.data_received(UPGRADE)
        await asyncio.sleep(0)
    finally:
        logger.removeHandler(recorded)
    assert transport.written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert recorded.messages[0] == "Unsupported upgrade request."
    assert recorded.messages[1].startswith("No supported WebSocket library detected")


@on_loop
async def test_bytes_the_parser_refuses_get_400_and_a_close():
    protocol, transport = connect(hello)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost x\r\n\r\n")
    assert transport.written.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close\r\n" in transport.written and transport.closed


@on_loop
async def test_shutdown_closes_an_idle_connection_and_lets_a_request_in_flight_finish():
    protocol, transport = connect(hello)
    protocol.shutdown()
    assert transport.closed
    gate = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await gate.wait()
        await hello(scope, receive, send)

    protocol, transport = connect(slow)
    protocol.data_received(GET)
    await asyncio.sleep(0)
    protocol.shutdown()
    assert not transport.closed
    gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert b"connection: close\r\n" in transport.written and transport.closed


@on_loop
async def test_the_keep_alive_timer_closes_an_idle_connection_no_sooner_than_after_the_last_response():
    timeout = 0.2
    protocol, transport = connect(hello, timeout_keep_alive=timeout)
    closed_at: list[float] = []
    close = transport.close
    transport.close = lambda: (closed_at.append(time.monotonic()), close())  # type: ignore[method-assign]
    protocol.data_received(GET)
    for _ in range(5):
        await asyncio.sleep(0)
    timer = protocol.timeout_keep_alive_task
    assert timer is not None
    await asyncio.sleep(timeout / 2)
    protocol.data_received(GET)  # a request within the timeout: it does not re-arm the timer...
    for _ in range(5):
        await asyncio.sleep(0)
    assert protocol.timeout_keep_alive_task is timer and not timer.cancelled()
    last_response = protocol.idle_since
    assert last_response is not None
    for _ in range(100):  # ...but the close waits out the timeout after the last response
        if transport.closed:
            break
        await asyncio.sleep(timeout / 4)
    assert transport.written.count(b"HTTP/1.1 200 OK") == 2 and transport.closed
    assert closed_at[0] >= last_response + timeout


@on_loop
async def test_the_keep_alive_timer_leaves_a_connection_open_while_a_request_is_under_way():
    proceed = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await proceed.wait()
        await hello(scope, receive, send)

    protocol, transport = connect(slow, timeout_keep_alive=0.05)
    protocol.data_received(GET)
    for _ in range(5):
        await asyncio.sleep(0)
    protocol.data_received(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.2)  # the timer fires while /slow is under way
    assert not transport.closed and protocol.timeout_keep_alive_task is None
    proceed.set()
    for _ in range(100):
        if transport.closed:
            break
        await asyncio.sleep(0.05)
    assert transport.written.count(b"HTTP/1.1 200 OK") == 2 and transport.closed


@on_loop
async def test_a_body_the_app_has_not_read_pauses_reading_until_it_does():
    started = asyncio.Event()
    proceed = asyncio.Event()
    received: list[int] = []

    async def reader(scope: Any, receive: Any, send: Any) -> None:
        started.set()
        await proceed.wait()
        while True:
            message = await receive()
            received.append(len(message["body"]))
            if not message["more_body"]:
                break
        await hello(scope, receive, send)

    protocol, transport = connect(reader)
    size = 2 * HIGH_WATER_LIMIT
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    await started.wait()
    protocol.data_received(b"x" * (HIGH_WATER_LIMIT + 1))
    assert not transport.reading
    proceed.set()
    await asyncio.sleep(0)
    assert transport.reading  # receive() resumed it
    protocol.data_received(b"x" * (size - HIGH_WATER_LIMIT - 1))
    for _ in range(10):
        await asyncio.sleep(0)
    assert sum(received) == size and transport.written.startswith(b"HTTP/1.1 200 OK")


@on_loop
async def test_a_full_write_buffer_holds_the_response_until_it_drains():
    protocol, transport = connect(hello)
    protocol.pause_writing()
    protocol.data_received(GET)
    for _ in range(5):
        await asyncio.sleep(0)
    assert transport.written == b""
    protocol.resume_writing()
    for _ in range(5):
        await asyncio.sleep(0)
    assert transport.written.startswith(b"HTTP/1.1 200 OK")


class WriteLog(Transport):
    """A Transport that keeps each write apart, to count the writes a response takes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        super().write(data)
        self.writes.append(data)


def connect_logging_writes(app: Any) -> tuple[FastHttpToolsProtocol, WriteLog]:
    settings = uvicorn.Config(app, log_config=None, lifespan="off")
    protocol = FastHttpToolsProtocol(settings, ServerState(), {})
    transport = WriteLog()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


def streaming(first_chunk_after: float) -> Callable[..., Coroutine[Any, Any, None]]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        await send(start)
        if first_chunk_after:
            await asyncio.sleep(first_chunk_after)
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await send({"type": "http.response.body", "body": b"second"})

    return app


@on_loop
async def test_a_stream_whose_first_chunk_follows_at_once_starts_with_one_write():
    protocol, transport = connect_logging_writes(streaming(0))
    protocol.data_received(GET)
    for _ in range(10):
        await asyncio.sleep(0)
    head_and_first, second = transport.writes
    assert head_and_first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked\r\n" in head_and_first
    assert head_and_first.endswith(b"\r\n\r\n5\r\nfirst\r\n")
    assert second == b"6\r\nsecond\r\n0\r\n\r\n"


@on_loop
async def test_a_slow_stream_sends_its_head_by_the_end_of_the_loop_turn():
    protocol, transport = connect_logging_writes(streaming(0.5))
    protocol.data_received(GET)
    for _ in range(10):  # far less than the half second the first chunk takes
        await asyncio.sleep(0)
    assert len(transport.writes) == 1 and transport.writes[0].endswith(b"transfer-encoding: chunked\r\n\r\n")
    for _ in range(100):
        if len(transport.writes) == 3:
            break
        await asyncio.sleep(0.05)
    assert transport.writes[1:] == [b"5\r\nfirst\r\n", b"6\r\nsecond\r\n0\r\n\r\n"]


@on_loop
async def test_an_app_that_fails_after_starting_a_stream_has_its_head_sent_before_the_close():
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("boom")

    protocol, transport = connect_logging_writes(failing)
    logging.getLogger("uvicorn.error").disabled = True
    try:
        protocol.data_received(GET)
        for _ in range(10):
            await asyncio.sleep(0)
    finally:
        logging.getLogger("uvicorn.error").disabled = False
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and transport.closed


@on_loop
async def test_a_request_sent_late_into_a_drain_is_answered_whole_not_cut_by_the_idle_close():
    # The drain arms the idle close on a quiet connection; a request that arrives before it fires
    # and takes longer than what is left of it must still be answered in full.
    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.3)
        await hello(scope, receive, send)

    settings = uvicorn.Config(slow, log_config=None, lifespan="off", timeout_keep_alive=0.2)
    protocol = http_protocol_class("fast")(settings, ServerState(), {})
    transport = Transport()
    protocol.connection_made(transport)
    protocol.shutdown()  # a quiet connection: closed after the keep-alive timeout unless...
    await asyncio.sleep(0.1)
    protocol.data_received(GET)  # ...a request comes first
    for _ in range(100):
        if transport.closed:
            break
        await asyncio.sleep(0.05)
    assert transport.written.startswith(b"HTTP/1.1 200 OK\r\n"), transport.written
    assert transport.written.endswith(b"hello") and b"connection: close\r\n" in transport.written
    assert transport.closed


# Held responses (LingeringTransport.hold): a slow app's whole response waits for the end of the
# loop's turn, then goes out with the turn's others; nothing the connection writes or closes in
# between may overtake it.


@pytest.fixture(autouse=True)
def hold_after(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Which apps count as slow, made certain: a first call may take longer than the real threshold.

    The tests of held responses (their app is ``slow_hello`` or ``echo_path``) hold every response;
    the rest of this file holds none, as it expects each write at once.
    """
    holding = "held" in request.node.name or "slow" in request.node.name
    monkeypatch.setattr(fast_cycle, "HOLD_AFTER", 0.0 if holding else 3600.0)


slow_hello = hello


RESPONSE_END = b"\r\n\r\nhello"


async def one_turn() -> None:
    await asyncio.sleep(0)


@on_loop
async def test_a_fast_apps_response_is_written_at_once():
    protocol, transport = connect(hello)  # HOLD_AFTER is an hour here
    protocol.data_received(GET)
    await one_turn()
    assert transport.written.endswith(RESPONSE_END)


@on_loop
async def test_slow_apps_responses_are_held_to_the_end_of_the_turn_then_written_together():
    pairs = [connect(slow_hello) for _ in range(3)]
    for protocol, _ in pairs:
        protocol.data_received(GET)
    await one_turn()  # every app ran and answered
    assert [transport.written for _, transport in pairs] == [b"", b"", b""]
    assert all(protocol.cycle.response_complete for protocol, _ in pairs)
    await one_turn()
    assert all(transport.written.endswith(RESPONSE_END) for _, transport in pairs)
    assert all(transport.written.count(b"HTTP/1.1 200") == 1 for _, transport in pairs)


@on_loop
async def test_a_refusal_after_a_held_response_goes_out_after_it():
    protocol, transport = connect(slow_hello)
    protocol.data_received(GET)
    await one_turn()
    assert transport.written == b""
    protocol.data_received(b"GARBAGE / HTTP/1.1\r\n\r\n")  # refused at once, in this read
    assert transport.written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"hello" in transport.written and transport.written.index(b"hello") < transport.written.index(
        b"400"
    )
    assert transport.closed


@on_loop
async def test_a_close_after_a_held_response_writes_it_first():
    protocol, transport = connect(slow_hello)
    protocol.data_received(GET)
    await one_turn()
    assert transport.written == b""
    protocol.shutdown()  # idle now: closed at once, through the wrapper
    assert transport.written.endswith(RESPONSE_END) and transport.closed
    await one_turn()
    assert transport.written.count(b"HTTP/1.1 200") == 1  # the end of the turn writes nothing again


@on_loop
async def test_a_held_response_whose_peer_went_is_dropped_quietly():
    protocol, transport = connect(slow_hello)
    protocol.data_received(GET)
    await one_turn()
    transport.closed = True  # the peer reset the connection meanwhile
    await one_turn()
    assert transport.written == b""


@on_loop
async def test_a_held_response_goes_out_before_the_websocket_upgrade_that_follows_it():
    WebSocketStandIn.made.clear()
    protocol, transport = connect(slow_hello, ws=WebSocketStandIn)
    protocol.data_received(GET)
    await one_turn()
    protocol.data_received(UPGRADE)
    (ws,) = WebSocketStandIn.made
    assert transport.written.endswith(RESPONSE_END) and ws.transport is transport
    await one_turn()
    assert transport.written.count(b"HTTP/1.1 200") == 1


@on_loop
async def test_pipelined_requests_held_one_by_one_are_answered_in_order():
    async def echo_path(scope: Any, receive: Any, send: Any) -> None:
        body = scope["path"].encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})

    protocol, transport = connect(echo_path)
    paths = [f"/{n}" for n in range(6)]
    protocol.data_received(b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths))
    for _ in range(40):
        if transport.written.count(b"HTTP/1.1 200") == len(paths) and transport.written.endswith(b"/5"):
            break
        await one_turn()
    bodies = [chunk.split(b"\r\n\r\n", 1)[1] for chunk in transport.written.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert bodies == [p.encode() for p in paths]


def test_a_second_hold_in_one_turn_writes_the_first_before_holding_the_second():
    transport = Transport()
    wrapper = LingeringTransport(transport, asyncio.new_event_loop())
    try:
        wrapper.hold(b"first")
        wrapper.hold(b"second")
        assert transport.written == b"first"
        release_held(wrapper._loop)
        assert transport.written == b"firstsecond"
    finally:
        wrapper._loop.close()
