"""Messages between the master and a zygote (and the zygote's workers), one JSON object each.

The channel is a ``SOCK_SEQPACKET`` socketpair: every send is one whole message, so the zygote and
each of its workers (which inherit the zygote's end) can all write to the master without framing or
interleaving. Messages are small (well under a page).

    master -> zygote   {"op": "spawn", "worker_id": 3, "slot": 5, "generation": 2}
    zygote -> master   {"op": "loaded"}                       app imported; ready to fork
                       {"op": "failed", "message": ..., "detail": ..., "exit_code": 3}
                       {"op": "spawned", "slot": 5, "pid": 1234}
                       {"op": "spawn_failed", "slot": 5, "errno": 11, "error": ...}  the fork failed
    worker -> master   {"op": "ready", "slot": 5, "pid": 1234}       lifespan done; serving
                       {"op": "recycle", "slot": 5, "pid": 1234}     --max-requests reached
"""

from __future__ import annotations

import enum
import json
import socket
from typing import Any

MAX_MESSAGE = 64 * 1024


class Op(str, enum.Enum):
    """A message's ``op``; a str, so it is written to JSON as its value."""

    SPAWN = "spawn"
    LOADED = "loaded"
    FAILED = "failed"
    SPAWNED = "spawned"
    SPAWN_FAILED = "spawn_failed"
    READY = "ready"
    RECYCLE = "recycle"


def channel_pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.send(json.dumps(message, separators=(",", ":")).encode())


def receive(sock: socket.socket) -> dict[str, Any] | None:
    """One message, or None when every writer on the other side has closed."""
    data = sock.recv(MAX_MESSAGE)
    if not data:
        return None
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError(f"malformed message {data[:80]!r}")
    return message
