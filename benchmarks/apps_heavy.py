"""A heavy-import app: a registry of 300,000 small objects built at import, touched by each request
(issue 19's memory goal). It stands for an app whose modules, caches and tables are large.

What it measures is copy-on-write: a pre-fork server that imports the app once (forkserve's
zygote, gunicorn ``--preload``) shares the registry's pages between workers until something
writes to them; reading an object writes its reference count. Each request reads a window of
``TOUCH`` objects and the window moves on, so a worker that has served ``REGISTRY_SIZE / TOUCH``
requests has touched every object once, as a real app's workers do over time. ``/`` answers like
benchmarks.apps; ``/item`` is measured.
"""

from __future__ import annotations

from typing import NamedTuple

from benchmarks.apps import Message, Receive, Scope, Send
from benchmarks.apps import app as hello

REGISTRY_SIZE = 300_000
TOUCH = 1_000  # objects read per request
PATH = "/item"


class Entry(NamedTuple):
    key: str
    value: int
    tags: tuple[str, ...]


REGISTRY: dict[str, Entry] = {
    f"entry-{i}": Entry(f"entry-{i}", i, (f"t{i % 7}", f"g{i % 13}")) for i in range(REGISTRY_SIZE)
}
_KEYS = list(REGISTRY)
_cursor = 0


def _touch() -> int:
    global _cursor
    start, _cursor = _cursor, (_cursor + TOUCH) % REGISTRY_SIZE
    return sum(REGISTRY[key].value for key in _KEYS[start : start + TOUCH])


def _answer(total: int) -> tuple[Message, Message]:
    body = b"%d" % total
    start: Message = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
    }
    return start, {"type": "http.response.body", "body": body}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http" or scope["path"] != PATH:
        await hello(scope, receive, send)  # lifespan, and "/" for the harness's probe
        return
    start, body = _answer(_touch())
    await send(start)
    await send(body)
