"""The benchmark toolkit's pure parts: the failure vocabulary, the stats, and response framing.

Every benchmark report and the integration tests' load count failures with these words and print
these figures, so a change here changes every page: the tables pin them.
"""

from __future__ import annotations

import asyncio
import errno
import sys

import pytest

from benchmarks import harness, run
from benchmarks.client import chunked_body, parse_head, request_bytes, wants_close
from benchmarks.failures import Failure, RequestFailed, classify, label
from benchmarks.stats import latency, median, percentile, ratio


def _os(code: int) -> OSError:
    return OSError(code, "x")


@pytest.mark.parametrize(
    ("error", "connecting", "failure"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True, Failure.REFUSED),
        (_os(errno.ECONNREFUSED), True, Failure.REFUSED),  # uvloop: a plain OSError, same errno
        (ConnectionResetError(errno.ECONNRESET, "reset"), False, Failure.RESET),
        (BrokenPipeError(errno.EPIPE, "pipe"), False, Failure.RESET),
        (_os(errno.ECONNABORTED), False, Failure.RESET),
        (TimeoutError(), False, Failure.TIMEOUT),
        (TimeoutError(), True, Failure.CONNECT_TIMEOUT),
        (asyncio.TimeoutError(), False, Failure.TIMEOUT),
        (_os(errno.ETIMEDOUT), False, Failure.TIMEOUT),
        (_os(errno.ETIMEDOUT), True, Failure.CONNECT_TIMEOUT),
        (asyncio.IncompleteReadError(b"", 10), False, Failure.NO_RESPONSE),
        (asyncio.IncompleteReadError(b"HTTP/1.1 2", 10), False, Failure.SHORT_READ),
        (asyncio.LimitOverrunError("too long", 0), False, Failure.BAD_RESPONSE),
        (ValueError("invalid literal for int()"), False, Failure.BAD_RESPONSE),
        (RequestFailed(Failure.SHORT_READ), False, Failure.SHORT_READ),
        (RequestFailed(Failure.BAD_BODY, "x"), True, Failure.BAD_BODY),  # already classified
        (_os(errno.EMFILE), True, Failure.OS_ERROR),
        (RuntimeError("bug"), False, Failure.OTHER),
    ],
)
def test_classify(error: BaseException, connecting: bool, failure: Failure) -> None:
    assert classify(error, connecting) is failure


@pytest.mark.parametrize(
    ("failure", "status", "error", "word"),
    [
        (Failure.BAD_STATUS, 503, None, "bad status 503"),
        (Failure.BAD_STATUS, 0, None, "bad status"),
        (Failure.OS_ERROR, 0, _os(errno.EMFILE), "os error EMFILE"),
        (Failure.OS_ERROR, 0, RuntimeError(), "os error"),
        (Failure.RESET, 0, _os(errno.ECONNRESET), "reset"),
        (Failure.NO_RESPONSE, 0, None, "no response"),
    ],
)
def test_label(failure: Failure, status: int, error: BaseException | None, word: str) -> None:
    assert label(failure, status, error) == word


def test_every_word_is_distinct_and_lower_case() -> None:
    words = [f.value for f in Failure]
    assert len(set(words)) == len(words)
    assert all(w == w.lower() for w in words)
    assert str(Failure.SHORT_READ) == "short read"


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, None),
        ([7.0], 50, 7.0),
        ([7.0], 99, 7.0),
        ([3.0, 1.0, 2.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),  # nearest rank: a value some request had, never 2.5
        ([1.0, 2.0, 3.0, 4.0], 75, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([float(i) for i in range(1, 101)], 99, 99.0),
        ([float(i) for i in range(1, 1001)], 99, 990.0),
        ([float(i) for i in range(1, 11)], 99, 10.0),  # few samples: p99 is the slowest
    ],
)
def test_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


@pytest.mark.parametrize("q", [0, -1, 100.5])
def test_percentile_out_of_range(q: float) -> None:
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], q)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], None), ([None, None], None), ([1.0, None, 3.0], 2.0), ([5.0, 1.0, 3.0], 3.0)],
)
def test_median_skips_missing(values: list[float | None], expected: float | None) -> None:
    assert median(values) == expected


@pytest.mark.parametrize(
    ("value", "base", "expected"),
    [(3.0, 2.0, 1.5), (None, 2.0, None), (3.0, None, None), (3.0, 0.0, None), (0.0, 2.0, 0.0)],
)
def test_ratio(value: float | None, base: float | None, expected: float | None) -> None:
    assert ratio(value, base) == expected


def test_latency_in_milliseconds() -> None:
    assert latency([]) == (None, None, None)
    assert latency([0.003, 0.001, 0.002]) == pytest.approx((2.0, 3.0, 3.0))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"5\r\nhello\r\n0\r\n\r\n", (b"hello", 15)),
        (b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", (b"hello world", 32)),
        (b"0\r\nTrailer: x\r\n\r\n", (b"", 17)),  # trailers are skipped, not taken as body
        (b"5\r\nhel", None),  # not all here yet
        (b"5\r\nhello\r\n0\r\n", None),
        (b"", None),
    ],
)
def test_chunked_body(data: bytes, expected: tuple[bytes, int] | None) -> None:
    assert chunked_body(bytearray(data)) == expected


def test_chunked_body_bad_size_is_a_bad_response() -> None:
    with pytest.raises(RequestFailed) as caught:
        chunked_body(b"zz\r\nhello\r\n")
    assert caught.value.failure is Failure.BAD_RESPONSE


@pytest.mark.parametrize(
    ("head", "status", "close"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2", 200, False),
        (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close", 503, True),
        (b"HTTP/1.0 200 OK", 200, True),  # HTTP/1.0 closes unless it says keep-alive
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive", 200, False),
        (b"HTTP/1.1 204", 204, False),  # no reason phrase
    ],
)
def test_parse_head(head: bytes, status: int, close: bool) -> None:
    parsed = parse_head(head)
    assert parsed.status == status
    assert wants_close(parsed) is close


@pytest.mark.parametrize(
    "head", [b"SSH-2.0-OpenSSH", b"HTTP/1.1 abc OK", b"HTTP/1.1 200 OK\r\nno colon here", b""]
)
def test_parse_head_rejects_what_is_not_http(head: bytes) -> None:
    with pytest.raises(RequestFailed) as caught:
        parse_head(head)
    assert caught.value.failure is Failure.BAD_RESPONSE


def test_request_bytes_say_how_the_connection_is_used() -> None:
    assert (
        request_bytes("/a?q=1", "127.0.0.1", 8000, True)
        == b"GET /a?q=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
    )
    assert b"Connection: close\r\n" in request_bytes("/", "127.0.0.1", 8000, False)


@pytest.mark.parametrize(
    ("items", "round_no", "order"),
    [
        ([], 1, []),
        (["a"], 3, ["a"]),
        (["a", "b", "c"], 1, ["a", "b", "c"]),
        (["a", "b", "c"], 2, ["b", "c", "a"]),
        (["a", "b", "c"], 3, ["c", "a", "b"]),
        (["a", "b", "c"], 4, ["a", "b", "c"]),
    ],
)
def test_each_round_rotates_the_run_order_by_one(items, round_no, order):
    assert harness.rotated(items, round_no) == order


@pytest.mark.parametrize(
    ("python", "shown"),
    [
        (sys.executable, "python"),
        ("peers/bin/python", "peers/bin/python"),
        ("/opt/elsewhere/bin/python3.12", "python3.12 (--python)"),
    ],
)
def test_a_page_names_interpreters_as_a_reader_would_type_them(python, shown):
    assert run.shown_python(python) == shown
