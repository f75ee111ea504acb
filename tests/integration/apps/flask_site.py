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


@app.get("/sleep")
def sleep() -> str:
    time.sleep(float(request.args.get("s", "1")))
    return "slept"
