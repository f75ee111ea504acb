"""The app's own CPU per request, with no server at all: the floor under any ASGI server's figure.

Every server in ``benchmarks.run`` pays two things per request that no server can avoid: the
transport (the socket calls, the event loop, the parser: ``--servers ceiling`` measures it) and
the app itself. This measures the app alone: it is awaited in a loop inside one task with a
ready-made scope, a ``receive`` that returns the empty body at once (then waits) and a ``send`` that keeps
nothing, so no scope is built, no task is created and no byte is written. The sum of the two is the
least CPU per request any ASGI server could reach on that app, so a peer's CPU/request over that
sum is the largest speed-up over the peer that any server could show (issue 19: a FastAPI route).

    python -m benchmarks.app_floor --app fastapi
    python -m benchmarks.run --app fastapi --servers forkserve,gunicorn-uvicorn,ceiling
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import uvloop

from benchmarks.run import APPS

# What wrk sends: its request carries only Host, so the scope's headers are the same.
HOST_HEADER = (b"host", b"127.0.0.1:8000")


def scope_for(target: str) -> dict[str, Any]:
    url = urlsplit(target)
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": url.path,
        "raw_path": url.path.encode(),
        "query_string": url.query.encode(),
        "headers": [HOST_HEADER],
        "state": {},
    }


def receiver() -> Callable[[], Awaitable[dict[str, Any]]]:
    """The empty body, then what a server does once the body is read: wait (for a disconnect that
    does not come here). Django's handler listens for it in a task of its own and cancels it."""
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable: the future is never resolved")

    return receive


async def _send(message: dict[str, Any]) -> None:
    del message


async def _calls(app: Callable[..., Awaitable[None]], target: str, count: int) -> float:
    template = scope_for(target)
    started = time.process_time()
    for _ in range(count):
        # A copy each time, as a server hands each request its own scope (apps write to it).
        await app(dict(template), receiver(), _send)
    return time.process_time() - started


async def status_of(app: Callable[..., Awaitable[None]], target: str) -> int:
    """The status the app answers the target with: a floor measured on a 404 would be no floor."""
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope_for(target), receiver(), send)
    if len(statuses) != 1:
        raise RuntimeError(f"the app sent {len(statuses)} response starts for {target}")
    return statuses[0]


def load(import_string: str) -> Callable[..., Awaitable[None]]:
    module_name, _, attribute = import_string.partition(":")
    app: Callable[..., Awaitable[None]] = getattr(importlib.import_module(module_name), attribute)
    return app


def app_cpu_per_request(import_string: str, target: str, count: int, repeats: int) -> list[float]:
    """Microseconds of CPU per call of the app, one figure per repeat (after one warm-up repeat)."""
    app = load(import_string)
    loop = uvloop.new_event_loop()
    try:
        status = loop.run_until_complete(status_of(app, target))
        if status != 200:
            raise RuntimeError(f"{import_string} answers {target} with {status}, not 200")
        loop.run_until_complete(_calls(app, target, count))
        return [loop.run_until_complete(_calls(app, target, count)) / count * 1e6 for _ in range(repeats)]
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", choices=sorted(APPS), default="fastapi")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    spec = APPS[args.app]
    import_string, target = spec.target, spec.path
    figures = app_cpu_per_request(import_string, target, args.requests, args.repeats)
    print(
        f"{args.app} ({import_string} {target}): {statistics.median(figures):.1f} µs CPU per request, "
        f"the app alone (median of {args.repeats}: {', '.join(f'{f:.1f}' for f in figures)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
