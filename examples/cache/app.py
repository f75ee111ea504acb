"""Three levels of cache: an in-process LRU, then Redis (shared by every worker), then PostgreSQL.

    forkserve examples.cache.app:app -w 4 --on-starting examples.cache.schema:create
    curl 127.0.0.1:8000/items/7; curl 127.0.0.1:8000/stats

A read tries this worker's LRU (no I/O), then Redis (one round trip, and what one worker fetched
every worker finds), then the database, filling the levels above on the way back. ``/stats``
shows this worker's hit rates per level. The schema and its rows are made once, in the master,
by the ``on_starting`` hook (examples/cache/schema.py): before any worker exists, so no two
workers race to create the table.
"""

from __future__ import annotations

import json
import os
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import forkserve

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1/postgres")
BUDGET = int(os.environ.get("DB_CONNECTIONS", "20"))
REDIS_TTL = 60  # seconds; the LRU is far smaller and short-lived, Redis holds what all workers read


class LRU:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: OrderedDict[int, Any] = OrderedDict()

    def get(self, key: int) -> Any:
        if key not in self.items:
            return None
        self.items.move_to_end(key)
        return self.items[key]

    def put(self, key: int, value: Any) -> None:
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.capacity:
            self.items.popitem(last=False)


local = LRU(int(os.environ.get("LRU_SIZE", "128")))
counts: Counter[str] = Counter()
redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


async def item(request: Request) -> JSONResponse:
    key = int(request.path_params["key"])
    value = local.get(key)
    if value is not None:
        counts["local_hit"] += 1
        return JSONResponse({**value, "from": "local", "worker": os.getpid()})
    counts["local_miss"] += 1
    cached = await redis.get(f"example-cache:item:{key}")
    if cached is not None:
        counts["redis_hit"] += 1
        value, source = json.loads(cached), "redis"
    else:
        counts["redis_miss"] += 1
        row = await request.app.state.pool.fetchrow("SELECT id, name FROM example_items WHERE id = $1", key)
        counts["db_query"] += 1
        if row is None:
            return JSONResponse({"error": "no such item"}, status_code=404)
        value, source = dict(row), "db"
        await redis.set(f"example-cache:item:{key}", json.dumps(value), ex=REDIS_TTL)
    local.put(key, value)
    return JSONResponse({**value, "from": source, "worker": os.getpid()})


def rate(hits: int, misses: int) -> float | None:
    return round(hits / (hits + misses), 3) if hits + misses else None


async def stats(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "worker": os.getpid(),
            "counts": dict(counts),
            "local_hit_rate": rate(counts["local_hit"], counts["local_miss"]),
            "redis_hit_rate": rate(counts["redis_hit"], counts["redis_miss"]),
        }
    )


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    info = forkserve.worker_info()
    size = info.share(BUDGET) if info is not None else BUDGET
    app.state.pool = await asyncpg.create_pool(DATABASE_URL, min_size=1, max_size=size)
    try:
        yield
    finally:
        await app.state.pool.close()
        await redis.aclose()


app = Starlette(routes=[Route("/items/{key:int}", item), Route("/stats", stats)], lifespan=lifespan)
