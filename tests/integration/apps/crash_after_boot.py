"""Serves, then its worker process dies 1 s after boot: a crash loop the master must not feed."""

import asyncio
import os

from hello import app as hello


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        asyncio.get_running_loop().call_later(1.0, os._exit, 1)
        await send({"type": message["type"] + ".complete"})
        while (await receive())["type"] != "lifespan.shutdown":
            pass
        await send({"type": "lifespan.shutdown.complete"})
        return
    await hello(scope, receive, send)
