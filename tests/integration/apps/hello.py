"""A plain ASGI app with a few behaviours the integration tests need."""

import asyncio
import os
import time

LEAKED: list[bytearray] = []


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/slow":
        await asyncio.sleep(float(scope["query_string"].decode().partition("=")[2] or 1))
    elif path == "/block":
        # Blocks the event loop itself: what the hung-worker check exists for.
        block_the_loop_forever()
    elif path == "/leak":
        # Holds on to 20 MB more per request: a worker that outgrows --max-worker-memory.
        LEAKED.append(bytearray(20 * 1024 * 1024))
    elif path == "/cpu":
        seconds = float(scope["query_string"].decode().partition("=")[2] or 0.2)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            pass
    worker, generation = os.environ.get("FORKSERVE_WORKER_ID"), os.environ.get("FORKSERVE_GENERATION")
    body = f"{os.getpid()} {worker} {generation}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def block_the_loop_forever():
    while True:
        time.sleep(0.05)
