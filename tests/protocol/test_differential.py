"""forkserve's HTTP/1.1 protocols against independent oracles, on generated request streams.

See tests/protocol/differential.py for the harness and tests/protocol/requests.py for what is
generated. Bounded for CI (derandomized, a fixed number of examples); ``python -m benchmarks.fuzz``
runs the same properties for as long as asked. A failure found there is added here as an
``@example``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.protocol.differential import compare, run_all, split
from tests.protocol.requests import mutated_stream, stream

CI = settings(max_examples=120, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
OFFSETS = st.lists(st.integers(0, 2000), max_size=6)
TRAILERS = (
    b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\n"
    b"X-Forwarded-For: 203.0.113.9\r\nAuthorization: stolen\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_the_harness_sees_a_divergence() -> None:
    # uvicorn's httptools class appends trailers to scope["headers"], and its proxy layer then takes
    # the client from a trailer: compared in full, it differs (an intended difference, allowed).
    loop = asyncio.new_event_loop()
    try:
        outcomes = run_all(loop, [TRAILERS])
    finally:
        loop.close()
    assert outcomes["uvicorn-httptools"].requests[0].headers[-1] == (b"authorization", b"stolen")
    assert outcomes["uvicorn-httptools"].requests[0].client == ("203.0.113.9", 0)
    assert outcomes["uvicorn-httptools"] != outcomes["forkserve-fast"]
    assert outcomes["forkserve-fast"].requests[1].headers == ((b"host", b"x"),)
    assert outcomes["forkserve-fast"].requests[1].client == ("127.0.0.1", 50123)
    assert compare(outcomes, strict_oracles=True) == []


@settings(CI)
@given(data=stream(), offsets=OFFSETS)
@example(data=TRAILERS, offsets=[])
@example(data=TRAILERS, offsets=[70, 90, 100])
def test_valid_streams_look_the_same_to_the_app_everywhere(loop, data: bytes, offsets: list[int]) -> None:
    outcomes = run_all(loop, split(data, offsets))
    assert compare(outcomes, strict_oracles=True) == []
    assert outcomes["forkserve-fast"].statuses == [200] * len(outcomes["forkserve-fast"].requests)


@settings(CI)
@given(case=mutated_stream(), offsets=OFFSETS)
# A chunk size past 64 bits: llhttp refuses it, h11 reads the next request as that chunk's data.
@example(
    case=(
        "bad-chunk-size",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"fffffffffffffffff1\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    ),
    offsets=[],
)
@example(
    case=("bad-chunk-size", b"HEAD / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n"),
    offsets=[],
)
def test_mutated_streams_never_show_the_app_a_request_an_oracle_would_not(loop, case, offsets) -> None:
    _kind, data = case
    assert compare(run_all(loop, split(data, offsets)), strict_oracles=False) == []
