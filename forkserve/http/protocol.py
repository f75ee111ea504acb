"""uvicorn's HTTP/1.1 protocols, taught to drain without dropping a request.

uvicorn's ``shutdown()`` closes every idle keep-alive connection at once. A client may have
written its next request onto that connection a microsecond earlier; the close then resets it,
and a proxy shows a 502. A draining forkserve worker instead:

* finishes every request in flight, answering it with ``Connection: close``;
* answers every *further* request that arrives on a kept-alive connection, also with
  ``Connection: close``, so the client learns to reconnect (to a worker that is not leaving);
* closes a connection that stays idle only after the keep-alive timeout, and only if no request
  bytes are waiting in its socket (checked with FIONREAD just before the close), so a request
  cannot be racing in when it closes;
* closes in order, always (not only while draining): FIN after the last response, then whatever
  the client still sends is read and dropped until it closes its side (or ``LINGER`` seconds
  pass). Closing a socket with unread input makes the kernel send RST, which can destroy the
  response the client has not read yet, and which a proxy reports as a 502.

Two limits against hostile or broken clients, which uvicorn lacks on the httptools path:

* ``--header-timeout``: a request's head (request line and headers) must arrive within this many
  seconds of its first byte (or of the connection's start). Checked by the worker's once-a-second
  sweep (``header_overdue``), not a timer per request, so the fast path pays two attribute stores.
  A slowloris client trickling one byte at a time is closed; so is a connection that never speaks.
* ``--max-header-size``: a head that grows past this many bytes gets 431 and a close, before the
  parser has buffered it all.

Both hold for every head on a connection, also one that arrives while an earlier request is still
being answered (its app running, or its response unread): a read that starts once the earlier
request's message is complete counts toward the next head. (The rest of the read that completed it
does not, so a head can overshoot by at most one read, 256 KiB.) Such a head is refused without
cutting off the answer in flight: reading stops, nothing more reaches the parser, and the 431 (or,
for a late head, the close) follows the last response already owed (``refuse_head``).
* ``--max-header-count`` (431) and ``--limit-max-request-size`` (413), checked once per request at
  the moment uvicorn picks the ASGI app to run it (``app`` below is a property for that reason):
  the head is parsed, no body byte has reached the app. A Content-Length over the limit is refused
  at once; a chunked body gets a per-request wrapper that counts it as it streams. Both answers
  carry ``Connection: close``, and the unread body is read and dropped by the lingering close, so
  the client sees the answer rather than a reset, and the worker goes on serving.

With ``--access-log``, a request's line is written when its response has been sent, and says how
long that took: uvicorn logs at the response's start and has no latency, so each connection gets an
``AccessLine`` that stands in for uvicorn's access logger, keeps the facts uvicorn hands it, and
writes them with the time from the request's head to the response's end.

uvicorn's server waits for the connections to go, up to ``--graceful-timeout``. The classes below
are uvicorn's own with this one behaviour changed, so everything else (websocket upgrades, TLS,
flow control) is uvicorn's. ``--http fast`` (the default) is forkserve's own class, in
forkserve/http/fast.py: it takes this mixin too, but does the per-read work of ``data_received``
(the head limits) inline, so a check added to the mixin's ``data_received`` must be added there
as well.
"""

from __future__ import annotations

import array
import fcntl
import logging
import termios
import time
from collections.abc import Callable
from typing import Any

import h11

from forkserve.http.uvicorn_api import (
    HAS_HTTPTOOLS,
    Config,
    H11Protocol,
    ProxyHeadersMiddleware,
)

DRAIN_IDLE_CHECK = 0.1
LINGER = 2.0
HEAD_END = b"\r\n\r\n"
_HEADERS_TOO_MANY = b"Too many request header fields\n"
_BODY_TOO_LARGE = b"Request body too large\n"
_LINE_TOO_LONG = b"Request line too long\n"


async def _reject(send: Any, status: int, body: bytes) -> None:
    headers = [
        (b"content-type", b"text/plain"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def too_many_headers(scope: Any, receive: Any, send: Any) -> None:
    await _reject(send, 431, _HEADERS_TOO_MANY)


async def body_too_large(scope: Any, receive: Any, send: Any) -> None:
    await _reject(send, 413, _BODY_TOO_LARGE)


async def service_unavailable(scope: Any, receive: Any, send: Any) -> None:
    """The answer past --limit-concurrency, as uvicorn gives it."""
    body = b"Service Unavailable"
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def line_too_long(scope: Any, receive: Any, send: Any) -> None:
    await _reject(send, 414, _LINE_TOO_LONG)


def request_line_length(scope: Any) -> int:
    """The length of the request line a scope was parsed from: method, target and version."""
    target = len(scope["raw_path"]) - len(scope["root_path"].encode())
    query = scope["query_string"]
    if query:
        target += 1 + len(query)
    return len(scope["method"]) + target + len("  HTTP/1.1")


class BodyLimit:
    """One chunked request: count its body as the app reads it; past the limit, stop it.

    Before the app has started its response the client gets 413; after, there is no way to say so
    in HTTP/1.1, so the connection is closed. Either way the app is told the client disconnected,
    and whatever it sends afterwards is dropped.
    """

    def __init__(self, app: Any, limit: int, close: Any) -> None:
        self.app = app
        self.limit = limit
        self.close = close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        received = 0
        started = over = False

        async def counting_receive() -> Any:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    over = True
                    if started:
                        self.close()
                    else:
                        await _reject(send, 413, _BODY_TOO_LARGE)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal started
            if over:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, guarded_send)


HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
    b"content-length: 32\r\nconnection: close\r\n\r\nRequest header fields too large\n"
)


def refuse_head(protocol: Any, answer: bytes) -> None:
    """A request head broke a limit: send ``answer`` (431, or nothing for a late head) and close.

    If a response is still owed on the connection it goes out first: ``protocol.refusal`` holds the
    answer until ``on_response_complete`` finds nothing more owed (see the module docstring).
    """
    protocol.header_deadline = None
    cycle = protocol.cycle
    if cycle is None or cycle.response_complete:
        protocol.transport.write(answer)
        protocol.transport.close()
    elif protocol.refusal is None:
        protocol.refusal = answer
        protocol.flow.pause_reading()


def refuse_framing(protocol: Any) -> None:
    """A chunked body's framing outgrew --max-header-size: 431 if nothing was answered yet, and close.

    The framing is what the parser buffers or skips between body bytes: chunk-size lines with
    their extensions, and the trailer section. The app is told the client disconnected.
    """
    cycle = protocol.cycle
    if not cycle.response_started and not getattr(protocol, "pipeline", None):
        protocol.transport.write(HEAD_TOO_LARGE)
    protocol.transport.close()
    if not cycle.response_complete:
        cycle.disconnected = True
        wake = getattr(cycle, "wake", None)  # forkserve's fast cycle; uvicorn's has an event
        if wake is not None:
            wake()
        else:
            cycle.message_event.set()


def send_refusal(protocol: Any) -> bool:
    """Called as a response completes: send a refused head's answer once no response is owed."""
    if protocol.refusal is None or getattr(protocol, "pipeline", None) or protocol.transport.is_closing():
        return False
    protocol.transport.write(protocol.refusal)
    protocol.transport.close()
    return True


def _discard(*_data: Any) -> None:
    pass


class LingeringTransport:
    """A transport whose close() is a half-close (FIN) followed by reading until the peer's FIN.

    Everything but close() and is_closing() goes straight to the real transport; ``write`` is bound
    once so the per-response path pays no extra lookup. An HTTP protocol's wrapper only: a
    WebSocket protocol it upgrades to gets ``inner`` (``upgraded_transport``).
    """

    held: bytes | None = None  # a whole response, written at the end of this turn (hold())

    def __init__(self, transport: Any, loop: Any) -> None:
        self._transport = self.inner = transport
        self._loop = loop
        self.lingering = False
        self.write = transport.write
        self.get_extra_info = transport.get_extra_info

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or bool(self._transport.is_closing())

    def hold(self, data: bytes) -> None:
        """Write DATA, a whole response, with the others held in this turn of the loop, together.

        A worker answering a slow app (FastAPI: ~60 µs a request) wrote each response as its app
        finished, so each write woke the client anew; held, the turn's responses go out back to back
        in the next turn, before any new request runs (docs/design.md, "Held responses"). Anything
        else this connection writes or closes in between releases it first, so bytes never reorder.
        """
        if self.held is not None:
            self.release()  # one held at a time: an earlier one goes out first, never overwritten
        self.held = data
        self.write = self._write_after_held
        batch = _HELD.get(self._loop)
        if batch is None:
            batch = _HELD[self._loop] = []
            self._loop.call_soon(release_held, self._loop)
        batch.append(self)

    def release(self) -> None:
        data = self.held
        if data is None:
            return
        self.held = None
        if self.lingering:
            return  # the wrapper's close() released it first; nothing is written after that
        self.write = self._transport.write
        if not self._transport.is_closing():  # the peer went: the response has no one to read it
            self._transport.write(data)

    def _write_after_held(self, data: bytes) -> None:
        self.release()
        self.write(data)

    def writelines(self, chunks: Any) -> None:
        if self.lingering:
            return  # dropped, as write() is once the connection lingers
        self.release()
        self._transport.writelines(chunks)

    def write_eof(self) -> None:
        self.release()
        self._transport.write_eof()

    def close(self) -> None:
        self.release()
        if self.lingering or self._transport.is_closing():
            return
        can_write_eof = getattr(self._transport, "can_write_eof", None)
        if can_write_eof is None or not can_write_eof() or self._transport.get_extra_info("sslcontext"):
            self._transport.close()
            return
        self.lingering = True
        # Like a closing asyncio transport: later writes (an app still answering a request on a
        # connection the parser gave up on) are dropped, not an error that logs a traceback.
        self.write = _discard
        self._transport.write_eof()
        self._transport.resume_reading()
        self._loop.call_later(LINGER, self._transport.close)

    def abort_linger(self) -> None:
        self._transport.close()


# Per loop, the connections holding a response for the end of this turn (a worker has one loop;
# tests may run several).
_HELD: dict[Any, list[LingeringTransport]] = {}


def release_held(loop: Any) -> None:
    for transport in _HELD.pop(loop, ()):
        transport.release()


def upgraded_transport(transport: Any) -> Any:
    """The transport to hand a WebSocket protocol on upgrade: the real one, not the lingering wrapper.

    uvicorn's WebSocket protocols pause and resume reading once per message (websockets-sansio),
    which through the wrapper's ``__getattr__`` cost two Python calls per message (2% of a worker's
    time echoing small messages, measured with py-spy). Nor does a WebSocket need the lingering
    close: its closing handshake has the client stop sending before the server closes, which is
    also what uvicorn's own HTTP protocols hand over.
    """
    if isinstance(transport, LingeringTransport):
        transport.release()  # the response before the upgrade goes out before the 101
        return transport.inner
    return transport


class AccessLine:
    """uvicorn's access logger, as far as one connection's requests see it."""

    __slots__ = ("args", "logger", "started")

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.started = 0.0
        self.args: tuple[Any, ...] | None = None

    def info(self, _format: str, *args: Any) -> None:
        # Called by uvicorn as the response starts: client, method, path, HTTP version, status.
        self.args = args

    def write(self, now: float, complete: bool = True) -> None:
        args, self.args = self.args, None
        if args is None or len(args) != 5:
            return
        client, method, path, version, status = args
        ms = (now - self.started) * 1000
        self.logger.info(
            '%s - "%s %s HTTP/%s" %d %.2fms%s', client, method, path, version, status, ms,
            "" if complete else " (client gone before the response ended)",
            extra={"fields": {
                "client": client, "method": method, "path": path, "http_version": version,
                "status": status, "latency_ms": round(ms, 3), "complete": complete,
            }},
        )  # fmt: skip


def _pending_bytes(transport: Any) -> int:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    buffer = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buffer, True)
    except OSError:
        return 0
    return int(buffer[0])


class DrainingMixin:
    """Mixed in before a uvicorn protocol class; see the module docstring."""

    draining = False
    # Set per worker by configure(); class attributes so the per-request path reads no config.
    header_timeout = 10.0
    max_header_size = 64 * 1024
    # Loop time by which the head of the request being received must be complete; None while no
    # request is part-way in.
    header_deadline: float | None = None
    header_bytes = 0
    # The answer to a refused head, held while an earlier response is still owed (refuse_head).
    refusal: bytes | None = None
    max_header_count = 100
    max_request_size = 0  # 0: no limit
    max_request_line = 0  # 0: no limit (but the head's)
    _app: Any = None
    # Provided by the uvicorn protocol this is mixed into.
    access_line: AccessLine | None = None
    # Provided by the uvicorn protocol this is mixed into.
    scope: Any
    access_log: bool
    access_logger: Any
    cycle: Any
    transport: Any
    loop: Any
    timeout_keep_alive: int
    timeout_keep_alive_task: Any

    @property
    def app(self) -> Any:
        """The ASGI app for the request whose head was just parsed (uvicorn reads it once per request)."""
        return self.limited_app()

    @app.setter
    def app(self, app: Any) -> None:
        self._app = app

    def limited_app(self) -> Any:
        """The app, or the refusal the request's head has earned under the per-request limits."""
        scope = self.scope
        if self.max_request_line and request_line_length(scope) > self.max_request_line:
            return line_too_long
        headers = scope["headers"]
        if len(headers) > self.max_header_count:
            return too_many_headers
        limit = self.max_request_size
        if limit:
            for name, value in headers:
                if name == b"content-length":
                    try:
                        return body_too_large if int(value) > limit else self._app
                    except ValueError:
                        return self._app  # the parser has refused it already
                if name == b"transfer-encoding" and b"chunked" in value.lower():
                    return BodyLimit(self._app, limit, self.transport.close)
        return self._app

    def handle_websocket_upgrade(self, *event: Any) -> None:
        # uvicorn's upgrade hands its WebSocket protocol self.transport: make that the real one
        # (upgraded_transport). The HTTP protocol is done with the connection once it returns.
        self.transport = upgraded_transport(self.transport)
        super().handle_websocket_upgrade(*event)  # type: ignore[misc]

    def connection_made(self, transport: Any) -> None:
        super().connection_made(LingeringTransport(transport, self.loop))  # type: ignore[misc]
        self.header_deadline = time.monotonic() + self.header_timeout
        if self.access_log:
            # Each request cycle takes the protocol's access logger when it is created.
            self.access_line = self.access_logger = AccessLine(self.access_logger)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.access_line is not None and self.access_line.args is not None:
            self.access_line.write(time.perf_counter(), complete=False)
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        if self.access_line is not None:
            self.access_line.write(time.perf_counter())
        send_refusal(self)
        super().on_response_complete()  # type: ignore[misc]

    def header_overdue(self, now: float) -> bool:
        """Called by the worker's sweep: close the connection if its request head is late."""
        if self.header_deadline is None or now < self.header_deadline or self.transport.is_closing():
            return False
        refuse_head(self, b"")
        return True

    def eof_received(self) -> None:
        # The peer closed its side: with ours already closed (lingering), the connection is done.
        if isinstance(self.transport, LingeringTransport) and self.transport.lingering:
            self.transport.abort_linger()
            return
        super().eof_received()  # type: ignore[misc]

    def shutdown(self) -> None:
        self.draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            # Once its head is out without "Connection: close", closing after it would drop the
            # request the client may already be sending on the connection (a WSGI app's head and
            # body cross threads, so this happens there): serve that one, with Connection: close.
            if not self.cycle.response_started:
                self.cycle.keep_alive = False
            return
        # Idle (or not yet sent a request): keep it open for a request that may be on its way;
        # the idle timer closes it if none comes.
        if self.timeout_keep_alive_task is None:
            self.arm_idle_close(self.timeout_keep_alive)

    def arm_idle_close(self, delay: float) -> None:
        """Close this idle connection after DELAY seconds, unless a request comes first.

        uvicorn's classes cancel the timer when a request's bytes arrive; the fast class, which
        keeps one timer per idle period, has its own (``FastHttpToolsProtocol.arm_idle_close``).
        """
        self.timeout_keep_alive_task = self.loop.call_later(delay, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        if isinstance(self.transport, LingeringTransport) and self.transport.lingering:
            return  # read and dropped: the response that closed this connection has been sent
        cycle = self.cycle
        if not self.reading_body():
            # The last request's message is complete: these bytes begin (or continue) the next head.
            if self.refusal is not None:
                return  # that head was refused; the answer waits for the response in flight
            if self.header_deadline is None:
                self.header_deadline = time.monotonic() + self.header_timeout
                self.header_bytes = 0
            end = data.find(HEAD_END)
            # Only the head counts: a body may follow it in the same read.
            self.header_bytes += len(data) if end < 0 else end + len(HEAD_END)
            if self.header_bytes > self.max_header_size:
                refuse_head(self, HEAD_TOO_LARGE)
                return
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not cycle:
            self.header_deadline = None  # a new request's head is complete
            if self.access_line is not None:
                # perf_counter: uvloop's loop.time() moves in whole milliseconds.
                self.access_line.started = time.perf_counter()
        if self.draining and self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False

    def reading_body(self) -> bool:
        """Whether the parser is inside a request's body (so a read is not the next head).

        Not "the response is incomplete": an app may answer before it has read the body, and the
        rest of the body is still the request's. uvicorn's zttp class clears ``more_body`` when
        the message ends, answered or not; the h11 and httptools classes override this.
        """
        cycle = self.cycle
        return cycle is not None and bool(cycle.more_body)

    def timeout_keep_alive_handler(self) -> None:
        if self.transport.is_closing():
            return
        if _pending_bytes(self.transport) > 0:
            # A request arrived as the timer fired: serve it (data_received runs next) instead.
            self.arm_idle_close(DRAIN_IDLE_CHECK)
            return
        super().timeout_keep_alive_handler()  # type: ignore[misc]


class DrainingH11Protocol(DrainingMixin, H11Protocol):
    def reading_body(self) -> bool:
        # uvicorn leaves more_body set when the body ends after the response: h11's state knows.
        return self.conn.their_state is h11.SEND_BODY


DrainingHttpToolsProtocol: type[Any] | None
if not HAS_HTTPTOOLS:  # httptools is optional (PyPy, unusual platforms): h11 serves instead
    DrainingHttpToolsProtocol = None
else:
    from forkserve.http.uvicorn_api import HttpToolsProtocol

    class _DrainingHttpTools(DrainingMixin, HttpToolsProtocol):
        # llhttp reports a chunked body's trailer fields through on_header, after the head;
        # uvicorn appends them to the list the app already holds as scope["headers"] (and its
        # proxy-headers middleware may read them). A trailer is never a header: dropped.
        in_trailers = False
        in_head = False
        in_body = False
        # Bytes read since the last body byte, while in a body: chunk-size lines with their
        # extensions, and the trailer section, which llhttp hands over only once a field is
        # complete (httptools buffers it until then). Bounded by --max-header-size.
        framing = 0

        def reading_body(self) -> bool:
            return self.in_body

        def data_received(self, data: bytes) -> None:
            if self.in_body:
                self.framing += len(data)
            super().data_received(data)
            if self.in_body and self.framing > self.max_header_size and not self.transport.is_closing():
                refuse_framing(self)
            if self.in_head and self.header_deadline is None and not self.transport.is_closing():
                # The read that ended one message began the next head: its clock starts now,
                # even if no further read comes.
                self.header_deadline = time.monotonic() + self.header_timeout

        def on_message_begin(self) -> None:
            self.in_trailers = False
            self.in_head = True
            super().on_message_begin()

        def on_header(self, name: bytes, value: bytes) -> None:
            if self.in_trailers:
                return
            # llhttp keeps trailing whitespace, which RFC 9110 section 5.5 excludes from the
            # value; uvicorn strips it only from 0.55 on.
            super().on_header(name, value.rstrip(b" \t"))

        def on_headers_complete(self) -> None:
            self.in_trailers = self.in_body = True
            self.in_head = False
            self.framing = 0
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            self.framing = 0
            super().on_body(body)

        def on_message_complete(self) -> None:
            self.in_body = False
            super().on_message_complete()

    DrainingHttpToolsProtocol = _DrainingHttpTools


def wrap_app(config: Config, wrap: Callable[[Any], Any]) -> None:
    """Wrap the loaded app, inside uvicorn's proxy-headers layer when there is one.

    The fast protocol takes that layer's place only when it is the outermost one; a forkserve
    wrapper (the health check) put outside it would bring it back on every request.
    """
    app = config.loaded_app
    if isinstance(app, ProxyHeadersMiddleware):
        app.app = wrap(app.app)
    else:
        config.loaded_app = wrap(app)
