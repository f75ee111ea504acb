"""Reads the whole request body and answers its length, the worker's pid and the request scheme."""

import asyncio
import os


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(float(scope["query_string"].decode().partition("=")[2] or 1))
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = f"{size} {os.getpid()} {scope['scheme']} {scope['client'][0]}".encode()
    headers = [(b"content-length", str(len(body)).encode())]
    if scope["path"] == "/framed":
        headers.append((b"x-frame-options", b"ALLOW-FROM example.com"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
