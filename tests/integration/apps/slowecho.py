"""Answers with its request's path after ~100 µs of CPU work with no await: a slow app's handler,
so the fast protocol holds each response to the end of the loop's turn (HOLD_AFTER)."""

import time


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    deadline = time.perf_counter() + 100e-6
    while time.perf_counter() < deadline:
        pass
    body = scope["path"].encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})
