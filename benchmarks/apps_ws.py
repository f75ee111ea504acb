"""The WebSocket apps of the benchmarks, plain ASGI.

``app`` (benchmarks.ws_reload) tells each client the pid of the worker it is on, then holds the
connection open until the client or the server closes it. ``echo`` (benchmarks.ws_throughput)
sends every message back as it came, text as text and bytes as bytes.
"""

import os

from benchmarks.apps import BODY


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        # The hello-world body, so the harness's "is it serving" check works unchanged.
        headers = [(b"content-length", str(len(BODY)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": str(os.getpid())})
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def echo(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "websocket":
        await app(scope, receive, send)  # lifespan, and the hello body the harness checks
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return  # websocket.disconnect
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
