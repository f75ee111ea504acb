"""A draining worker's WebSocket goodbye, spread over the drain window.

Theory of operation. When a worker drains with WebSockets open, it first stops taking new
connections (they go to the other workers from now on) and asks its kept-alive HTTP connections to
close after their next response. Then, every ``TICK``, it asks ``policy.wsdrain.closes_now`` how
many of the WebSockets still open are due, and closes those with 1012 (``http.wsclose``: after the
message being sent, with ``websocket.disconnect`` to the app, and the closing handshake). Clients
therefore reconnect, to the new workers, a few at a time over the drain window, never all in one
instant. The window is ``policy.wsdrain.window`` of ``--ws-drain-period`` and the WebSockets held
when the drain starts (by default it grows with them). Once every WebSocket is closed (or the
window is over) it waits briefly for the closing handshakes, and uvicorn's shutdown does the rest
as before.

With no WebSocket open this does nothing, so an HTTP-only worker drains exactly as it did.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from forkserve.http.wsclose import close_for_restart, websockets_of
from forkserve.policy.wsdrain import CLOSE_MARGIN, TICK, Period, closes_now, wanted, window

logger = logging.getLogger("forkserve")


def count(connections: Iterable[Any], ws_class: type[Any] | None) -> int:
    """Open WebSockets among CONNECTIONS (for the scoreboard: cheap, once a tick)."""
    if ws_class is None:
        return 0
    return sum(1 for c in connections if isinstance(c, ws_class))


async def drain(
    connections: set[Any], ws_class: type[Any] | None, period: Period, graceful_timeout: float
) -> None:
    """Close the WebSockets among CONNECTIONS (uvicorn's live set) with 1012, over the drain window."""
    if not websockets_of(connections, ws_class):
        return
    for connection in list(connections):
        if hasattr(connection, "draining") and not connection.draining:
            connection.shutdown()  # HTTP keep-alive: Connection: close on its next response
    start = time.monotonic()
    told: set[Any] = set()
    closing: set[asyncio.Task[None]] = set()
    first = len(websockets_of(connections, ws_class))
    span = window(period, graceful_timeout, first)
    logger.info("closing %d WebSockets with 1012 over %.1f s (--ws-drain-period %s)", first, span, period)
    if span < wanted(period, first):
        logger.warning(
            "--ws-drain-period %s asks for %.1f s, cut to %.1f s to end before --graceful-timeout %g: "
            "raise --graceful-timeout to pace these closes",
            period, wanted(period, first), span, graceful_timeout,
        )  # fmt: skip
    while True:
        waiting = [c for c in websockets_of(connections, ws_class) if c not in told]
        if not waiting:
            break
        due = closes_now(len(waiting), len(told), elapsed=time.monotonic() - start, window=span)
        for connection in waiting[:due]:
            told.add(connection)
            task = asyncio.ensure_future(close_for_restart(connection))
            closing.add(task)
            task.add_done_callback(closing.discard)
        await asyncio.sleep(TICK)
    # The closing handshakes: each client echoes the close, then the socket goes.
    deadline = time.monotonic() + CLOSE_MARGIN / 2
    while (closing or any(c in connections for c in told)) and time.monotonic() < deadline:
        await asyncio.sleep(TICK / 5)
    logger.info("closed %d WebSockets in %.1f s", len(told), time.monotonic() - start)
