"""How a draining worker paces its WebSocket goodbyes: how many to close on each tick.

A worker that drains (reload, scale-down, recycling, shutdown) used to close every WebSocket at
once with 1012, and every client reconnected in the same instant: for a moment nobody was
connected, and the reconnects arrived as one storm. Instead the worker closes an even share of
what is still open on each tick, so the closes are spread over ``--ws-drain-period`` and the
clients move to the new workers a few at a time.

What is due is recomputed every tick from what is open now and what was closed, rather than fixed
at the start: clients that leave on their own, or a WebSocket upgraded on a kept-alive connection
during the drain, are absorbed without closing the rest early or late.

What limits a drain is the rate of reconnects the workers that stay can take, not a duration, so
the default window (``--ws-drain-period auto``) is sized from what the worker holds when it starts
draining: ``open / AUTO_RATE`` seconds, at least ``AUTO_FLOOR``. A fixed default cannot be right
for both 1,000 clients and 4,000: 5 s kept 97% of 1,000 connected, and let 4,000 fall to 21%
(800 reconnects a second were more than a busy 2-core machine absorbed; docs/benchmarks-ws.md). A
number of seconds keeps its meaning, for an operator who knows their rate.

The window is bounded by ``--graceful-timeout``: the master kills a draining worker at that
deadline, so the last close must leave ``CLOSE_MARGIN`` for the closing handshakes, the lifespan
shutdown and the exit. Past ``AUTO_RATE * (graceful_timeout - CLOSE_MARGIN)`` WebSockets a worker
therefore closes faster than the rate; the worker says so in its log.
"""

from __future__ import annotations

import math
from typing import Literal

# Time kept after the last paced close, inside --graceful-timeout.
CLOSE_MARGIN = 1.0
# How often a draining worker closes its next share.
TICK = 0.05
# --ws-drain-period auto: closes a second per draining worker. Measured with 2 workers on a busy
# 2-core machine: 500 per worker over 5 s and 2,000 per worker over 20 s (both 100 a second)
# kept 97% and 98.5% of the clients connected; 2,000 over 5 s (400 a second) kept 21%.
AUTO_RATE = 100.0
# --ws-drain-period auto: the shortest window, so a few WebSockets still leave one by one.
AUTO_FLOOR = 1.0

Period = float | Literal["auto"]


def wanted(period: Period, open_count: int) -> float:
    """The window --ws-drain-period asks for: its seconds, or (auto) OPEN_COUNT paced at AUTO_RATE."""
    if period == "auto":
        return max(AUTO_FLOOR, open_count / AUTO_RATE)
    return period


def window(period: Period, graceful_timeout: float, open_count: int) -> float:
    """The drain window for a worker holding OPEN_COUNT WebSockets, ending CLOSE_MARGIN before the kill."""
    return max(0.0, min(wanted(period, open_count), graceful_timeout - CLOSE_MARGIN))


def closes_now(open_count: int, closed: int, *, elapsed: float, window: float) -> int:
    """How many of the OPEN_COUNT WebSockets still open to close now, CLOSED having been closed so far.

    The n WebSockets seen (open now plus closed so far) are due at even steps over the window,
    the i-th at ``i * window / n`` (the first at once), so every client is closed by the end.
    """
    total = open_count + closed
    if open_count <= 0:
        return 0
    if elapsed >= window:
        return open_count
    due = min(total, math.floor(total * elapsed / window) + 1)
    return max(0, min(open_count, due - closed))
