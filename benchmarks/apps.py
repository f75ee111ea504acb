"""The one ASGI application that every benchmarked server serves.

It is plain ASGI on purpose: a framework would add its own per-request cost and hide the
differences between the servers, which are what the benchmark is about.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BODY = b"Hello, world!"
# Built once: the headers are the same for every response, so rebuilding them per request would
# only measure the app, not the server.
RESPONSE_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/plain"),
        (b"content-length", str(len(BODY)).encode("ascii")),
    ],
}
RESPONSE_BODY: Message = {"type": "http.response.body", "body": BODY}


async def _lifespan(receive: Receive, send: Send) -> None:
    # Answering lifespan keeps servers that run it by default (uvicorn, gunicorn's asgi worker,
    # granian, hypercorn) from logging "lifespan unsupported" or waiting on it.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer every HTTP request with 200 "Hello, world!"."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        # Websockets are not benchmarked; refusing them keeps the app total.
        return
    await send(RESPONSE_START)
    await send(RESPONSE_BODY)
