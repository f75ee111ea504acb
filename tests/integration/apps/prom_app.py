"""An app that keeps its own prometheus-client metrics, as apps do, with no multiprocess setup."""

import os

from prometheus_client import Counter

HITS = Counter("app_hits", "Requests this app saw, by path", ["path"])


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    HITS.labels(scope["path"]).inc()
    body = str(os.getpid()).encode()
    status = 404 if scope["path"] == "/missing" else 200
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
