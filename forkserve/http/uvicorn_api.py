"""Every name forkserve takes from uvicorn, and what it relies on each for: the one place to check
when uvicorn changes (the rest of forkserve imports these names from here, never from uvicorn).

Public API (documented by uvicorn; a change would be announced):

- ``Config``: the worker builds one per generation in the zygote (``load()`` imports the app and
  the protocol classes before the fork); the protocols read ``loaded_app``, ``root_path``,
  ``timeout_keep_alive``, ``limit_concurrency``, ``access_log`` and ``server_header`` from it.
- ``Server``: ``forkserve.worker.worker.WorkerServer`` subclasses it and serves on inherited
  sockets (``serve(sockets=...)``). Relied on beyond the documented surface: the methods it
  overrides and extends (``capture_signals``, so forkserve owns TERM/INT/QUIT; ``startup``;
  ``shutdown``) and the attributes ``should_exit``, ``force_exit`` and ``server_state``.
- ``import_from_string`` and ``ImportFromStringError``: loading ``module:attr`` in the zygote, with
  uvicorn's readable messages (``Attribute "app" not found in module "main".``).
- ``ProxyHeadersMiddleware``: recognised around the loaded app, so forkserve's own wrappers go
  inside it and the fast protocol can take its place (``forkserve.http.protocol.wrap_app``); the
  fast protocol asks its ``trusted_hosts`` whether a peer may set the client address.
- ``TRACE_LOG_LEVEL``: the level uvicorn's protocols log their trace lines at.
- ``Config.ws_protocol_class``: uvicorn's WebSocket protocol classes (``--ws``). The fast protocol
  hands an upgraded connection to one as uvicorn's own HTTP protocols do: built with
  ``config``/``server_state``/``app_state``, given the transport, then fed the request's head.

Internals (no compatibility promise: a change shows up in tests/protocol, which runs uvicorn's own
protocol tests against forkserve's classes):

- ``asyncio_run`` (``uvicorn._compat``): ``asyncio.run`` with a ``loop_factory`` on every Python
  forkserve supports; the worker runs its server with it, as ``uvicorn.Server.run`` does.
- ``H11Protocol``, ``HttpToolsProtocol``: the HTTP/1.1 protocol classes of ``--http h11`` and
  ``--http httptools``, subclassed (``__init__`` and all) with ``DrainingMixin``. Relied on: their
  ``connection_made``/``data_received``/``shutdown``/``timeout_keep_alive_handler`` flow, their
  parser callbacks (httptools: ``on_header``, ``on_headers_complete``, ``on_body``,
  ``on_message_complete``; h11: ``conn.their_state``), and the attributes ``transport``,
  ``cycle``, ``loop``, ``logger``, ``server_state``, ``timeout_keep_alive`` and
  ``timeout_keep_alive_task``. The default ``--http fast`` class (``forkserve.http.fast``) is
  forkserve's own ``asyncio.Protocol`` and takes none of this: uvicorn's httptools class is its
  peer oracle in tests/protocol, no longer its base.
- ``ServerState``: the shared per-worker state every protocol registers its connections and
  tasks in, and whose ``default_headers`` (date, server) the server refreshes once a second.
- The WebSocket protocol classes (``Config.ws_protocol_class``, never imported by name): a draining
  worker counts their instances in ``ServerState.connections`` and closes each with 1012 by calling
  its ASGI send (``send``; ``asgi_send`` on the legacy websockets class) with ``websocket.close``.
  ``forkserve.http.wsclose`` reads ``handshake_complete``, ``initial_response`` and ``close_sent``
  (websockets-sansio, wsproto) or ``handshake_completed_event`` and ``closed_event`` (legacy) to
  skip those not yet accepted or already closing.
- ``zttp_protocols()``: uvicorn's zttp HTTP/1.1 and HTTP/2 protocols and its ALPN dispatcher
  (``--http zttp``); imported on demand because zttp is optional.

httptools is optional too (no wheel on some platforms): without it the httptools names are
absent and ``HAS_HTTPTOOLS`` is False; h11 serves instead.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from uvicorn import Config, Server
from uvicorn._compat import asyncio_run
from uvicorn.importer import ImportFromStringError, import_from_string
from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

HAS_HTTPTOOLS = importlib.util.find_spec("httptools") is not None
if HAS_HTTPTOOLS or TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def zttp_protocols() -> tuple[type[Any], type[Any], type[Any]]:
    """(the ALPN/h2c dispatcher, the HTTP/1.1 protocol, the HTTP/2 protocol) of ``--http zttp``."""
    from uvicorn.protocols.http.auto_zttp_impl import AutoZttpProtocol
    from uvicorn.protocols.http.zttp_h2_impl import ZttpH2Protocol
    from uvicorn.protocols.http.zttp_impl import ZttpProtocol

    return AutoZttpProtocol, ZttpProtocol, ZttpH2Protocol


__all__ = [
    "HAS_HTTPTOOLS",
    "TRACE_LOG_LEVEL",
    "Config",
    "H11Protocol",
    "HttpToolsProtocol",
    "ImportFromStringError",
    "ProxyHeadersMiddleware",
    "Server",
    "ServerState",
    "asyncio_run",
    "import_from_string",
    "zttp_protocols",
]
