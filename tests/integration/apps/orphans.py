"""An app that leaves orphans behind, as apps that shell out do: each request to /orphan starts a
grandchild that outlives its parent, so it is re-parented to the nearest reaper (PID 1 in a
container) and becomes a zombie there unless that reaper waits for it."""

import asyncio
import os
import time


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b"ok"
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
    if scope["path"] == "/orphan":
        child = os.fork()
        if child == 0:
            if os.fork() == 0:
                time.sleep(0.2)  # outlive the parent, then exit: an orphan to reap
            os._exit(0)
        os.waitpid(child, 0)
        body = str(os.getpid()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
