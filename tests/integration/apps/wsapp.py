"""A WebSocket echo app for the drain tests: says which worker and generation a client is on, and
logs the code of every websocket.disconnect it sees."""

import os
import sys

import forkserve


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        body = b"ok\n"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    info = forkserve.worker_info()
    await send({"type": "websocket.send", "text": f"{os.getpid()} {info.generation if info else 0}"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            print(f"app saw websocket.disconnect {message.get('code')}", file=sys.stderr, flush=True)
            return
        await send({"type": "websocket.send", "text": message.get("text") or ""})
