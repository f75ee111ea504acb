"""The fast protocol's request cycle: one request's ASGI ``receive`` and ``send``.

``send`` is where the fast protocol saves its system call: a head with a content-length is held
and written together with the first body chunk (docs/design.md has the measurements).
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import TYPE_CHECKING, Any

from forkserve.http.fast_plan import (
    CONTINUE,
    HOLD_AFTER,
    JOIN_LIMIT,
    STATUS_LINE,
    VALID_NAMES,
    VALID_VALUES,
    check_name,
    check_value,
)

if TYPE_CHECKING:
    from forkserve.http.fast import FastHttpToolsProtocol


def client_text(scope: dict[str, Any]) -> str:
    """The access line's client field, as uvicorn writes it ("host:port", or empty)."""
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""


def target_text(scope: dict[str, Any]) -> str:
    """The access line's path and query, as uvicorn writes them.

    A quote is escaped (%22) so that a target cannot end the quoted request field of the line.
    """
    path = scope["raw_path"].decode("latin1")
    query = scope["query_string"]
    target = f"{path}?{query.decode('ascii')}" if query else path
    return target.replace('"', "%22")


class FastCycle:
    """One request and its response; the ASGI ``receive`` and ``send`` of the request."""

    # Class-level defaults: a new cycle stores only what differs per request (instance dicts of
    # one class share their keys, so a later store costs what a slot would).
    disconnected = False
    body = b""
    more_body = True
    # "ready" is uvicorn's message_event being set; the Event exists only once someone waits.
    ready = False
    event: asyncio.Event | None = None
    response_started = False
    response_complete = False
    chunked_encoding: bool | None = None
    expected_content_length = 0
    pending_head: bytes | None = None
    task: Any = None
    finished = False
    app_started = 0.0

    def __init__(
        self, protocol: FastHttpToolsProtocol, scope: dict[str, Any], keep_alive: bool, expect_100: bool
    ) -> None:
        self.protocol = protocol
        self.scope = scope
        self.transport = protocol.transport
        self.flow = protocol.flow
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = expect_100
        self.head_request = scope["method"] == "HEAD"

    def wake(self) -> None:
        self.ready = True
        if self.event is not None:
            self.event.set()

    async def run_asgi(self, app: Any) -> None:
        logger = self.protocol.logger
        self.app_started = perf_counter()
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            logger.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self.send_500_response()
            else:
                self.flush_head()  # what the client was sent says how far the response got
                self.transport.close()
        else:
            if result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
                self.transport.close()
            elif not self.response_started and not self.disconnected:
                logger.error("ASGI callable returned without starting response.")
                await self.send_500_response()
            elif not self.response_complete and not self.disconnected:
                logger.error("ASGI callable returned without completing response.")
                self.flush_head()
                self.transport.close()
        finally:
            self.finished = True
            self.protocol.tasks.discard(self.task)

    def flush_head(self) -> None:
        """Write a held response head now (a stream's, at the end of the loop's turn; or before a close)."""
        head = self.pending_head
        if head is not None:
            self.pending_head = None
            if not self.disconnected and not self.transport.is_closing():
                self.transport.write(head)

    async def send_500_response(self) -> None:
        await self.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"21"),
                    (b"connection", b"close"),
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": b"Internal Server Error", "more_body": False})

    async def send(self, message: Any) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{message['type']}'."
                )
            self.response_started = True
            self.waiting_for_100_continue = False
            status = message["status"]
            protocol = self.protocol
            if protocol.access_log:
                protocol.access_logger.info(
                    '%s - "%s %s HTTP/%s" %d',
                    client_text(self.scope),
                    self.scope["method"],
                    target_text(self.scope),
                    self.scope["http_version"],
                    status,
                )
            head = self._head(status, message.get("headers", ()))
            chunked = self.chunked_encoding
            if chunked is False:
                # The length is known, so the body is ready or nearly: the head waits for it and
                # both go out in one write.
                self.pending_head = head
            elif chunked and protocol.real_loop:
                # A stream: its first chunk usually follows at once (in this turn of the loop) and
                # joins the head in one write; if it does not, the head goes out at the end of the
                # turn, so a client waiting on a slow stream still sees its status.
                self.pending_head = head
                protocol.loop.call_soon(self.flush_head)
            else:
                self.transport.write(head)
        elif not self.response_complete:
            if message["type"] != "http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.body', but got '{message['type']}'."
                )
            body = message.get("body", b"")
            more_body = message.get("more_body", False)
            if self.head_request:
                self.expected_content_length = 0
                data = b""
            elif self.chunked_encoding:
                data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
                if not more_body:
                    data += b"0\r\n\r\n"
            else:
                if len(body) > self.expected_content_length:
                    raise RuntimeError("Response content longer than Content-Length")
                self.expected_content_length -= len(body)
                data = body
            pending = self.pending_head
            if pending is not None:
                self.pending_head = None
                if len(data) > JOIN_LIMIT:
                    self.transport.write(pending)
                    self.transport.write(data)
                elif (
                    not more_body
                    and self.keep_alive
                    and self.protocol.real_loop
                    and perf_counter() - self.app_started >= HOLD_AFTER
                ):
                    # A slow app's whole response: written with the turn's others (LingeringTransport.hold).
                    self.transport.hold(pending + data)
                else:
                    self.transport.write(pending + data)
            elif data:
                self.transport.write(data)
            if not more_body:
                if self.expected_content_length != 0:
                    raise RuntimeError("Response content shorter than Content-Length")
                self.response_complete = True
                self.wake()
                if not self.keep_alive:
                    self.transport.close()
                if not self.finished:
                    self.protocol.on_response_complete()
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{message['type']}' sent, after response already completed."
            )

    def _head(self, status: int, headers: Any) -> bytes:
        protocol = self.protocol
        plan = protocol.plan
        if protocol.server_state.default_headers is not plan.defaults:
            plan.set_defaults(protocol.server_state.default_headers)
        if plan.defaults_special:
            headers = plan.defaults_special + list(headers)
        parts = [STATUS_LINE[status], plan.defaults_block]
        close_sent = False
        for name, value in headers:
            name = name.lower()
            try:
                known = name in VALID_NAMES and value in VALID_VALUES
            except TypeError:  # a bytearray: allowed, but not hashable
                known = False
            if not known:
                check_name(name)
                check_value(value)
            if name == b"content-length":
                if self.chunked_encoding is None:
                    self.expected_content_length = int(value)
                    self.chunked_encoding = False
            elif name == b"transfer-encoding":
                if value.lower() == b"chunked":
                    self.expected_content_length = 0
                    self.chunked_encoding = True
            elif name == b"connection" and b"close" in [t.lower().strip() for t in value.split(b",")]:
                self.keep_alive = False
                close_sent = True
            parts += (name, b": ", value, b"\r\n")
        if self.chunked_encoding is None and not self.head_request and status not in (204, 304):
            # Neither content-length nor transfer-encoding: the body is sent chunked.
            self.chunked_encoding = True
            parts.append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive and not close_sent:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    async def receive(self) -> dict[str, Any]:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(CONTINUE)
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            flow = self.flow
            if flow.read_paused:
                flow.resume_reading()
            if not self.ready:
                if self.event is None:
                    self.event = asyncio.Event()
                await self.event.wait()
            self.ready = False
            if self.event is not None:
                self.event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        message = {"type": "http.request", "body": self.body, "more_body": self.more_body}
        self.body = b""
        return message
