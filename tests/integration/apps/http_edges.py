"""An ASGI app for the HTTP protocol tests: echoes, streams, and reports disconnects."""

import asyncio
import hashlib
import sys


async def read_body(receive):
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message["body"])
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(send, body, headers=()):
    head = [(b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    path, query = scope["path"], scope["query_string"].decode()
    if path == "/echo":
        # The body back, with the request's method and a header the client chose.
        if query.startswith("delay="):
            await asyncio.sleep(float(query[6:]))
        body = await read_body(receive)
        tag = dict(scope["headers"]).get(b"x-tag", b"")
        await respond(send, body or b"", [(b"x-tag", tag), (b"x-method", scope["method"].encode())])
    elif path == "/digest":
        body = await read_body(receive)
        if body is None:
            print(f"http_edges: client went away mid-body {scope['client']}", file=sys.stderr, flush=True)
            return
        await respond(send, f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode())
    elif path == "/big":
        size = int(query.partition("=")[2])
        await respond(send, b"x" * size)
    elif path == "/stream":
        # No content-length: sent chunked. The first chunk comes after a pause.
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await asyncio.sleep(float(query.partition("=")[2] or 0))
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/seen":
        # What the app sees of this request: its header names, client and scheme, one per line.
        await read_body(receive)
        seen = [name.decode("latin1") for name, _ in scope["headers"]]
        seen += [f"client={scope['client'][0]}", f"scheme={scope['scheme']}"]
        await respond(send, "\n".join(seen).encode())
    elif path == "/client":
        await respond(send, f"{scope['client'][0]} {scope['scheme']}".encode())
    elif path == "/headers":
        count = int(query.partition("=")[2])
        headers = [(b"x-h-%d" % i, b"v" * 100) for i in range(count)]
        await respond(send, str(len(scope["headers"])).encode(), headers)
    else:
        await respond(send, b"hello")
