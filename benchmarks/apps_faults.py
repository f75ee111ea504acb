"""The ASGI apps that the fault-injection benchmark (``benchmarks.faults``) serves.

``app`` answers:

- ``/pid``: the worker's pid, so a client can tell which worker process answered;
- ``/leak``: keeps 20 MB more in a global list (every page touched, so it counts in RSS and USS)
  and answers ``PID BLOCKS``;
- ``/sleep?s=SECONDS``: blocks the event loop with ``time.sleep`` (at most 10 s), then answers;
- anything else: 200 "Hello, world!", the same as ``benchmarks.apps``, so the shared harness's
  "is it serving?" check works unchanged.

``crash_app`` is ``app`` whose worker process exits with ``os._exit(1)`` ``CRASH_AFTER`` seconds
after its lifespan startup completed: a crash loop, for servers that restart dead workers.

Plain ASGI, like ``benchmarks.apps``: a framework would add behaviour of its own to what is tested.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from benchmarks.apps import BODY

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LEAK_BLOCK = 20 * 1024 * 1024
MAX_SLEEP = 10.0
CRASH_AFTER = 1.0

# Grows by LEAK_BLOCK per /leak call and is never emptied: the leak the memory scenario needs.
_LEAKED: list[bytes] = []


async def _respond(send: Send, body: bytes, status: int = 200) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _drain_body(receive: Receive) -> None:
    # Reading the request body keeps every server on its normal path for POSTs with a body.
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _lifespan(receive: Receive, send: Send, crash_after: float | None) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if crash_after is not None:
                # The worker has booted and may serve for a moment; then it dies as a crash would,
                # without running any cleanup.
                asyncio.get_running_loop().call_later(crash_after, os._exit, 1)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _http(scope: Scope, receive: Receive, send: Send) -> None:
    await _drain_body(receive)
    path = scope.get("path", "/")
    if path == "/pid":
        await _respond(send, str(os.getpid()).encode("ascii"))
    elif path == "/leak":
        # b"x" * n writes every byte, so the pages are really in memory; bytes(n) could stay
        # untouched zero pages that no memory figure counts.
        _LEAKED.append(b"x" * LEAK_BLOCK)
        await _respond(send, f"{os.getpid()} {len(_LEAKED)}".encode("ascii"))
    elif path == "/sleep":
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        seconds = min(MAX_SLEEP, float(query.get("s", ["1"])[0]))
        time.sleep(seconds)  # blocks the event loop on purpose
        await _respond(send, str(os.getpid()).encode("ascii"))
    else:
        await _respond(send, BODY)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send, None)
    elif scope["type"] == "http":
        await _http(scope, receive, send)


async def crash_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send, CRASH_AFTER)
    elif scope["type"] == "http":
        await _http(scope, receive, send)
