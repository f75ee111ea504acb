"""Shows an environment variable as the app saw it at import and as it is now, per request."""

import os

AT_IMPORT = os.environ.get("GREETING", "unset")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    now = os.environ.get("GREETING", "unset")
    body = f"{AT_IMPORT} {now} {os.environ.get('FORKSERVE_GENERATION')}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})
