"""The PROXY protocol parser (forkserve.http.proxyproto): tables of headers, hostile bytes, and a
Hypothesis property against an encoder written here from the specification."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from forkserve.http.proxied import TrustedPeers
from forkserve.http.proxyproto import (
    NEED_MORE,
    SIGNATURE_V2,
    V1_MAX_LENGTH,
    V2_MAX_LENGTH,
    Header,
    Invalid,
    announces_header,
    parse,
)

REQUEST = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"


def v2(command: int, family: int, payload: bytes, version: int = 2, length: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    return SIGNATURE_V2 + bytes([version << 4 | command, family]) + struct.pack("!H", size) + payload


def v2_inet(source: str, port: int, tlvs: bytes = b"") -> bytes:
    src = ipaddress.ip_address(source)
    dst = ipaddress.ip_address("10.0.0.1" if src.version == 4 else "::1")
    family = 0x11 if src.version == 4 else 0x21
    return v2(1, family, src.packed + dst.packed + struct.pack("!HH", port, 443) + tlvs)


V6 = "2001:db8::7"
SSL_TLV = b"\x20" + struct.pack("!H", 5) + b"\x01\x00\x00\x00\x00"

# (bytes, what parse says), the header always followed by a request so the length is checked.
VALID = [
    (b"PROXY TCP4 192.0.2.1 10.0.0.1 56324 443\r\n", ("192.0.2.1", 56324)),
    (b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", ("255.255.255.255", 65535)),
    (b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n", ("0.0.0.0", 0)),
    (f"PROXY TCP6 {V6} ::1 1 2\r\n".encode(), (V6, 1)),
    (b"PROXY TCP6 2001:DB8:0:0:0:0:0:7 ::1 1 2\r\n", (V6, 1)),
    # A dual-stack proxy's IPv4 client, as the app would see it from a direct connection.
    (b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n", ("192.0.2.1", 1)),
    (b"PROXY UNKNOWN\r\n", None),
    (b"PROXY UNKNOWN " + b"f" * 50 + b" whatever\r\n", None),
    (v2_inet("192.0.2.1", 56324), ("192.0.2.1", 56324)),
    (v2_inet(V6, 9), (V6, 9)),
    (v2_inet("::ffff:192.0.2.1", 9), ("192.0.2.1", 9)),
    (v2_inet("192.0.2.1", 7, tlvs=SSL_TLV), ("192.0.2.1", 7)),
    (v2(0, 0x00, b""), None),  # LOCAL: the proxy's own health check
    (v2(0, 0x11, bytes(12)), None),  # LOCAL with an address block: skipped, not used
    (v2(1, 0x00, b""), None),  # UNSPEC
    (v2(1, 0x31, bytes(216)), None),  # AF_UNIX: keep the socket's own address
    (v2(1, 0x12, bytes(12)), None),  # UDP: the specification's fallback to UNSPEC
    (v2(1, 0x11, bytes(V2_MAX_LENGTH)), ("0.0.0.0", 0)),
]

INVALID = [
    (b"GET / HTTP/1.1\r\n", "no PROXY protocol header"),
    (b"PROXY\r\n", "no PROXY protocol header"),
    (b"PROXY TCP4 192.0.2.1 10.0.0.1 56324 443\n", "CR or LF"),
    (b"PROXY TCP4 192.0.2.1 10.0.0.1 56324 443\r\r\n", "CR or LF"),
    (b"PROXY TCP4 192.0.2.1\n10.0.0.1 1 2\r\n", "CR or LF"),
    (b"PROXY TCP5 192.0.2.1 10.0.0.1 1 2\r\n", "protocol 'TCP5'"),
    (b"PROXY  TCP4 192.0.2.1 10.0.0.1 1 2\r\n", "protocol ''"),
    (b"PROXY TCP4 192.0.2.1  10.0.0.1 1 2\r\n", "single spaces"),
    (b"PROXY TCP4 192.0.2.1 10.0.0.1 1\r\n", "single spaces"),
    (b"PROXY TCP4 192.0.2.1 10.0.0.1 1 2 \r\n", "single spaces"),
    (b"PROXY TCP4 192.0.2.01 10.0.0.1 1 2\r\n", "not an IPv4 address"),
    (b"PROXY TCP4 256.0.2.1 10.0.0.1 1 2\r\n", "not an IPv4 address"),
    (b"PROXY TCP4 ::1 10.0.0.1 1 2\r\n", "not an IPv4 address"),
    (b"PROXY TCP6 192.0.2.1 ::1 1 2\r\n", "not an IPv6 address"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "not an IPv6 address"),
    (b"PROXY TCP4 192.0.2.1 10.0.0.1 01 2\r\n", "port '01'"),
    (b"PROXY TCP4 192.0.2.1 10.0.0.1 65536 2\r\n", "port '65536'"),
    (b"PROXY TCP4 192.0.2.1 10.0.0.1 -1 2\r\n", "port '-1'"),
    (b"PROXY TCP4 192.0.2.1 10.0.0.1 +1 2\r\n", "port '+1'"),
    (b"PROXY TCP4 192.0.2.1 10.0.0.1 \xd9\xa1 2\r\n", "not ASCII"),
    # Longer than any valid line, with no CRLF in the first 107 bytes.
    (b"PROXY UNKNOWN " + b"f" * 200 + b"\r\n", "no CRLF within 107"),
    (b"PROXY " + b"x" * (V1_MAX_LENGTH - 6), "no CRLF within 107"),
    (v2(1, 0x11, bytes(12), version=1), "version 1"),
    (v2(1, 0x11, bytes(12), version=3), "version 3"),
    (v2(2, 0x11, bytes(12)), "command 2"),
    (v2(0xF, 0x11, bytes(12)), "command 15"),
    (v2(1, 0x41, bytes(12)), "0x41 is unassigned"),
    (v2(1, 0x13, bytes(12)), "0x13 is unassigned"),
    (v2(1, 0x11, bytes(11)), "11 address bytes for a family that needs 12"),
    (v2(1, 0x21, bytes(12)), "12 address bytes for a family that needs 36"),
    # Oversized: refused from the fixed part alone, before any of it is buffered.
    (v2(1, 0x11, b"", length=V2_MAX_LENGTH + 1), "over forkserve's"),
    (v2(1, 0x11, b"", length=0xFFFF), "over forkserve's"),
]


@pytest.mark.parametrize(("header", "client"), VALID)
def test_a_valid_header_gives_its_client_and_length(header: bytes, client: tuple[str, int] | None) -> None:
    assert parse(header + REQUEST) == Header(len(header), client)


@pytest.mark.parametrize(("header", "client"), VALID)
def test_every_strict_prefix_of_a_valid_header_needs_more(header: bytes, client: object) -> None:
    # A header split across reads at any offset: never a verdict before its last byte.
    for cut in range(len(header)):
        assert parse(header[:cut]) is NEED_MORE, cut
    assert parse(header) == Header(len(header), client)  # type: ignore[arg-type]


@pytest.mark.parametrize(("data", "reason"), INVALID)
def test_hostile_or_broken_headers_are_invalid_with_the_reason(data: bytes, reason: str) -> None:
    result = parse(data + REQUEST)
    assert isinstance(result, Invalid), result
    assert reason in result.reason


def test_an_oversized_v2_length_is_refused_from_the_fixed_part_alone() -> None:
    assert isinstance(parse(v2(1, 0x11, b"", length=0xFFFF)), Invalid)


@pytest.mark.parametrize(
    ("data", "announced"),
    [
        (b"", None),
        (b"PRO", None),
        (b"PROXY", None),
        (b"PROXY ", True),
        (b"PROXY TCP4 1.2.3.4", True),
        (SIGNATURE_V2[:5], None),
        (SIGNATURE_V2, True),
        (b"GET / HTTP/1.1\r\n", False),
        (b"P", None),
        (b"POST", False),
        (b"\r\n\r\nGET", False),
    ],
)
def test_announces_header(data: bytes, announced: bool | None) -> None:
    assert announces_header(data) is announced


@pytest.mark.parametrize(
    ("spec", "host", "trusted"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.2", False),
        ("10.0.0.0/8,127.0.0.1", "10.9.8.7", True),
        ("10.0.0.0/8", "::ffff:10.1.1.1", True),  # an IPv4 peer of a dual-stack socket
        ("::1", "::1", True),
        ("*", "203.0.113.9", True),
        ("*", None, True),
        ("127.0.0.1", None, False),  # a UNIX socket peer
        ("unix:,127.0.0.1", None, True),
        ("127.0.0.1", "not-an-address", False),
        ("", "127.0.0.1", False),
    ],
)
def test_trusted_peers(spec: str, host: str | None, trusted: bool) -> None:
    assert (host in TrustedPeers(spec)) is trusted


# --- the property: whatever a valid sender writes, parse reads back; whatever anyone writes,
# parse answers without raising.

ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None)
ports = st.integers(0, 65535)


def encode_v1(source: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bytes:
    kind = "TCP4" if source.version == 4 else "TCP6"
    destination = "10.0.0.1" if source.version == 4 else "::1"
    return f"PROXY {kind} {source} {destination} {port} 80\r\n".encode()


@given(
    source=st.one_of(ipv4, ipv6),
    port=ports,
    version=st.sampled_from([1, 2]),
    tlvs=st.binary(max_size=64),
    rest=st.binary(max_size=64),
)
def test_property_what_a_sender_writes_is_read_back(
    source: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, version: int, tlvs: bytes, rest: bytes
) -> None:
    header = encode_v1(source, port) if version == 1 else v2_inet(str(source), port, tlvs)
    assert parse(header + rest) == Header(len(header), (str(source), port))
    for cut in range(len(header)):
        assert parse(header[:cut]) is NEED_MORE


@given(st.binary(max_size=300))
@example(SIGNATURE_V2 + b"\x21\x11\xff\xff")
@example(b"PROXY TCP6 :::: ::1 1 2\r\n")
@example(b"PROXY TCP4 1.2.3.4 1.2.3.4 99999999999999999999 1\r\n")
def test_property_any_bytes_get_a_verdict(data: bytes) -> None:
    result = parse(data)
    assert result is NEED_MORE or isinstance(result, (Header, Invalid))
    if isinstance(result, Header):
        assert 0 < result.length <= len(data)


@given(st.sampled_from([SIGNATURE_V2, b"PROXY "]), st.binary(max_size=300))
def test_property_bytes_after_a_signature_get_a_verdict(start: bytes, tail: bytes) -> None:
    result = parse(start + tail)
    assert result is NEED_MORE or isinstance(result, (Header, Invalid))
