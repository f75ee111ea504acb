"""--proxy-protocol: a gate in front of the HTTP protocol that reads the PROXY header first.

Theory of operation. With the flag on, the protocol class a worker's listeners (and hand-off
inbox) create is ``ProxyProtocolGate``, made per worker by ``proxy_protocol_gate`` around the real
class (whichever ``--http`` chose). The gate owns a connection only until its first bytes decide
it; then it creates the real protocol, moves the transport to it (``set_protocol``) and hands
over the bytes after the header. From there on the gate is out of the path: the real protocol,
and a WebSocket protocol it upgrades to, talk to the transport directly, so a connection pays for
the gate once, and with the flag off nothing changes at all.

Who may send a header is ``--forwarded-allow-ips`` (the peers already trusted for
X-Forwarded-For), decided from the socket's own peer address:

* a trusted peer must send a valid header, as HAProxy's ``accept-proxy`` requires: a proxy that
  is configured to send one and does not, or sends a broken one, is misconfigured, and reading
  its bytes as HTTP would credit the proxy's address with the client's requests. Refused (closed);
* any other peer is served as if the flag were off, unless its first bytes are a PROXY header:
  that is a client forging its address, refused (closed).

The client the header names replaces the peer address everywhere the protocols look for it
(``ProxiedTransport`` answers ``peername`` and the socket's ``getpeername()`` with it), so
``scope["client"]``, the access log, ``--limit-concurrency``'s and X-Forwarded-For's trust
checks all see the real client. v2 LOCAL, v1 UNKNOWN and the families with no client keep the
socket's address. ``scope["server"]`` and the scheme stay the socket's own.

While it waits for the header the gate is one of the worker's connections: the worker's
once-a-second sweep closes it after ``--header-timeout`` (``header_overdue``, as for a slow
request head), and a draining worker's ``shutdown()`` is passed on to the real protocol, so a
connection whose header arrives while the worker stops is still answered (``Connection: close``).

Rejected: reading the header inside each HTTP protocol's ``data_received``. It would be four
copies (fast, httptools, h11, zttp), a check per read on the fast path whether the flag is on or
not, and WebSocket upgrades would still see the proxy's address.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from typing import Any

from forkserve.http.proxyproto import Header, Invalid, announces_header, parse

logger = logging.getLogger("forkserve")

# A proxy misconfigured to omit the header makes every connection a refusal: say so, but not
# once per connection.
WARNING_INTERVAL = 10.0


class TrustedPeers:
    """--forwarded-allow-ips as a membership test for a peer's address (None: a UNIX socket)."""

    def __init__(self, spec: str) -> None:
        items = [item.strip() for item in spec.split(",") if item.strip()]
        self.everyone = "*" in items
        self.unix = any(item.startswith("unix:") for item in items)
        self.networks = [
            ipaddress.ip_network(item, strict=False)
            for item in items
            if item != "*" and not item.startswith("unix:")
        ]

        # Decided once per address: the peers are a few proxies, and ip_address() costs microseconds.
        self._decide = functools.lru_cache(maxsize=256)(self._trusts)

    def __contains__(self, host: str | None) -> bool:
        if self.everyone:
            return True
        if host is None:
            return self.unix
        return self._decide(host)

    def _trusts(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # an IPv4 peer of a dual-stack socket
        return any(address in network for network in self.networks)


class PeerSocket:
    """The connection's socket, except that its peer is the client the PROXY header named."""

    def __init__(self, sock: Any, peer: tuple[str, int]) -> None:
        self._sock = sock
        self._peer = peer

    def getpeername(self) -> tuple[str, int]:
        return self._peer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class ProxiedTransport:
    """The real transport, with the PROXY header's client as its peer; writes go straight through."""

    def __init__(self, transport: Any, peer: tuple[str, int]) -> None:
        self._transport = transport
        self._peer = peer
        # Bound once: the per-response path calls the real transport's methods, no lookup here.
        self.write = transport.write
        self.writelines = transport.writelines
        self.is_closing = transport.is_closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        if name == "socket":
            sock = self._transport.get_extra_info("socket")
            return None if sock is None else PeerSocket(sock, self._peer)
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _peer_host(transport: Any) -> str | None:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, (tuple, list)) and peer else None


class ProxyProtocolGate(asyncio.Protocol):
    """Reads (or, from an untrusted peer, refuses) the PROXY header; see the module docstring."""

    # Set per worker by proxy_protocol_gate().
    inner_class: Any = None
    trusted: TrustedPeers = TrustedPeers("")
    header_timeout = 10.0
    _last_warning = -WARNING_INTERVAL

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop
        self.transport: Any = None
        self.peer: str | None = None
        self.peer_trusted = False
        self.received = b""
        self.header_deadline = 0.0
        self.draining = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.peer = _peer_host(transport)
        self.peer_trusted = self.peer in self.trusted
        self.header_deadline = time.monotonic() + self.header_timeout
        self.server_state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)

    def eof_received(self) -> bool | None:
        return None  # closed before the header was complete: close our side too

    def data_received(self, data: bytes) -> None:
        received = self.received + data if self.received else data
        if not self.peer_trusted:
            announced = announces_header(received)
            if announced is None:
                self.received = received
            elif announced:
                self._refuse("sent a PROXY header but is not in --forwarded-allow-ips")
            else:
                self._hand_over(None, received)
            return
        result = parse(received)
        if isinstance(result, Header):
            self._hand_over(result.client, received[result.length :])
        elif isinstance(result, Invalid):
            self._refuse(
                f"is in --forwarded-allow-ips, so must send a PROXY header (--proxy-protocol), "
                f"but sent none that is valid: {result.reason}"
            )
        else:
            self.received = received

    def _hand_over(self, client: tuple[str, int] | None, rest: bytes) -> None:
        transport = self.transport
        self.server_state.connections.discard(self)
        self.received = b""
        protocol = self.inner_class(
            config=self.config, server_state=self.server_state, app_state=self.app_state, _loop=self.loop
        )
        transport.set_protocol(protocol)
        protocol.connection_made(transport if client is None else ProxiedTransport(transport, client))
        if rest and not transport.is_closing():
            protocol.data_received(rest)
        if self.draining and hasattr(protocol, "shutdown"):
            protocol.shutdown()

    def _refuse(self, why: str) -> None:
        self.server_state.connections.discard(self)
        self.received = b""
        self.transport.close()
        now = time.monotonic()
        # A class attribute: one rate for the whole worker, not per connection.
        level = logging.DEBUG
        if now - ProxyProtocolGate._last_warning >= WARNING_INTERVAL:
            level, ProxyProtocolGate._last_warning = logging.WARNING, now
        where = self.peer if self.peer is not None else "a UNIX socket peer"
        logger.log(level, "refused a connection: %s %s", where, why)

    def header_overdue(self, now: float) -> bool:
        """Called by the worker's sweep: close the connection if its PROXY header is late."""
        if now < self.header_deadline or self.transport is None or self.transport.is_closing():
            return False
        self.server_state.connections.discard(self)
        self.transport.close()
        return True

    def shutdown(self) -> None:
        # The worker is draining: the header may still come; the real protocol then answers
        # its request with Connection: close. If it does not come, header_overdue closes it.
        self.draining = True


def proxy_protocol_gate(inner: type[Any], *, trusted: str, header_timeout: float) -> type[Any]:
    """The protocol class for --proxy-protocol: INNER behind a gate (one subclass per worker)."""
    attributes = {"inner_class": inner, "trusted": TrustedPeers(trusted), "header_timeout": header_timeout}
    return type("ProxyProtocolGate", (ProxyProtocolGate,), attributes)
