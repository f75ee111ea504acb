"""Hypothesis strategies for HTTP/1.1 request streams: valid ones, and mutations of them.

A stream is one to four requests on a connection (pipelined, or a keep-alive sequence: the harness
delivers it in reads, so both happen), each with a method, a target with percent-escapes and a
query, a header set, and a body by content-length or chunked (with chunk extensions and trailers).
Mutations then bend one rule each; ``MUTATIONS`` names them.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12).filter(
    lambda t: t[0].isalnum()
)
# Visible ASCII with inner spaces; never leading or trailing whitespace (that is a mutation).
VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=0, max_size=20).flatmap(
    lambda v: st.just(v) if len(v) < 3 else st.sampled_from([v, v[0] + " " + v[1:], v[:-1] + "\t" + v[-1]])
)
SEGMENT = st.lists(
    st.one_of(
        st.text(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@", max_size=6
        ),
        st.sampled_from(["%20", "%2F", "%41", "%e2%82%ac", "%25", "%3F"]),
    ),
    max_size=3,
).map("".join)
RESERVED = {"host", "content-length", "transfer-encoding", "connection", "expect", "upgrade", "te", "trailer"}
PROXY = st.sampled_from(
    [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-For", "203.0.113.9, 10.0.0.1"),
     ("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "ws")]
)  # fmt: skip


@st.composite
def request(draw: Any, last: bool = False) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    path = "/" + "/".join(draw(st.lists(SEGMENT, max_size=3)))
    if draw(st.booleans()):
        path += "?" + "&".join(f"{k}={v}" for k, v in draw(st.lists(st.tuples(SEGMENT, SEGMENT), max_size=3)))
    headers = [("Host", draw(st.sampled_from(["example.com", "127.0.0.1:8000", "x"])))]
    for name, value in draw(st.lists(st.one_of(st.tuples(TOKEN, VALUE), PROXY), max_size=6)):
        if name.lower() not in RESERVED:
            headers.append((draw(st.sampled_from([name, name.upper(), name.title()])), value))
    body = draw(st.binary(max_size=64))
    framing = draw(st.sampled_from(["length", "chunked"] + (["none"] if not body else [])))
    encoded = body
    if framing == "length":
        headers.append(("Content-Length", str(len(body))))
    elif framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=3))))
        parts = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=False) if body[a:b]]
        encoded = b""
        for part in parts:
            extension = draw(st.sampled_from(["", ";ext", ";ext=1", ';name="quoted value"']))
            size = draw(st.sampled_from(["%x", "%X", "%04x"])) % len(part)
            encoded += f"{size}{extension}\r\n".encode() + part + b"\r\n"
        encoded += b"0\r\n"
        for name, value in draw(st.lists(st.one_of(st.tuples(TOKEN, VALUE), PROXY), max_size=2)):
            encoded += f"{name}: {value}\r\n".encode()
        encoded += b"\r\n"
    if last and draw(st.booleans()):
        headers.append(("Connection", "close"))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    return head.encode() + encoded


@st.composite
def stream(draw: Any) -> bytes:
    count = draw(st.integers(1, 4))
    return b"".join(draw(request(last=i == count - 1)) for i in range(count))


def _replace_nth(data: bytes, old: bytes, new: bytes, n: int) -> bytes:
    positions = [i for i in range(len(data)) if data.startswith(old, i)]
    if not positions:
        return data
    i = positions[n % len(positions)]
    return data[:i] + new + data[i + len(old) :]


def _header_line(data: bytes, n: int) -> int:
    """The offset just after the request line of the first request."""
    return data.index(b"\r\n") + 2


BAD_SIZES = [b"zz\r\n", b"-1\r\n", b"fffffffffffffffff1\r\n"]
BAD_CODINGS = [b"gzip", b"chunked, gzip", b"xchunked"]
MUTATIONS: dict[str, Any] = {
    # Legal but odd: no space, or extra spaces and tabs, around a header value.
    "ows": lambda d, n: _replace_nth(d, b": ", [b":", b":  \t", b": \t "][n % 3], n),
    "trailing-ows": lambda d, n: _replace_nth(d, b"\r\nHost", b" \t\r\nHost", n),
    # Obsolete line folding (RFC 9112 5.2: reject, or replace by spaces).
    "obs-fold": lambda d, n: d[: _header_line(d, n)] + b"X-Fold: a\r\n b\r\n" + d[_header_line(d, n) :],
    "bare-lf": lambda d, n: _replace_nth(d, b"\r\n", b"\n", n),
    "space-before-colon": lambda d, n: _replace_nth(d, b": ", b" : ", n),
    "duplicate-content-length": lambda d, n: _replace_nth(
        d, b"Content-Length: ", b"Content-Length: " + [b"0", b"1", b"99"][n % 3] + b"\r\nContent-Length: ", n
    ),
    "cl-and-te": lambda d, n: (
        d[: _header_line(d, n)]
        + [b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n"][n % 2]
        + d[_header_line(d, n) :]
    ),
    "bad-chunk-size": lambda d, n: _replace_nth(
        d, b"0\r\n", [b"zz\r\n", b"-1\r\n", b"fffffffffffffffff1\r\n"][n % 3], n
    ),
    "te-not-chunked": lambda d, n: _replace_nth(
        d, b"chunked", [b"gzip", b"chunked, gzip", b"xchunked"][n % 3], n
    ),
    "http-1.0": lambda d, n: _replace_nth(d, b"HTTP/1.1", b"HTTP/1.0", n),
    "nul-in-value": lambda d, n: _replace_nth(d, b"\r\nHost: ", b"\r\nX-Nul: a\x00b\r\nHost: ", n),
}


@st.composite
def mutated_stream(draw: Any) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(sorted(MUTATIONS)))
    data = draw(stream())
    return kind, MUTATIONS[kind](data, draw(st.integers(0, 8)))
