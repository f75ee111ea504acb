"""The balancing benchmark's app: hello world, a 100 ms CPU-bound route, and a count per worker.

``/`` is ``benchmarks.apps``'s hello world (the harness checks for it). ``/cpu`` holds the event
loop for a fixed amount of pure-Python work, about 100 ms of one core on the reference machine, as
a heavy view does. ``/pid`` names the process that answered (the burst measurement).

Each worker counts the HTTP requests it served and, at lifespan shutdown, writes the count to
``$BALANCE_COUNTS_DIR/<pid>``: the share of requests per worker, for any server that runs the
lifespan shutdown on SIGTERM, at the cost of one integer addition per request.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.apps import Receive, Scope, Send
from benchmarks.apps import app as hello_app
from benchmarks.apps_cpu import burn

CPU_ITERATIONS = 2_700_000  # about 100 ms at ~37 ns an iteration
served = 0


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    global served
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    served += 1
    path = scope.get("path")
    if path == "/cpu":
        burn(CPU_ITERATIONS)
    elif path == "/pid":
        body = str(os.getpid()).encode()
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await hello_app(scope, receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            directory = os.environ.get("BALANCE_COUNTS_DIR")
            if directory and served:
                Path(directory, str(os.getpid())).write_text(str(served))
            await send({"type": "lifespan.shutdown.complete"})
            return
