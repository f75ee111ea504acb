"""The PROXY protocol's header (HAProxy's, versions 1 and 2), parsed: bytes in, a verdict out.

A proxy that forwards TCP (HAProxy's ``send-proxy``/``send-proxy-v2``, nginx's ``proxy_protocol``
in a ``stream`` block, cloud load balancers) writes one header before the client's first byte,
naming the client it accepted the connection from. ``parse`` reads it from the bytes received so
far and says one of three things: the header is complete (``Header``: its length, and the client
to use), more bytes are needed (``NEED_MORE``), or this is not a header the specification allows
(``Invalid``, with the reason). It never raises and never looks past what it was given, so the
caller can feed it each read concatenated with the last (``forkserve.http.proxied`` does).

The rules, from the specification (haproxy's doc/proxy-protocol.txt):

* v1 is one text line, ``PROXY TCP4|TCP6 src dst sport dport\\r\\n`` or ``PROXY UNKNOWN ...\\r\\n``,
  at most 107 bytes with its CRLF. Exactly one space between fields, canonical addresses, no
  leading zeros, a bare CR or LF is an error. UNKNOWN: keep the connection's own addresses.
* v2 is binary: a 12-byte signature, version 2 and a command (LOCAL or PROXY), a family and
  transport byte, a 16-bit length, then that many bytes of addresses and TLVs. LOCAL (a health
  check from the proxy itself), UNSPEC, AF_UNIX and datagram families keep the connection's own
  addresses (the specification's fallback); TCP over IPv4 or IPv6 gives the client address.
  Unassigned versions, commands, families and transports are errors.

A v2 length is refused past ``V2_MAX_LENGTH`` (the address block and TLVs of any real proxy fit
with room to spare), so a peer cannot make a connection buffer 64 KiB before its first request.
TLVs are skipped: none changes what forkserve does (the SSL TLV could set the scheme; see
docs/security.md).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

SIGNATURE_V2 = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
# The longest v1 line the specification allows, CRLF included ("PROXY UNKNOWN" with two full IPv6
# addresses and ports).
V1_MAX_LENGTH = 107
V2_FIXED = 16
# The bytes after v2's fixed part: a UNIX address block is 216, HAProxy's TLVs a few hundred more.
V2_MAX_LENGTH = 4096
_PORT = re.compile(r"0|[1-9][0-9]{0,4}")
# v2's fourth byte: (family, transport) -> size of the address block, for those that name a client.
_V2_TCP = {0x11: 12, 0x21: 36}


@dataclass(frozen=True)
class Header:
    length: int  # the header's bytes; the connection's own data starts after them
    # The client the proxy accepted from, or None to keep the connection's own peer address
    # (v1 UNKNOWN, v2 LOCAL, UNSPEC, AF_UNIX, datagram).
    client: tuple[str, int] | None


@dataclass(frozen=True)
class Invalid:
    reason: str


class NeedMore:
    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE = NeedMore()

Result = Header | Invalid | NeedMore


def parse(data: bytes) -> Result:
    """The PROXY header at the start of DATA (everything received so far on the connection)."""
    if data.startswith(SIGNATURE_V2):
        return _parse_v2(data)
    if data.startswith(V1_PREFIX):
        return _parse_v1(data)
    if SIGNATURE_V2.startswith(data) or V1_PREFIX.startswith(data):
        return NEED_MORE
    return Invalid("no PROXY protocol header (neither v1's 'PROXY ' nor v2's signature)")


def announces_header(data: bytes) -> bool | None:
    """Whether DATA begins like a PROXY header; None while it is too short to tell."""
    for start in (SIGNATURE_V2, V1_PREFIX):
        if data.startswith(start):
            return True
        if start.startswith(data):
            return None
    return False


def _parse_v1(data: bytes) -> Result:
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    line = data[: V1_MAX_LENGTH if end < 0 else end]
    if end < 0 and line.endswith(b"\r") and len(data) < V1_MAX_LENGTH:
        line = line[:-1]  # the read ended between CR and LF
    if b"\r" in line or b"\n" in line:
        return Invalid("v1: a CR or LF inside the line (it must end with CRLF)")
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            return Invalid(f"v1: no CRLF within {V1_MAX_LENGTH} bytes")
        return NEED_MORE
    try:
        fields = line.decode("ascii").split(" ")
    except UnicodeDecodeError:
        return Invalid("v1: a byte that is not ASCII")
    length = end + 2
    if fields[1] == "UNKNOWN":
        return Header(length, None)  # the rest of an UNKNOWN line is ignored, as the spec says
    if fields[1] not in ("TCP4", "TCP6"):
        return Invalid(f"v1: protocol {fields[1][:8]!r} (expected TCP4, TCP6 or UNKNOWN)")
    if len(fields) != 6:
        return Invalid("v1: expected 'PROXY TCPn SRC DST SPORT DPORT' with single spaces")
    family = socket.AF_INET if fields[1] == "TCP4" else socket.AF_INET6
    source, destination, source_port, destination_port = fields[2:]
    addresses = [_packed(family, address) for address in (source, destination)]
    for address, packed in zip((source, destination), addresses, strict=True):
        if packed is None:
            return Invalid(f"v1: {address[:40]!r} is not an IPv{fields[1][3]} address as the spec writes it")
    for port in (source_port, destination_port):
        if not _PORT.fullmatch(port) or int(port) > 65535:
            return Invalid(f"v1: port {port[:8]!r} is not 0-65535 without leading zeros")
    return Header(length, (_host(addresses[0]), int(source_port)))  # type: ignore[arg-type]


def _packed(family: int, text: str) -> bytes | None:
    # inet_pton is the strict grammar: no leading zeros in IPv4, no IPv6 scope id.
    try:
        return socket.inet_pton(family, text)
    except (OSError, ValueError):
        return None


def _parse_v2(data: bytes) -> Result:
    if len(data) < V2_FIXED:
        return NEED_MORE
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        return Invalid(f"v2: version {version} (only 2 exists)")
    if command > 1:
        return Invalid(f"v2: command {command} (expected 0 LOCAL or 1 PROXY)")
    family_transport = data[13]
    if family_transport >> 4 > 3 or family_transport & 0x0F > 2:
        return Invalid(f"v2: address family and transport byte 0x{family_transport:02x} is unassigned")
    size = int.from_bytes(data[14:16], "big")
    if size > V2_MAX_LENGTH:
        return Invalid(f"v2: a {size}-byte address block is over forkserve's {V2_MAX_LENGTH}")
    length = V2_FIXED + size
    if len(data) < length:
        return NEED_MORE
    address_size = _V2_TCP.get(family_transport)
    if command == 0 or address_size is None:
        return Header(length, None)
    if size < address_size:
        return Invalid(f"v2: {size} address bytes for a family that needs {address_size}")
    half = (address_size - 4) // 2
    port_at = V2_FIXED + 2 * half
    source = _host(data[V2_FIXED : V2_FIXED + half])
    return Header(length, (source, int.from_bytes(data[port_at : port_at + 2], "big")))


_V4_MAPPED = bytes(10) + b"\xff\xff"


def _host(packed: bytes) -> str:
    """An address in the form the app would see from a direct connection."""
    if len(packed) == 4:
        return socket.inet_ntop(socket.AF_INET, packed)
    if packed.startswith(_V4_MAPPED):
        # A dual-stack proxy writes an IPv4 client as ::ffff:a.b.c.d.
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return socket.inet_ntop(socket.AF_INET6, packed)
