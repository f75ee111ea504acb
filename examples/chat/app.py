"""WebSocket chat across workers: a message sent to one worker reaches the clients of every worker.

    REDIS_URL=redis://127.0.0.1:6379/0 forkserve examples.chat.app:app -w 4
    open http://127.0.0.1:8000/ in two browsers

Each client's WebSocket lives in one worker. So a worker never sends a chat message straight to
its own clients: it publishes it to Redis, and every worker (itself too) gets it from its one
subscription and passes it to the clients it holds. One subscription per worker, not per client,
keeps Redis connections at ``workers``, whatever the number of clients.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

CHANNEL = "example-chat"
redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
clients: set[WebSocket] = set()


async def fan_out(ready: asyncio.Event) -> None:
    """Pass every message published on the channel to this worker's clients."""
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(CHANNEL)
        # subscribe() only sends the command: wait for Redis to confirm before serving.
        while (await pubsub.get_message(timeout=1.0)) is None:
            pass
        ready.set()
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            text = message["data"].decode()
            for client in list(clients):
                with suppress(Exception):  # a client that left mid-send is dropped by its own handler
                    await client.send_text(text)


async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    clients.add(websocket)
    try:
        await websocket.send_text(json.dumps({"kind": "hello", "worker": os.getpid()}))
        while True:
            text = await websocket.receive_text()
            await redis.publish(CHANNEL, json.dumps({"kind": "message", "text": text, "worker": os.getpid()}))
    except WebSocketDisconnect:
        pass
    finally:
        clients.discard(websocket)


PAGE = """<!doctype html><meta charset=utf-8><title>forkserve chat</title>
<ul id=log></ul><form id=f><input id=t autofocus><button>send</button></form>
<script>
const ws = new WebSocket(location.href.replace(/^http/, "ws") + "ws");
ws.onmessage = (e) => { const li = document.createElement("li"); li.textContent = e.data; log.append(li); };
f.onsubmit = (e) => { e.preventDefault(); ws.send(t.value); t.value = ""; };
</script>"""


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    ready = asyncio.Event()
    listener = asyncio.create_task(fan_out(ready))
    await asyncio.wait([listener, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
    if listener.done():
        listener.result()  # raises why the subscription failed: the worker does not serve without it
    yield
    listener.cancel()
    with suppress(asyncio.CancelledError):
        await listener
    await redis.aclose()


app = Starlette(routes=[Route("/", page), WebSocketRoute("/ws", chat)], lifespan=lifespan)
