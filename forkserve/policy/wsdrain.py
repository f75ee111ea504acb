"""How a draining worker paces its WebSocket goodbyes: how many to close on each tick.

A worker that drains (reload, scale-down, recycling, shutdown) used to close every WebSocket at
once with 1012, and every client reconnected in the same instant: for a moment nobody was
connected, and the reconnects arrived as one storm. Instead the worker closes an even share of
what is still open on each tick, so the closes are spread over ``--ws-drain-period`` and the
clients move to the new workers a few at a time.

What is due is recomputed every tick from what is open now and what was closed, rather than fixed
at the start: clients that leave on their own, or a WebSocket upgraded on a kept-alive connection
during the drain, are absorbed without closing the rest early or late.

The window is bounded by ``--graceful-timeout``: the master kills a draining worker at that
deadline, so the last close must leave ``CLOSE_MARGIN`` for the closing handshakes, the lifespan
shutdown and the exit.
"""

from __future__ import annotations

import math

# Time kept after the last paced close, inside --graceful-timeout.
CLOSE_MARGIN = 1.0
# How often a draining worker closes its next share.
TICK = 0.05


def window(period: float, graceful_timeout: float) -> float:
    """The drain window: --ws-drain-period, shortened to end CLOSE_MARGIN before the kill."""
    return max(0.0, min(period, graceful_timeout - CLOSE_MARGIN))


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
