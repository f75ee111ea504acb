"""Closing a WebSocket because its worker is leaving: code 1012, through the protocol's ASGI send.

uvicorn's own way, ``protocol.shutdown()``, writes the close frame at once and closes the socket
without waiting for the client's reply, whatever the app was doing: a send the app had waiting
for the socket to drain (flow control) then fails, and the client sees its echo refused. forkserve
instead sends the protocol the same ``websocket.close`` message the app itself would send, with
code 1012 ("service restart"). On each of uvicorn's WebSocket classes that path

* waits until the socket is writable, so the message being sent goes out whole before the close;
* puts ``websocket.disconnect`` with the code in the app's receive queue (websockets-sansio,
  wsproto; the legacy websockets class reports 1012 from the client's echo), so the app can
  unsubscribe cleanly;
* does the closing handshake: it waits for the client's close frame (uvicorn's close timeout)
  before it closes the socket, so the client sees a clean close with 1012.

The attributes read here (``handshake_complete``, ``initial_response``, ``close_sent``,
``handshake_completed_event``, the legacy class's ``asgi_send``) are uvicorn internals, listed in
``forkserve.http.uvicorn_api``'s docstring; tests/integration/test_ws_drain.py runs them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

SERVICE_RESTART = 1012


def websockets_of(connections: Iterable[Any], ws_class: type[Any] | None) -> list[Any]:
    """The connections that are WebSockets (of WS_CLASS, the --ws class), accepted and not closing."""
    if ws_class is None:
        return []
    return [c for c in connections if isinstance(c, ws_class) and _open(c)]


def _open(connection: Any) -> bool:
    event = getattr(connection, "handshake_completed_event", None)
    if event is not None:  # the legacy websockets class
        return bool(event.is_set()) and not connection.closed_event.is_set()
    accepted = getattr(connection, "handshake_complete", False)
    refused = getattr(connection, "initial_response", None) is not None
    return bool(accepted) and not refused and not getattr(connection, "close_sent", False)


async def close_for_restart(connection: Any) -> None:
    """Close CONNECTION with 1012 once the message it is sending has gone (never raises)."""
    send = getattr(connection, "asgi_send", None) or connection.send
    # The client may be gone, or the protocol closed under us by the final shutdown: nothing to do.
    with contextlib.suppress(Exception):
        await send({"type": "websocket.close", "code": SERVICE_RESTART, "reason": "service restart"})
