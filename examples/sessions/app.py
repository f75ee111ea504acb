"""Server-side sessions that work whichever worker answers.

    REDIS_URL=redis://127.0.0.1:6379/0 forkserve examples.sessions.app:app -w 4
    SESSION_STORE=memory forkserve examples.sessions.app:app -w 4 --balance ip-hash

A worker is a process: a session kept in one worker's memory is invisible to the others, so with
the default store (Redis, through starsessions' RedisStore) every worker reads the same sessions.
With SESSION_STORE=memory each worker keeps its own; that only works when every request of a
client reaches the same worker, which ``--balance ip-hash`` does (sticky sessions, no proxy).
Each answer names the worker that served it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starsessions import SessionAutoloadMiddleware, SessionMiddleware
from starsessions.stores.base import SessionStore
from starsessions.stores.memory import InMemoryStore
from starsessions.stores.redis import RedisStore

STORE_KIND = os.environ.get("SESSION_STORE", "redis")
# No connection is made here: redis-py connects on first use, in each worker (its pool resets after a fork).
redis = (
    Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")) if STORE_KIND == "redis" else None
)


def make_store() -> SessionStore:
    if redis is not None:
        return RedisStore(connection=redis, prefix="example-session:")
    return InMemoryStore()


def answer(request: Request, **fields: object) -> JSONResponse:
    return JSONResponse({"user": request.session.get("user"), "worker": os.getpid(), **fields})


async def login(request: Request) -> JSONResponse:
    form = await request.json()
    request.session["user"] = str(form["user"])
    return answer(request)


async def me(request: Request) -> JSONResponse:
    request.session["visits"] = request.session.get("visits", 0) + 1
    return answer(request, visits=request.session["visits"])


async def logout(request: Request) -> JSONResponse:
    request.session.clear()
    return answer(request)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    if redis is not None:
        await redis.aclose()


app = Starlette(
    routes=[
        Route("/login", login, methods=["POST"]),
        Route("/me", me),
        Route("/logout", logout, methods=["POST"]),
    ],
    middleware=[
        # Secure cookies need HTTPS; this demo speaks plain HTTP on localhost. Behind TLS, drop the override.
        Middleware(SessionMiddleware, store=make_store(), lifetime=3600, cookie_https_only=False),
        Middleware(SessionAutoloadMiddleware),
    ],
    lifespan=lifespan,
)
