"""A light WebSocket load client: RFC 6455's handshake and frames by hand, on asyncio protocols.

Theory of operation. A throughput benchmark on a machine whose cores the servers share measures
its client as much as its server, unless the client costs far less per message than the server.
The ``websockets`` library's asyncio client does about as much Python per message as the server
side of the same library (a reader task, a frame parsed through generators, a queue, a future), so
it would take half of a 2-core machine. This client instead:

* builds each connection's one outgoing frame once: the mask key is fixed per connection (the
  server cannot tell, and must unmask whatever the key), so sending is one ``transport.write``;
* knows the exact bytes the echo must come back as (an unmasked frame of the same payload), so a
  read that is exactly those bytes completes a message with one comparison; anything else goes
  through ``parse_frame``, which handles fragments, pings (answered with a pong) and closes;
* runs every connection as an ``asyncio.Protocol`` (no task, no stream per connection): the next
  message is sent from ``data_received`` of the echo, a closed loop with no event-loop round trip.

Nothing here retries. Failures are named in the toolkit's vocabulary (``benchmarks.failures``):
a handshake answered with another status is ``bad status``, a bad ``Sec-WebSocket-Accept`` or a
frame that breaks the protocol ``bad response``, an echo with other bytes ``bad body``, a close by
the server while a message is owed ``no response`` (or ``short read`` mid-frame), no echo in time
``timeout``. Compression is never offered, so every server sends plain frames.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import resource
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from benchmarks.failures import Failure, RequestFailed, classify, label

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
OPCODES = frozenset((CONT, TEXT, BINARY, CLOSE, PING, PONG))
NORMAL_CLOSE = b"\x03\xe8"  # close code 1000
MAX_HEAD = 16 * 1024  # a handshake answer longer than this is not one
MAX_FRAME = 64 * 1024 * 1024


class Frame(NamedTuple):
    fin: bool
    opcode: int
    payload: bytes
    end: int  # where the next frame begins in the buffer


def payload_of(size: int) -> bytes:
    """SIZE bytes of printable ASCII (valid UTF-8 for a text message), not one repeated byte."""
    pattern = bytes(range(0x21, 0x7F))
    return (pattern * (size // len(pattern) + 1))[:size]


def _length_bytes(length: int, mask_bit: int) -> bytes:
    if length < 126:
        return bytes((mask_bit | length,))
    if length < 1 << 16:
        return bytes((mask_bit | 126,)) + length.to_bytes(2, "big")
    return bytes((mask_bit | 127,)) + length.to_bytes(8, "big")


def apply_mask(payload: bytes, mask: bytes) -> bytes:
    """PAYLOAD XORed with the 4-byte MASK repeated (masking and unmasking are the same)."""
    if not payload:
        return b""
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")


def client_frame(opcode: int, payload: bytes, mask: bytes, fin: bool = True) -> bytes:
    """A frame as a client must send it: masked with the 4-byte MASK."""
    return (
        bytes(((0x80 if fin else 0) | opcode,))
        + _length_bytes(len(payload), 0x80)
        + mask
        + apply_mask(payload, mask)
    )


def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A frame as a server sends it (unmasked): what an echo of PAYLOAD looks like on the wire."""
    return bytes(((0x80 if fin else 0) | opcode,)) + _length_bytes(len(payload), 0) + payload


def parse_frame(buffer: bytes | bytearray, start: int = 0, max_size: int = MAX_FRAME) -> Frame | None:
    """The server's frame at BUFFER[START:], or None while it is incomplete.

    Raises ``RequestFailed(BAD_RESPONSE)`` for what a server must not send: reserved bits (no
    extension was negotiated), an unknown opcode, a masked frame, a fragmented or long control
    frame, a length past MAX_SIZE.
    """
    available = len(buffer) - start
    if available < 2:
        return None
    first, second = buffer[start], buffer[start + 1]
    if first & 0x70:
        raise RequestFailed(Failure.BAD_RESPONSE, "reserved bits set, no extension was negotiated")
    fin, opcode = bool(first & 0x80), first & 0x0F
    if opcode not in OPCODES:
        raise RequestFailed(Failure.BAD_RESPONSE, f"unknown opcode {opcode:#x}")
    if second & 0x80:
        raise RequestFailed(Failure.BAD_RESPONSE, "masked frame from the server")
    length, head = second & 0x7F, 2
    if length == 126:
        if available < 4:
            return None
        length, head = int.from_bytes(buffer[start + 2 : start + 4], "big"), 4
    elif length == 127:
        if available < 10:
            return None
        length, head = int.from_bytes(buffer[start + 2 : start + 10], "big"), 10
    if opcode >= CLOSE and (length > 125 or not fin):
        raise RequestFailed(Failure.BAD_RESPONSE, f"control frame {opcode:#x} fragmented or over 125 bytes")
    if length > max_size:
        raise RequestFailed(Failure.BAD_RESPONSE, f"frame of {length} bytes")
    end = start + head + length
    if len(buffer) < end:
        return None
    return Frame(fin, opcode, bytes(buffer[start + head : end]), end)


def accept_for(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer KEY with."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def handshake_request(host: str, port: int, key: str, path: str = "/") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def check_handshake(head: bytes, key: str) -> None:
    """Raise RequestFailed unless HEAD (the answer up to its blank line) accepts KEY's upgrade."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise RequestFailed(Failure.BAD_RESPONSE, f"not an HTTP response: {lines[0][:60]!r}")
    status = int(parts[1])
    if status != 101:
        raise RequestFailed(Failure.BAD_STATUS, str(status))
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            fields[name.strip().lower()] = value.strip()
    if fields.get("upgrade", "").lower() != "websocket":
        raise RequestFailed(Failure.BAD_RESPONSE, "101 without Upgrade: websocket")
    if "upgrade" not in {token.strip().lower() for token in fields.get("connection", "").split(",")}:
        raise RequestFailed(Failure.BAD_RESPONSE, "101 without Connection: upgrade")
    if fields.get("sec-websocket-accept") != accept_for(key):
        raise RequestFailed(Failure.BAD_RESPONSE, "wrong Sec-WebSocket-Accept")
    if "sec-websocket-extensions" in fields:
        raise RequestFailed(Failure.BAD_RESPONSE, "an extension none was offered")


# ------------------------------------------------------------------ the connection


@dataclass
class Window:
    """What one client process counts: echoes completed in [start, stop), and their round trips."""

    start: float = 0.0  # time.monotonic(); one clock for every process on the machine
    stop: float = 0.0
    messages: int = 0
    rtts: array[float] = field(default_factory=lambda: array("d"))
    failures: Counter[str] = field(default_factory=Counter)

    def echoed(self, now: float, rtt: float) -> None:
        if self.start <= now < self.stop:
            self.messages += 1
            self.rtts.append(rtt)


class WsConnection(asyncio.Protocol):
    """One client WebSocket: handshake, then (``start``) echo messages in a closed loop until
    ``window.stop``, then (``close``) the closing handshake."""

    def __init__(self, host: str, port: int, opcode: int, payload: bytes, window: Window) -> None:
        self.key = new_key()
        self.request = handshake_request(host, port, self.key)
        self.mask = os.urandom(4)
        self.opcode, self.payload = opcode, payload
        self.frame = client_frame(opcode, payload, self.mask)
        self.echo = server_frame(opcode, payload)
        self.window = window
        self.transport: Any = None
        self.buffer = bytearray()
        self.fragments: list[bytes] = []
        self.fragment_opcode = 0
        self.upgraded = False
        self.running = False
        self.awaiting = False  # a message was sent and its echo has not come
        self.sent_at = 0.0
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()  # the server's close frame, or the end
        self.close_sent = False
        self.failure: RequestFailed | None = None

    # asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.awaiting and not self.buffer and data == self.echo:
            self._echoed()  # the common case: one read, exactly the expected frame
            return
        self.buffer += data
        try:
            if not self.upgraded and not self._upgrade():
                return
            self._frames()
        except RequestFailed as failure:
            self.fail(failure)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded or self.awaiting:
            partial = bool(self.buffer) and self.upgraded
            self.fail(
                RequestFailed(Failure.SHORT_READ if partial else Failure.NO_RESPONSE, "connection closed")
            )
        _settle(self.opened)
        _settle(self.closed)

    # the load
    def start(self) -> None:
        self.running = True
        self._send()

    def stop(self) -> None:
        self.running = False

    def close(self) -> None:
        """Begin the closing handshake (closed is done when the server's close frame comes)."""
        self.running = False
        if self.transport is None or self.transport.is_closing() or self.close_sent:
            _settle(self.closed)
            return
        self.close_sent = True
        self.transport.write(client_frame(CLOSE, NORMAL_CLOSE, self.mask))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def fail(self, failure: RequestFailed) -> None:
        if self.failure is None and not self.close_sent:
            self.failure = failure
            if self.upgraded:  # a failure to open is counted by whoever asked for the connection
                self.window.failures[label(failure.failure)] += 1
        self.running = self.awaiting = False
        if not self.opened.done():
            self.opened.set_exception(failure)
        _settle(self.closed)
        if self.transport is not None:
            self.transport.abort()

    # internals
    def _send(self) -> None:
        self.awaiting = True
        self.sent_at = time.monotonic()
        self.transport.write(self.frame)

    def _echoed(self) -> None:
        now = time.monotonic()
        self.awaiting = False
        self.window.echoed(now, now - self.sent_at)
        if self.running and now < self.window.stop:
            self.awaiting = True
            self.sent_at = now
            self.transport.write(self.frame)

    def _upgrade(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                raise RequestFailed(Failure.BAD_RESPONSE, "no end of the handshake's head")
            return False
        check_handshake(bytes(self.buffer[:end]), self.key)
        del self.buffer[: end + 4]
        self.upgraded = True
        _settle(self.opened)
        return True

    def _frames(self) -> None:
        offset = 0
        while (frame := parse_frame(self.buffer, offset)) is not None:
            offset = frame.end
            self._frame(frame)
        if offset:
            del self.buffer[:offset]

    def _frame(self, frame: Frame) -> None:
        if frame.opcode == PING:
            self.transport.write(client_frame(PONG, frame.payload, self.mask))
        elif frame.opcode == CLOSE:
            if self.close_sent:
                _settle(self.closed)
                self.transport.close()
            else:
                code = int.from_bytes(frame.payload[:2], "big") if len(frame.payload) >= 2 else None
                self.fail(RequestFailed(Failure.NO_RESPONSE, f"closed by the server ({code})"))
        elif frame.opcode in (TEXT, BINARY, CONT):
            if frame.opcode != CONT:
                self.fragments, self.fragment_opcode = [], frame.opcode
            self.fragments.append(frame.payload)
            if frame.fin:
                self._message(self.fragment_opcode, b"".join(self.fragments))
                self.fragments = []

    def _message(self, opcode: int, payload: bytes) -> None:
        if not self.awaiting:
            raise RequestFailed(Failure.BAD_BODY, "a message nobody asked for")
        if opcode != self.opcode or payload != self.payload:
            raise RequestFailed(Failure.BAD_BODY, f"echo of {len(payload)} bytes, opcode {opcode:#x}")
        self._echoed()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def open_connection(
    host: str, port: int, opcode: int, payload: bytes, window: Window, timeout: float
) -> WsConnection:
    """A connected, upgraded WsConnection; raises RequestFailed (with the toolkit's word) if not."""
    loop = asyncio.get_running_loop()
    made: list[WsConnection] = []

    async def connect() -> WsConnection:
        _, protocol = await loop.create_connection(
            lambda: WsConnection(host, port, opcode, payload, window), host, port
        )
        made.append(protocol)
        await protocol.opened
        return protocol

    try:
        return await asyncio.wait_for(connect(), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        for protocol in made:
            protocol.abort()
        failure = classify(exc, connecting=not made)
        raise RequestFailed(failure, label(failure, error=exc)) from exc


# ------------------------------------------------------------------ one client process


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sleep_until(when: float) -> asyncio.Future[None]:
    return asyncio.ensure_future(asyncio.sleep(max(0.0, when - time.monotonic())))


class ClientProcess:
    """The client side of one process, driven by commands (plain dicts, from a pipe).

    ``open``: connect and upgrade N connections; ``load``: echo on them in a closed loop from
    ``start``, counting from ``warm`` to ``stop``, then close them; ``cycles``: COUNT connect,
    upgrade, close cycles, CONCURRENCY at a time. Every answer is a plain dict too.
    """

    def __init__(self) -> None:
        try:
            import uvloop

            self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        self.connections: list[WsConnection] = []
        self.window = Window()

    def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        handlers: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
            "open": self._open,
            "load": self._load,
            "cycles": self._cycles,
        }
        arguments = dict(command)
        op = arguments.pop("op")
        return self.loop.run_until_complete(handlers[op](**arguments))

    def shut(self) -> None:
        for connection in self.connections:
            connection.abort()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()

    async def _open(
        self, host: str, port: int, connections: int, opcode: int, size: int, timeout: float
    ) -> dict[str, Any]:
        self.window = Window()
        payload = payload_of(size)
        opened = await asyncio.gather(
            *(open_connection(host, port, opcode, payload, self.window, timeout) for _ in range(connections)),
            return_exceptions=True,
        )
        self.connections = [c for c in opened if isinstance(c, WsConnection)]
        failures = Counter(label(e.failure) if isinstance(e, RequestFailed) else repr(e) for e in opened
                           if not isinstance(e, WsConnection))  # fmt: skip
        return {"opened": len(self.connections), "failures": dict(failures)}

    async def _load(self, start: float, warm: float, stop: float, grace: float) -> dict[str, Any]:
        window = self.window
        window.start, window.stop = warm, stop
        await _sleep_until(start)
        for connection in self.connections:
            connection.start()
        await _sleep_until(warm)
        cpu_before = _cpu_seconds()
        await _sleep_until(stop)
        cpu = _cpu_seconds() - cpu_before
        for connection in self.connections:
            connection.stop()
        # Echoes owed at the stop: they come within the grace, or the connection stalled.
        deadline = time.monotonic() + grace
        while any(c.awaiting for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for connection in self.connections:
            if connection.awaiting:
                connection.fail(RequestFailed(Failure.TIMEOUT, f"no echo within {grace:g} s of the stop"))
        await self._close_all(grace)
        return {
            "messages": window.messages,
            "rtts": window.rtts.tobytes(),
            "failures": dict(window.failures),
            "cpu": cpu,
        }

    async def _close_all(self, timeout: float) -> None:
        for connection in self.connections:
            connection.close()
        closing = [c.closed for c in self.connections]
        if closing:
            await asyncio.wait(closing, timeout=timeout)
        for connection in self.connections:
            connection.abort()
        self.connections = []

    async def _cycles(
        self, host: str, port: int, count: int, concurrency: int, start: float, limit: float, timeout: float
    ) -> dict[str, Any]:
        """COUNT connect-upgrade-close cycles, CONCURRENCY at a time, from START (for LIMIT s at most)."""
        window = Window(start=0.0, stop=float("inf"))
        setups = array("d")
        failures: Counter[str] = Counter()
        remaining = count
        ends: list[float] = []

        async def cycler() -> None:
            nonlocal remaining
            while remaining > 0 and time.monotonic() < start + limit:
                remaining -= 1
                began = time.monotonic()
                try:
                    connection = await open_connection(host, port, TEXT, b"", window, timeout)
                except RequestFailed as exc:
                    failures[label(exc.failure)] += 1
                    continue
                setups.append(time.monotonic() - began)
                connection.close()
                try:
                    await asyncio.wait_for(asyncio.shield(connection.closed), timeout)
                except asyncio.TimeoutError:
                    failures[label(Failure.TIMEOUT)] += 1
                connection.abort()
                ends.append(time.monotonic())

        await _sleep_until(start)
        cpu_before = _cpu_seconds()
        await asyncio.gather(*(cycler() for _ in range(concurrency)))
        cpu = _cpu_seconds() - cpu_before
        failures.update(window.failures)
        return {
            "cycles": len(ends),
            "setups": setups.tobytes(),
            "last": max(ends, default=start),
            "failures": dict(failures),
            "cpu": cpu,
        }


def client_main(conn: Any) -> None:
    """A client process's loop: a command in, an answer out, until ``exit`` or the pipe closes."""
    client = ClientProcess()
    try:
        while True:
            try:
                command = conn.recv()
            except EOFError:
                return
            if command.get("op") == "exit":
                return
            try:
                conn.send(client.handle(command))
            except Exception as exc:  # reported, not raised: the parent names it beside the server's log
                conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        client.shut()
