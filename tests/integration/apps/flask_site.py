"""A Flask (WSGI) app: hello, a streamed upload, a streamed download, a slow request."""

from __future__ import annotations

import hashlib
import os
import threading
import time

from flask import Flask, Response, request

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return f"flask {os.getpid()} {threading.current_thread().name}"


@app.post("/upload")
def upload() -> dict[str, object]:
    # Read as it arrives: the whole body is never in memory at once.
    digest = hashlib.sha256()
    size = 0
    while chunk := request.stream.read(65536):
        digest.update(chunk)
        size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


@app.get("/download")
def download() -> Response:
    chunks = int(request.args.get("chunks", "4"))
    return Response((b"x" * 65536 for _ in range(chunks)), mimetype="application/octet-stream")


@app.get("/ticks")
def ticks() -> Response:
    """A long response that makes progress: a chunk every EVERY seconds (server-sent events, say)."""
    count, every = int(request.args.get("n", "4")), float(request.args.get("every", "0.5"))

    def chunks():  # type: ignore[no-untyped-def]
        for number in range(count):
            time.sleep(every)
            yield f"tick {number}\n".encode()

    return Response(chunks(), mimetype="text/plain")


@app.get("/sleep")
def sleep() -> str:
    time.sleep(float(request.args.get("s", "1")))
    return "slept"
