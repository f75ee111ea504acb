"""An app that print()s a lot at startup, in every worker at once: lines must not tear."""

import os

LINES = 400


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                marker = f"chatty pid={os.getpid()} "
                for number in range(LINES):
                    # Longer than a few per 8 KiB block, so block buffering would cut lines.
                    print(f"{marker}{number:04d} {'x' * 300} end")
                print(f"{marker}done")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b"ok"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": body})
