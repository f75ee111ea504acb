"""An ASGI app with a CPU-bound route, for the autoscaling benchmark.

``/cpu`` does a fixed amount of pure-Python work (about 20 ms of one core on the reference
machine) while holding the event loop, the way a view that renders or serialises a large payload
does. The work is a fixed number of iterations rather than "spin for 20 ms": on a shared machine
a time-boxed spin would look equally fast however little CPU it got, and the benchmark is about
how many cores the server manages to use.

Its body names the process that answered, so the load generator can tell when a request was first
served by a worker the autoscaler added. Every other path is ``benchmarks.apps``'s hello world,
which the harness checks for to know that the server on a port is ours.
"""

from __future__ import annotations

import os

from benchmarks.apps import Receive, Scope, Send
from benchmarks.apps import app as hello_app

CPU_PATH = "/cpu"
# About 37 ns an iteration on CPython 3.11 on the reference machine: ~20 ms a request.
CPU_ITERATIONS = 540_000


def burn(iterations: int = CPU_ITERATIONS) -> int:
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http" or scope["path"] != CPU_PATH:
        await hello_app(scope, receive, send)
        return
    burn()
    # getpid() per request: a module-level value would be the zygote's, shared by every worker.
    body = f"{os.getpid()} {os.environ.get('FORKSERVE_WORKER_ID', '?')}".encode("ascii")
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
