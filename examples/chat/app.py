"""WebSocket chat across workers: a message sent to one worker reaches the clients of every worker.

    REDIS_URL=redis://127.0.0.1:6379/0 forkserve examples.chat.app:app -w 4
    open http://127.0.0.1:8000/ in two browsers

Each client's WebSocket lives in one worker. So a worker never sends a chat message straight to
its own clients: it publishes it to Redis, and every worker (itself too) gets it from its one
subscription and passes it to the clients it holds. One subscription per worker, not per client,
keeps Redis connections at ``workers``, whatever the number of clients.

Reloads. A draining worker closes its WebSockets with 1012 ("service restart"), a few at a time
over --ws-drain-period, and the page reconnects (jitter, then back-off). Messages published while a
client is between two connections would be lost to it, so every message is also appended to a
Redis stream (the last ``HISTORY``) and carries the stream's id; a client reconnects with
``?after=<the last id it saw>`` and is first sent what it missed. A client's messages go through
its own queue, so the replay and the live messages arrive in order and without duplicates.
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
STREAM = "example-chat-log"
HISTORY = 1000
redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
# Each client's queue of messages to send: the fan-out fills it, the client's sender empties it.
clients: dict[WebSocket, asyncio.Queue[dict[str, str]]] = {}


def stream_id(message_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = message_id.partition("-")
    return int(milliseconds), int(sequence or 0)


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
            item = json.loads(message["data"])
            for queue in list(clients.values()):
                queue.put_nowait(item)


async def send_in_order(
    websocket: WebSocket, queue: asyncio.Queue[dict[str, str]], after: str | None
) -> None:
    """What this client missed since AFTER (from the stream), then live messages newer than that."""
    last = stream_id(after) if after else (0, 0)
    if after:
        for message_id, fields in await redis.xrange(STREAM, min=f"({after}", max="+"):
            item = {key.decode(): value.decode() for key, value in fields.items()}
            await websocket.send_text(json.dumps({"kind": "message", "id": message_id.decode(), **item}))
            last = stream_id(message_id.decode())
    while True:
        item = await queue.get()
        if stream_id(item["id"]) <= last:
            continue  # already sent by the replay
        last = stream_id(item["id"])
        await websocket.send_text(json.dumps({"kind": "message", **item}))


async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    clients[websocket] = queue  # before the replay, so nothing published meanwhile is missed
    sender = asyncio.create_task(send_in_order(websocket, queue, websocket.query_params.get("after")))
    try:
        await websocket.send_text(json.dumps({"kind": "hello", "worker": os.getpid()}))
        while True:
            text = await websocket.receive_text()
            fields = {"text": text, "worker": str(os.getpid())}
            message_id = (await redis.xadd(STREAM, fields, maxlen=HISTORY, approximate=True)).decode()
            await redis.publish(CHANNEL, json.dumps({"id": message_id, **fields}))
    except WebSocketDisconnect:
        # Code 1012 means this worker is draining: the client reconnects to another one.
        pass
    finally:
        clients.pop(websocket, None)
        sender.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await sender


PAGE = """<!doctype html><meta charset=utf-8><title>forkserve chat</title>
<ul id=log></ul><form id=f><input id=t autofocus><button>send</button></form>
<script>
let ws, last = "", backoff = 100;
function connect() {
  ws = new WebSocket(location.href.replace(/^http/, "ws") + "ws" + (last ? "?after=" + last : ""));
  ws.onopen = () => { backoff = 100; };
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.kind !== "message") return;
    last = m.id;
    const li = document.createElement("li"); li.textContent = m.text; log.append(li);
  };
  // 1012 (the server restarts): reconnect after a little jitter; otherwise back off, with jitter.
  ws.onclose = (e) => {
    const wait = e.code === 1012 ? Math.random() * 100 : backoff * (0.5 + Math.random());
    if (e.code !== 1012) backoff = Math.min(backoff * 2, 5000);
    setTimeout(connect, wait);
  };
}
connect();
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
