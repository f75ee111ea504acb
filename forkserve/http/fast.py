"""forkserve's fast HTTP/1.1 protocol (``--http fast``): uvicorn's httptools protocol, less Python.

Theory of operation. Parsing is not where a worker's time goes: httptools parses a request in
about a microsecond. The time goes to the Python around the ASGI call (docs/design.md has the
profile). This class behaves as uvicorn's ``HttpToolsProtocol`` (whose test suite it passes,
tests/protocol) but is forkserve's own ``asyncio.Protocol``: it owns every method it runs, so a
uvicorn release that reshapes its class cannot break it; it relies only on what
``forkserve.http.uvicorn_api`` lists. It does once per connection (or once per second) what
uvicorn does once per request:

* The scope is a copy of a per-connection template (type, asgi, server, client, scheme,
  root_path) plus the six per-request keys; the path is split with ``bytes.partition`` unless the
  target is unusual (absolute form, ``*``, a fragment), where ``httptools.parse_url`` decides.
* No ``on_message_begin`` callback: the per-request state is reset when a head completes, which
  saves a C-to-Python call per request.
* Proxy headers are handled here instead of by uvicorn's ``ProxyHeadersMiddleware`` wrapping the
  app: whether the peer is a trusted proxy is decided once per connection, and the headers are
  only looked at for trusted peers. (WebSocket upgrades still go through the middleware.)
* Response header names and short values are checked against uvicorn's expressions once per
  worker (then found in a set), and the ``date``/``server`` lines are joined once per second.
* A head with a content-length is written together with the first body chunk: one ``send`` per
  small response instead of two (the ASGI spec lets a server hold the head until the first body
  event). A stream's head (no length) is held to the end of the loop's turn, so a first chunk sent
  at once joins it (fast_cycle).
* One keep-alive timer per idle period instead of one armed and cancelled per request
  (``_keep_alive_due``).
* ``receive()`` makes an ``asyncio.Event`` only when the app has to wait for body bytes; a task
  removes itself from the server's task set when it finishes instead of through a done-callback.

Rejected: eager tasks (3.12's ``eager_start``: fewer instructions, but more CPU per request in a
real worker), eager start by hand on 3.10/3.11 (the app's first step would see a different
current task than the rest, which anyio's cancel scopes notice) and a task per connection
(context variables would leak from one request to the next). docs/design.md has the
measurements.

Where a setting needs per-request work it is paid only when set: ``--limit-concurrency``,
access logging, trusted proxies, ``root_path``. A further per-request limit (a header count, a
body size) belongs in ``on_header`` / ``on_body`` next to the checks already there.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
import time
import urllib.parse
from collections import deque
from typing import Any

import httptools

from forkserve.http.fast_cycle import FastCycle
from forkserve.http.fast_plan import METHODS, STATUS_LINE, plan_for
from forkserve.http.flow import HIGH_WATER_LIMIT, FlowControl
from forkserve.http.protocol import (
    HEAD_END,
    HEAD_TOO_LARGE,
    AccessLine,
    DrainingMixin,
    LingeringTransport,
    refuse_framing,
    refuse_head,
    send_refusal,
    service_unavailable,
    upgraded_transport,
)
from forkserve.http.uvicorn_api import TRACE_LOG_LEVEL, Config, ServerState

NO_WEBSOCKETS = (
    "No supported WebSocket library detected. Please use \"pip install 'uvicorn[standard]'\", "
    "or install 'websockets' or 'wsproto' manually."
)


def websocket_requested(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a head asks to upgrade to WebSocket: ``Connection: upgrade``, ``Upgrade: websocket``.

    The last of each field counts, and ``Connection`` is a token list, as in uvicorn.
    """
    connection: list[bytes] = []
    upgrade = None
    for name, value in headers:
        if name == b"connection":
            connection = [token.lower().strip() for token in value.split(b",")]
        elif name == b"upgrade":
            upgrade = value.lower()
    return upgrade == b"websocket" and b"upgrade" in connection


def _address(transport: Any, sockname: bool) -> tuple[str, int | None] | None:
    """The connection's local or peer address as uvicorn puts it in the scope (host, port)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            info = sock.getsockname() if sockname else sock.getpeername()
        except OSError:  # uvloop, on a Unix socket whose peer is gone
            return None
    else:
        info = transport.get_extra_info("sockname" if sockname else "peername")
    if isinstance(info, (list, tuple)) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    if isinstance(info, str) and sockname:
        return (info, None)  # a Unix socket's path
    return None


class FastHttpToolsProtocol(asyncio.Protocol):
    """forkserve's HTTP/1.1 protocol on httptools (module docstring).

    Owns everything it does: parsing callbacks, scope, limits, keep-alive timer, 400s, the hand-off
    to a WebSocket protocol, shutdown, flow control. From uvicorn it takes only its public surface:
    the ``Config`` (settings, the loaded app, the WebSocket protocol class), the server's
    ``ServerState`` (connections, tasks, default headers), and uvicorn's WebSocket protocol
    classes, which take the upgraded connection over. Also carries forkserve's per-connection
    limits (``--max-header-size``, ``--header-timeout``) inline, since a mixin wrapping
    ``data_received`` would cost a call per read.
    """

    # httptools skips a callback the protocol does not have: no on_message_begin per request.
    # Class attributes set per worker (see forkserve.http.choice.http_protocol_class).
    header_timeout = 10.0
    max_header_size = 64 * 1024
    draining = False
    header_deadline: float | None = None
    header_bytes = 0
    refusal: bytes | None = None  # see forkserve.http.protocol.refuse_head
    framing = 0  # bytes read in a body since its last body byte (refuse_framing)
    # When the last response ended with no request after it (None while one is under way), and
    # the value the pending keep-alive timer was armed for (_keep_alive_due).
    idle_since: float | None = None
    keep_alive_armed_for: float | None = None
    # The drain's per-request limits (forkserve.http.protocol.DrainingMixin.limited_app), checked
    # only when one could refuse the request: a count over max_header_count, or request_limits set
    # (a request-line or body limit, see forkserve.http.choice).
    max_header_count = sys.maxsize
    request_limits = False
    access_line: AccessLine | None = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        plan = plan_for(config)
        self.plan = plan
        self.config = config
        self.app: Any = plan.app
        # What serves a request that no limit refuses; ``app`` may be the drain's property.
        self.asgi_app: Any = plan.app
        self.loop = _loop or asyncio.get_event_loop()
        # A stream's head is held to the end of the loop's turn only on a loop that has turns
        # (uvicorn's protocol tests drive the class with a stand-in that has no call_soon).
        self.real_loop = isinstance(self.loop, asyncio.AbstractEventLoop)
        self.logger = plan.logger
        self.access_logger: Any = plan.access_logger
        self.access_log = plan.access_log
        self.parser: Any = httptools.HttpRequestParser(self)
        # As uvicorn: answer the first of pipelined requests sent after "Connection: close".
        with contextlib.suppress(AttributeError):  # httptools < 0.6.3 has no leniencies
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.ws_protocol_class: Any = config.ws_protocol_class
        self.root_path = plan.root_path
        self.limit_concurrency = config.limit_concurrency
        self.app_state = app_state
        self.timeout_keep_alive_task: asyncio.TimerHandle | None = None
        self.timeout_keep_alive = config.timeout_keep_alive
        self.server_state = server_state
        self.connections: set[Any] = server_state.connections
        self.tasks = server_state.tasks
        self.transport: Any = None
        self.raw_transport: Any = None  # the loop's, under the LingeringTransport
        self.flow: Any = None
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int | None] | None = None
        self.scheme = "http"
        self.pipeline: deque[tuple[Any, Any]] = deque()
        self.scope: Any = None
        # The head being parsed; None from a head's end to its message's end (a trailer then is
        # not a header: on_header drops it).
        self.headers: Any = []
        self.url = b""
        self.expect_100_continue = False
        self.cycle: Any = None
        self.upgrading = False
        self.proxy_trusted = False
        self.template: dict[str, Any] = {}

    def _trace(self, what: str) -> None:
        prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
        self.logger.log(TRACE_LOG_LEVEL, "%s%s", prefix, what)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        lingering = LingeringTransport(transport, self.loop)
        self.raw_transport = transport
        self.connections.add(self)
        self.transport = lingering
        self.flow = FlowControl(lingering)
        self.server = _address(transport, sockname=True)
        client = _address(transport, sockname=False)
        self.client = client
        self.scheme = "https" if transport.get_extra_info("sslcontext") else "http"
        if self.logger.level <= TRACE_LOG_LEVEL:
            self._trace("HTTP connection made")
        self.header_deadline = time.monotonic() + self.header_timeout
        self.template = {
            "type": "http",
            "asgi": self.plan.asgi,
            "http_version": "1.1",
            "server": self.server,
            "client": client,
            "scheme": self.scheme,
            "root_path": self.root_path,
        }
        trusted = self.plan.trusted
        if trusted is not None:
            self.proxy_trusted = (client[0] if client else None) in trusted

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        if self.logger.level <= TRACE_LOG_LEVEL:
            self._trace("HTTP connection lost")
        cycle: Any = self.cycle
        if cycle is not None:
            if not cycle.response_complete:
                cycle.disconnected = True
            cycle.wake()
        if self.flow is not None:
            self.flow.resume_writing()
        if exc is None:
            self.transport.close()
            self._cancel_keep_alive()
        self.parser = None

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself; a half-closed client gets its responses first

    def pause_writing(self) -> None:
        self.flow.pause_writing()

    def resume_writing(self) -> None:
        self.flow.resume_writing()

    def _cancel_keep_alive(self) -> None:
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def shutdown(self) -> None:
        """The server is stopping: close now if idle, else after the response in flight."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.transport.close()
        else:
            cycle.keep_alive = False

    def send_400_response(self, msg: str) -> None:
        content = [STATUS_LINE[400]]
        for name, value in self.server_state.default_headers:
            content += (name, b": ", value, b"\r\n")
        body = msg.encode("ascii")
        content += (
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        )
        self.transport.write(b"".join(content))
        self.transport.close()

    def handle_websocket_upgrade(self) -> None:
        """Hand the connection to uvicorn's WebSocket protocol, replaying the request's head to it."""
        if self.logger.level <= TRACE_LOG_LEVEL:
            self._trace("Upgrading to WebSocket")
        self.connections.discard(self)
        output = [self.scope["method"].encode(), b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.scope["headers"]:
            output += (name, b": ", value, b"\r\n")
        output.append(b"\r\n")
        protocol = self.ws_protocol_class(
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        transport = upgraded_transport(self.transport)
        protocol.connection_made(transport)
        transport.set_protocol(protocol)
        protocol.data_received(b"".join(output))

    def _unsupported_upgrade_warning(self) -> None:
        self.logger.warning("Unsupported upgrade request.")
        if self.ws_protocol_class is None:
            self.logger.warning(NO_WEBSOCKETS)

    def data_received(self, data: bytes) -> None:
        transport: Any = self.transport
        if transport.lingering:
            return  # read and dropped: the response that closed this connection has been sent
        # Busy: a keep-alive timer that fires now finds this and leaves the connection open.
        self.idle_since = None
        if self.headers is not None:
            # The parser is between messages or in a head (the list is closed from a head's end to
            # its message's end), whether or not an earlier request is still being answered:
            # these bytes begin (or continue) the next head.
            if self.refusal is not None:
                return  # that head was refused; the answer waits for the response in flight
            if self.header_deadline is None:
                self.header_deadline = time.monotonic() + self.header_timeout
                self.header_bytes = 0
            total = self.header_bytes + len(data)
            if total > self.max_header_size:
                # Only the head counts: a body may follow it in the same read.
                end = data.find(HEAD_END)
                if end < 0 or self.header_bytes + end + len(HEAD_END) > self.max_header_size:
                    refuse_head(self, HEAD_TOO_LARGE)
                    return
            self.header_bytes = total
        else:
            self.framing += len(data)  # on_body sets it back to 0
        try:
            self.parser.feed_data(data)
            if self.framing > self.max_header_size and self.headers is None:
                # Chunk-size lines and trailers with no body byte between: llhttp buffers a
                # trailer field until it is complete, so they are bounded like a head.
                refuse_framing(self)
                return
            if self.header_deadline is None and self.url:
                # The read that ended one message began the next head (its URL is under way):
                # that head's clock starts now, even if no further read comes.
                self.header_deadline = time.monotonic() + self.header_timeout
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade:
            if self.upgrading:
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    # Parser callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        if headers is None:
            # A trailer field of a chunked body: llhttp reports trailers through this same
            # callback after the body. Dropped, as uvicorn does; never the next request's header.
            return
        name = name.lower()
        # llhttp keeps trailing whitespace, which RFC 9110 section 5.5 excludes from the value.
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        scope = self.template.copy()
        method = parser.get_method()
        scope["method"] = METHODS.get(method) or method.decode("ascii")
        http_version = parser.get_http_version()
        if http_version != "1.1":
            scope["http_version"] = http_version
        headers = self.headers
        scope["headers"] = headers
        self.scope = scope
        if parser.should_upgrade() and self.ws_protocol_class is not None and websocket_requested(headers):
            self.upgrading = True  # handle_websocket_upgrade reads self.url and self.scope next
            return
        url = self.url
        # The next request's state: nothing before the next head's first callback reads it. The
        # header list is closed until this message completes, so trailers cannot reach it.
        self.url = b""
        self.headers = None
        self.header_deadline = None
        self.framing = 0
        expect_100_continue = self.expect_100_continue
        if expect_100_continue:
            self.expect_100_continue = False
        scope["state"] = self.app_state.copy()

        if url[:1] == b"/" and b"#" not in url:
            raw_path, _, query = url.partition(b"?")
        else:
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path, parsed.query or b""
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        if self.root_path:
            scope["path"] = self.root_path + path
            scope["raw_path"] = self.plan.root_path_bytes + raw_path
        else:
            scope["path"] = path
            scope["raw_path"] = raw_path
        scope["query_string"] = query
        if self.proxy_trusted:
            self._apply_proxy_headers(scope, headers)

        app = self.asgi_app
        if self.request_limits or len(headers) > self.max_header_count:
            app = self.limited_app()
        access_line = self.access_line
        if access_line is not None:
            access_line.started = time.perf_counter()
        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency or len(self.tasks) >= self.limit_concurrency
        ):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")

        keep_alive = http_version != "1.0" and parser.should_keep_alive() and not self.draining
        existing = self.cycle
        cycle: Any = FastCycle(self, scope, keep_alive, expect_100_continue)
        self.cycle = cycle
        if existing is None or existing.response_complete:
            self._start_asgi_task(cycle, app)
        else:
            # Pipelined: answered in order, once the current response is complete.
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))

    def limited_app(self) -> Any:
        """No limits here: the drain (DrainingMixin, first in DrainingFastProtocol) has them."""
        return self.asgi_app

    def _apply_proxy_headers(self, scope: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
        # What uvicorn's ProxyHeadersMiddleware does, for a peer already known to be trusted.
        proto: bytes | None = None
        forwarded_for: list[bytes] = []
        for name, value in headers:
            if name == b"x-forwarded-proto":
                proto = value
            elif name == b"x-forwarded-for":
                forwarded_for.append(value)
        if proto is not None:
            scheme = proto.decode("latin1").strip()
            if scheme in ("http", "https", "ws", "wss"):
                scope["scheme"] = scheme
        if forwarded_for:
            addresses = b", ".join(forwarded_for).decode("latin1")
            host, port = self.plan.trusted.get_trusted_client_address(addresses)
            if host:
                scope["client"] = (host, port)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if self.config.reset_contextvars:
            task = self.loop.create_task(cycle.run_asgi(app), context=contextvars.Context())
        else:
            task = self.loop.create_task(cycle.run_asgi(app))
        # run_asgi's finally takes the task out of the set: cheaper than a done-callback, which is
        # one more scheduled call per request. (A task cancelled before its first step skips that;
        # only uvicorn's shutdown cancels tasks, after the graceful timeout, and it does not wait
        # on the set again.)
        cycle.task = task
        self.tasks.add(task)

    def on_body(self, body: bytes) -> None:
        self.framing = 0
        cycle: Any = self.cycle
        if self.upgrading or cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        if self.upgrading:
            return  # the upgrade reads this request's headers next
        self.headers = []
        cycle: Any = self.cycle
        if cycle.response_complete:
            return
        cycle.more_body = False
        cycle.ready = True  # cycle.wake(), inline: once per request
        if cycle.event is not None:
            cycle.event.set()

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        access_line = self.access_line
        if access_line is not None:
            access_line.write(time.perf_counter())
        transport = self.transport
        if (
            transport.lingering
            or self.raw_transport.is_closing()
            or (self.refusal is not None and send_refusal(self))
        ):
            return
        flow = self.flow
        if flow.read_paused:
            flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        idle = self.idle_since = time.monotonic()
        if self.timeout_keep_alive_task is None:
            self.keep_alive_armed_for = idle
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    def arm_idle_close(self, delay: float) -> None:
        """Close after DELAY seconds unless a request comes first (the drain's shutdown, its re-check).

        Through ``_keep_alive_due``, like the per-idle-period timer: a request's bytes do not cancel
        a timer here, they mark the connection busy, which that check reads.
        """
        if self.idle_since is None:
            self.idle_since = time.monotonic()  # idle from now: it has not spoken, or only in part
        self.keep_alive_armed_for = self.idle_since
        self.timeout_keep_alive_task = self.loop.call_later(delay, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        """The keep-alive timer fired: close if idle for the whole timeout, else wait out the rest.

        One timer per idle period, not one per request: arming and cancelling a loop timer on every
        request cost about a tenth of a hello-world request's instructions (docs/design.md). A
        request under way (``idle_since`` None) leaves the connection open; its response arms the
        timer again. Requests that came and went since the timer was armed (a newer
        ``idle_since``) push the close to that many seconds after the last of them.
        """
        self.timeout_keep_alive_task = None
        idle = self.idle_since
        if idle is None:
            return
        if idle is not self.keep_alive_armed_for:
            remaining = idle + self.timeout_keep_alive - time.monotonic()
            if remaining > 0:
                self.keep_alive_armed_for = idle
                self.timeout_keep_alive_task = self.loop.call_later(remaining, self._keep_alive_due)
                return
        self.timeout_keep_alive_handler()

    def header_overdue(self, now: float) -> bool:
        """Called by the worker's sweep: close the connection if its request head is late."""
        if self.header_deadline is None or now < self.header_deadline or self.transport.is_closing():
            return False
        refuse_head(self, b"")
        return True


class DrainingFastProtocol(DrainingMixin, FastHttpToolsProtocol):
    """The fast protocol with forkserve's per-connection drain (forkserve.http.protocol)."""

    # The fast class does the mixin's per-request work inline (the head limits as it reads, the
    # access line's clock, the limits when one could refuse): keep its versions, a call fewer each.
    data_received = FastHttpToolsProtocol.data_received
    header_overdue = FastHttpToolsProtocol.header_overdue
    on_response_complete = FastHttpToolsProtocol.on_response_complete
    arm_idle_close = FastHttpToolsProtocol.arm_idle_close

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        FastHttpToolsProtocol.connection_made(self, transport)
        if self.access_log:
            # As the mixin does: the access line is written when the response ends, with its latency.
            self.access_line = self.access_logger = AccessLine(self.access_logger)
