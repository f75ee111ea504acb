"""Which protocol class a worker serves with (--http), with the header limits set on it.

Apart from the protocols themselves, so that ``protocol.py`` (the drain, for every class) and
``fast.py`` (which builds on it) depend one way only.
"""

from __future__ import annotations

from typing import Any

from forkserve.http.protocol import DrainingH11Protocol, DrainingHttpToolsProtocol, DrainingMixin
from forkserve.http.uvicorn_api import zttp_protocols


def _zttp_class(limits: dict[str, Any]) -> type[Any]:
    """HTTP/1.1 or HTTP/2 on uvicorn's zttp protocols, chosen per connection (docs/http.md).

    uvicorn's dispatcher picks HTTP/2 by ALPN over TLS (its ``alpn_protocols`` end up on the TLS
    context) or by the h2c preface in cleartext; this one hands HTTP/1.1 connections to the
    draining class instead of uvicorn's plain one. HTTP/2 connections are uvicorn's.
    """
    AutoZttpProtocol, ZttpProtocol, ZttpH2Protocol = zttp_protocols()

    http1 = type("DrainingZttpProtocol", (DrainingMixin, ZttpProtocol), limits)

    # A base known only at run time: zttp is optional, so uvicorn_api imports it on demand.
    class ZttpAutoProtocol(AutoZttpProtocol):  # type: ignore[misc,valid-type]
        http1_class = http1

        def _switch(self, http2: bool, initial_data: bytes = b"") -> None:
            chosen = ZttpH2Protocol if http2 else self.http1_class
            protocol = chosen(
                config=self.config, server_state=self.server_state, app_state=self.app_state, _loop=self.loop
            )
            self.transport.set_protocol(protocol)
            protocol.connection_made(self.transport)
            if initial_data:
                protocol.data_received(initial_data)

    return ZttpAutoProtocol


def protocol_base(name: str) -> type[Any]:
    """The draining HTTP/1.1 protocol class for an --http value other than zttp."""
    if name == "h11" or (name == "auto" and DrainingHttpToolsProtocol is None):
        return DrainingH11Protocol
    if DrainingHttpToolsProtocol is None:
        raise ImportError(f"--http {name} needs httptools, which is not installed")
    if name == "httptools":
        return DrainingHttpToolsProtocol
    # Imported only when chosen: it needs httptools, which is optional.
    from forkserve.http.fast import DrainingFastProtocol

    return DrainingFastProtocol


def http_protocol_class(
    name: str,
    *,
    header_timeout: float = 10.0,
    max_header_size: int = 65536,
    max_header_count: int = 100,
    max_request_size: int = 0,
    max_request_line: int = 0,
) -> type[Any]:
    """The protocol class for --http (auto = fast where httptools is installed, else h11)."""
    # A subclass per configuration, so the limits are class attributes the hot path reads directly.
    limits = {
        "header_timeout": header_timeout,
        "max_header_size": max_header_size,
        "max_header_count": max_header_count,
        "max_request_size": max_request_size,
        "max_request_line": max_request_line,
        # The fast class checks the per-request limits only when one is set (or a head has too
        # many headers): no call per request for the defaults.
        "request_limits": bool(max_request_size or max_request_line),
    }
    if name == "zttp":
        return _zttp_class(limits)
    base = protocol_base(name)
    return type(base.__name__, (base,), limits)
