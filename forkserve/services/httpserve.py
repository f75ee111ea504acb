"""The HTTP/1.1 of the master's --metrics-bind server: one request per connection, parsed by h11.

h11 reads the request head (a correct, strict parser that rejects HTTP/0.9, bare LFs in odd
places and heads over ``MAX_HEAD`` bytes); the whole head must arrive within ``HEAD_DEADLINE``
seconds of the connection, however slowly it trickles. Every answer closes the connection, which
keeps a scrape to one short task and leaves no idle keep-alive connection to hold a slot. Answers
say ``Server: forkserve``; a malformed head gets 400 (431 when too large) and is closed.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from http import HTTPStatus

import h11

from forkserve.services.serviceloop import receive

MAX_HEAD = 16 * 1024
HEAD_DEADLINE = 5.0
SEND_DEADLINE = 10.0
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Head:
    method: str
    target: str
    accept: str


class BadHead(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def response(
    status: int,
    body: bytes,
    content_type: str = TEXT,
    *,
    head: bool = False,
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """The bytes of a complete answer that closes the connection."""
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Server: forkserve",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
        *(f"{name}: {value}" for name, value in extra),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body)


async def read_head(sock: socket.socket, started: float) -> Head | None:
    """The request head, or None when the client closed before sending one."""
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    deadline = started + HEAD_DEADLINE
    while True:
        try:
            event = parser.next_event()
        except h11.RemoteProtocolError as error:
            raise BadHead(error.error_status_hint, str(error)) from None
        if event is h11.NEED_DATA:
            parser.receive_data(await receive(sock, deadline))
            continue
        if isinstance(event, h11.Request):
            accept = b", ".join(value for name, value in event.headers if name == b"accept")
            target = event.target.decode("ascii", "replace")
            return Head(event.method.decode("ascii"), target, accept.decode("latin-1"))
        if isinstance(event, h11.ConnectionClosed):
            return None
        raise BadHead(400, f"unexpected {type(event).__name__}")
