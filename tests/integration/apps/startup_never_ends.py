"""An app whose lifespan startup awaits something that never comes."""

import asyncio


async def wait_for_the_database() -> None:
    await asyncio.Event().wait()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        if message["type"] == "lifespan.startup":
            await wait_for_the_database()
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"never"})
