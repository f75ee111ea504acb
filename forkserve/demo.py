"""A small Starlette app that ships with forkserve: ``forkserve forkserve.demo:app -w auto``.

Each response says which worker answered, so the pre-fork model is visible from a browser or
curl: ``/`` (pid, worker, generation), ``/slow?seconds=2`` (an in-flight request to watch a
graceful stop finish), ``/cpu?ms=50`` (CPU-bound work that keeps a worker busy), ``/health``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

MAX_SLOW_SECONDS = 60.0
MAX_CPU_MS = 5000


def _identity() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "worker": os.environ.get("FORKSERVE_WORKER_ID"),
        "generation": os.environ.get("FORKSERVE_GENERATION"),
    }


async def index(request: Request) -> JSONResponse:
    return JSONResponse({"hello": "forkserve", **_identity()})


async def slow(request: Request) -> JSONResponse:
    seconds = min(float(request.query_params.get("seconds", "1")), MAX_SLOW_SECONDS)
    await asyncio.sleep(seconds)
    return JSONResponse({"slept": seconds, **_identity()})


async def cpu(request: Request) -> JSONResponse:
    milliseconds = min(int(request.query_params.get("ms", "50")), MAX_CPU_MS)
    deadline = time.perf_counter() + milliseconds / 1000
    spins = 0
    while time.perf_counter() < deadline:
        spins += 1
    return JSONResponse({"busy_ms": milliseconds, "spins": spins, **_identity()})


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield


app = Starlette(
    routes=[
        Route("/", index),
        Route("/slow", slow),
        Route("/cpu", cpu),
        Route("/health", health),
    ],
    lifespan=lifespan,
)
