"""An app whose lifecycle hooks append one JSON line each to $HOOK_LOG; $HOOK_FAIL names one that raises."""

import asyncio
import dataclasses
import json
import os

import forkserve


def record(name, info):
    if os.environ.get("HOOK_FAIL") == name:
        raise RuntimeError(f"{name} was told to fail")
    fields = {"hook": name, "pid": os.getpid()}
    if isinstance(info, forkserve.WorkerInfo):
        fields.update(dataclasses.asdict(info))
    else:
        fields.update(workers=info.workers, generation=info.generation, master=info.pid)
    fields["env"] = {k: v for k, v in os.environ.items() if k.startswith("FORKSERVE_")}
    with open(os.environ["HOOK_LOG"], "a") as log:
        log.write(json.dumps(fields) + "\n")


def on_starting(info):
    record("on_starting", info)


def on_reload(info):
    record("on_reload", info)


def post_fork(info):
    record("post_fork", info)


async def worker_ready(info):
    await asyncio.sleep(0)
    record("worker_ready", info)


def worker_exit(info):
    record("worker_exit", info)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = json.dumps(dataclasses.asdict(forkserve.worker_info())).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
