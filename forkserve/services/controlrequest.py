"""A control request, checked before anything acts on it.

Each request is one line of JSON. ``parse`` turns a line into a ``Request`` or raises
``BadRequest`` with one sentence for the client; nothing reaches an action unchecked. The checks
come in the order that keeps each cheap: the size (the reader already stops at ``MAX_REQUEST``),
then the nesting depth, counted in one pass over the bytes before ``json.loads`` (which recurses
and dies of ``RecursionError`` on ``[`` x 100,000), then the types of the fields each op takes.
A ``timeout`` is a finite number of seconds, above 0 and at most a day: ``"nan"`` or ``inf``
would otherwise start a reload and then fail to wait for it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

MAX_REQUEST = 64 * 1024
MAX_DEPTH = 8
MAX_WAIT = 24 * 3600.0
DEFAULT_WAIT = 60.0
OPS = ("status", "reload", "scale", "stop")


class BadRequest(ValueError):
    pass


@dataclass(frozen=True)
class Request:
    op: str
    timeout: float = DEFAULT_WAIT
    to: int | None = None  # scale: the number of workers wanted
    delta: int | None = None  # scale: or the change in it
    graceful: bool = True  # stop


def depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in DATA, not counting brackets inside strings."""
    deepest = level = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # "
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            level += 1
            deepest = max(deepest, level)
        elif byte in (0x5D, 0x7D):
            level -= 1
    return deepest


def parse(line: bytes) -> Request:
    if len(line) > MAX_REQUEST:
        raise BadRequest(f"a request is one line of at most {MAX_REQUEST} bytes")
    if depth(line) > MAX_DEPTH:
        raise BadRequest(f"a request nests at most {MAX_DEPTH} levels deep")
    try:
        document = json.loads(line)
    except (ValueError, RecursionError) as error:
        raise BadRequest(f"unreadable request: {error}") from None
    if not isinstance(document, dict):
        raise BadRequest('a request is a JSON object such as {"op": "status"}')
    op = document.get("op")
    if op not in OPS:
        raise BadRequest(f"unknown op {op!r}: one of {', '.join(OPS)}")
    timeout = _seconds(document.get("timeout"))
    if op == "scale":
        to, delta = _whole(document, "to"), _whole(document, "delta")
        if (to is None) == (delta is None):
            raise BadRequest('scale takes "to": N or "delta": K (whole numbers)')
        return Request(op, timeout, to=to, delta=delta)
    if op == "stop":
        graceful = document.get("graceful", True)
        if not isinstance(graceful, bool):
            raise BadRequest('"graceful" is true or false')
        return Request(op, timeout, graceful=graceful)
    return Request(op, timeout)


def _seconds(value: object) -> float:
    # ctl sends its --timeout; null or absent means the default wait.
    if value is None:
        return DEFAULT_WAIT
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f'"timeout" is a number of seconds, not {json.dumps(value)[:40]}')
    seconds = float(value)
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_WAIT):
        raise BadRequest(f'"timeout" must be above 0 and at most {MAX_WAIT:g} seconds, not {value!r}')
    return seconds


def _whole(document: dict[str, object], key: str) -> int | None:
    value = document.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        shown = json.dumps(value)[:40]
        raise BadRequest(f'scale takes "to": N or "delta": K (whole numbers), not {key}={shown}')
    return value
