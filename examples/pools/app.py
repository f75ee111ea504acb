"""One PostgreSQL pool per worker, sized so the fleet never exceeds the database's connection limit.

    DATABASE_URL=postgresql://app@127.0.0.1/app DB_CONNECTIONS=90 forkserve examples.pools.app:app -w 4

DB_CONNECTIONS is the share of the server's max_connections this app may use. Each worker opens
``worker_info().share(DB_CONNECTIONS)`` connections in its lifespan startup and closes them in its
lifespan shutdown, which runs once it has drained. The share is the budget over twice the most
workers the master may run, because during a rolling reload (HUP) a worker's replacement opens its
pool while the old worker may still hold its own until its last request ends. So a reload under
load never meets "too many clients".
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import forkserve

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1/postgres")
BUDGET = int(os.environ.get("DB_CONNECTIONS", "20"))
# Names this app's connections in pg_stat_activity, so they can be counted.
APPLICATION_NAME = os.environ.get("DB_APPLICATION_NAME", "forkserve-example")


def pool_size() -> int:
    info = forkserve.worker_info()
    return info.share(BUDGET) if info is not None else BUDGET  # outside forkserve: one process


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    size = pool_size()
    app.state.pool = await asyncpg.create_pool(
        DATABASE_URL, min_size=size, max_size=size, server_settings={"application_name": APPLICATION_NAME}
    )
    app.state.size = size
    try:
        yield
    finally:
        await app.state.pool.close()


async def query(request: Request) -> JSONResponse:
    seconds = float(request.query_params.get("sleep", "0"))
    async with request.app.state.pool.acquire() as connection:
        backend = await connection.fetchval("SELECT pg_backend_pid() FROM pg_sleep($1)", seconds)
    return JSONResponse({"worker": os.getpid(), "pool_size": request.app.state.size, "backend": backend})


app = Starlette(routes=[Route("/", query)], lifespan=lifespan)
