"""hello's app, whose lifespan startup takes 3 s while the file named by SLOW_BOOT_FLAG exists.

A test creates the file after the first workers serve, so only the replacements boot slowly: the
window in which a worker is booting is then long enough to observe.
"""

import asyncio
import os

from hello import app as hello_app


async def app(scope, receive, send):
    if scope["type"] != "lifespan":
        await hello_app(scope, receive, send)
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if os.path.exists(os.environ.get("SLOW_BOOT_FLAG", "/nonexistent")):
                await asyncio.sleep(3)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
