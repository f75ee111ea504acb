"""Differential harness: the same request bytes through forkserve's protocols and independent oracles.

Each implementation is driven in-process: a protocol instance on a fake transport, fed the bytes in
the given reads, on a real asyncio loop that runs the app's tasks between reads. A transport whose
reading is paused gets no further reads until it resumes, as a socket would. The app records what it
sees of each request (after reading the whole body, so a header added late would show) and answers
200 with a two-byte body. What is compared (``Outcome``): the requests the app saw, in order, and the
statuses written back and whether the connection ended closed.

Implementations (``IMPLEMENTATIONS``): forkserve's ``fast`` and ``httptools`` classes (with drain and
limits, as workers use them), uvicorn's own ``HttpToolsProtocol`` and ``H11Protocol``, and h11 driven
directly (no uvicorn at all; it has no proxy layer, so its ``client`` and ``scheme`` are left out).
All run with proxy headers trusted from the fake peer, 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from forkserve.http.choice import http_protocol_class

PEER = ("127.0.0.1", 50123)
SERVER = ("127.0.0.1", 8000)
# Loop passes between reads: enough for an app task to run to its response, and for a pipelined
# request to start after it (each await in the app is a pass).
SETTLE_PASSES = 30
CRASHED = 0  # the status of a protocol whose data_received raised
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


@dataclass(frozen=True)
class Seen:
    """What the app saw of one request."""

    method: str
    path: str
    raw_path: bytes
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    client: tuple[str, int] | None
    scheme: str | None


@dataclass
class Outcome:
    requests: list[Seen] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    closed: bool = False

    def without_peer(self) -> Outcome:
        """For comparison with an oracle that has no proxy layer."""
        requests = [Seen(**{**vars(r), "client": None, "scheme": None}) for r in self.requests]
        return Outcome(requests, self.statuses, self.closed)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: Any) -> None:
        if not self.closed:
            self.written += data

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return False  # forkserve's lingering close then closes at once

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, protocol: Any) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": PEER, "sockname": SERVER}.get(name, default)


def _recording_app(seen: list[Seen]) -> Callable[..., Any]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        client = scope.get("client")
        seen.append(
            Seen(
                scope["method"], scope["path"], scope["raw_path"], scope["query_string"],
                tuple((bytes(n), bytes(v)) for n, v in scope["headers"]), body,
                tuple(client) if client else None, scope.get("scheme"),
            )
        )  # fmt: skip
        head = [(b"content-type", b"text/plain"), (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def _config(seen: list[Seen]) -> Config:
    config = Config(
        _recording_app(seen), log_config=None, lifespan="off", ws="none", proxy_headers=True,
        forwarded_allow_ips="127.0.0.1", access_log=False,
    )  # fmt: skip
    config.load()
    return config


async def _settle() -> None:
    for _ in range(SETTLE_PASSES):
        await asyncio.sleep(0)


def _statuses(written: bytes) -> list[int]:
    return [int(m.group(1)) for m in _STATUS.finditer(written)]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The protocols log every refused request; thousands of examples would bury the result. Put
    # back afterwards: a logger left disabled silences every later test that reads its records.
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "uvicorn.access", "asyncio")]
    before = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = True
    try:
        yield
    finally:
        for logger, disabled in zip(loggers, before, strict=True):
            logger.disabled = disabled


def run_protocol(
    loop: asyncio.AbstractEventLoop,
    make: Callable[[Config, asyncio.AbstractEventLoop], Any],
    reads: Sequence[bytes],
) -> Outcome:
    seen: list[Seen] = []
    protocol = make(_config(seen), loop)
    transport = FakeTransport()
    protocol.connection_made(transport)
    pending = list(reads)
    crashed = False
    for _ in range(len(reads) * 4 + 8):
        while pending and transport.reading and not transport.closed:
            try:
                protocol.data_received(pending.pop(0))
            except Exception:
                # asyncio logs it and closes the connection. (uvicorn's H11Protocol does this on a
                # HEAD request with a bad chunk size: its 400 carries a body h11 will not send.)
                crashed = transport.closed = True
            loop.run_until_complete(_settle())
        if not pending or transport.closed:
            break
        loop.run_until_complete(_settle())  # paused: let the responses owed resume reading
    loop.run_until_complete(_settle())
    closed = transport.closed
    protocol.connection_lost(None)
    loop.run_until_complete(_settle())
    for task in asyncio.all_tasks(loop):  # an app still waiting for a body that never came
        task.cancel()
    loop.run_until_complete(_settle())
    return Outcome(seen, _statuses(bytes(transport.written)) + [CRASHED] * crashed, closed)


def run_h11(reads: Sequence[bytes]) -> Outcome:
    """h11 alone: no uvicorn, no proxy headers."""
    conn = h11.Connection(h11.SERVER)
    outcome = Outcome()
    request: h11.Request | None = None
    body = b""
    for data in reads:
        conn.receive_data(data)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                outcome.statuses.append(400)
                outcome.closed = True
                return outcome
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Request):
                request, body = event, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                raw_path, _, query = bytes(request.target).partition(b"?")
                path = urllib.parse.unquote(raw_path.decode("ascii"))
                headers = tuple((bytes(n), bytes(v)) for n, v in request.headers)
                outcome.requests.append(
                    Seen(request.method.decode(), path, raw_path, query, headers, body, None, None)
                )
                conn.send(h11.Response(status_code=200, headers=[("content-length", "2")]))
                if request.method != b"HEAD":
                    conn.send(h11.Data(data=b"ok"))
                conn.send(h11.EndOfMessage())
                outcome.statuses.append(200)
                if conn.our_state is h11.MUST_CLOSE:
                    outcome.closed = True
                    return outcome
                conn.start_next_cycle()
    return outcome


def _uvicorn(cls: type[Any]) -> Callable[[Config, asyncio.AbstractEventLoop], Any]:
    return lambda config, loop: cls(config=config, server_state=ServerState(), app_state={}, _loop=loop)


def forkserve_class(name: str, **limits: Any) -> Callable[[Config, asyncio.AbstractEventLoop], Any]:
    return _uvicorn(http_protocol_class(name, **limits))


IMPLEMENTATIONS: dict[str, Callable[[Config, asyncio.AbstractEventLoop], Any]] = {
    "forkserve-fast": forkserve_class("fast"),
    "forkserve-httptools": forkserve_class("httptools"),
    "uvicorn-httptools": _uvicorn(HttpToolsProtocol),
    "uvicorn-h11": _uvicorn(H11Protocol),
}


def run_all(loop: asyncio.AbstractEventLoop, reads: Sequence[bytes]) -> dict[str, Outcome]:
    with _quiet():
        outcomes = {name: run_protocol(loop, make, reads) for name, make in IMPLEMENTATIONS.items()}
        outcomes["h11"] = run_h11(reads)
    return outcomes


def split(data: bytes, offsets: Sequence[int]) -> list[bytes]:
    """``data`` as the reads a socket might deliver, cut at ``offsets``."""
    cuts = sorted({o for o in offsets if 0 < o < len(data)})
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# What the comparison allows, each with its reason (docs/http.md, "Proof of correctness").
def compare(outcomes: dict[str, Outcome], strict_oracles: bool) -> list[str]:
    """The divergences from forkserve's fast class, one line each; empty when all agree.

    forkserve's two classes must agree exactly. uvicorn's httptools class also appends a chunked
    body's trailer fields to ``scope["headers"]`` (forkserve drops them), where its proxy layer may
    read them: its headers are compared up to the fast class's count, and where it has more, its
    client and scheme are not compared. h11 is stricter than llhttp: on mutated input (``strict_oracles``
    false) an h11 refusal of what llhttp accepts is not a divergence, but where both accept, what
    the app sees must agree.
    """
    fast = outcomes["forkserve-fast"]
    found = []
    if outcomes["forkserve-httptools"] != fast:
        found.append(f"forkserve-httptools: {outcomes['forkserve-httptools']} != fast {fast}")
    uvicorn = outcomes["uvicorn-httptools"]
    trimmed = [
        u
        if len(u.headers) == len(f.headers)
        # The trailers also reach uvicorn's proxy layer when the app starts after they were
        # parsed (a forged client and scheme): their effect is not compared either.
        else Seen(
            **{**vars(u), "headers": u.headers[: len(f.headers)], "client": f.client, "scheme": f.scheme}
        )
        for u, f in zip(uvicorn.requests, fast.requests, strict=False)
    ]
    if Outcome(trimmed, uvicorn.statuses, uvicorn.closed) != fast:
        found.append(f"uvicorn-httptools: {uvicorn} != fast {fast}")
    for name, bare in (("uvicorn-h11", False), ("h11", True)):
        oracle = outcomes[name]
        mine = fast.without_peer() if bare else fast
        if strict_oracles:
            if oracle != mine:
                found.append(f"{name}: {oracle} != fast {mine}")
        else:
            both = min(len(oracle.requests), len(mine.requests))
            theirs, ours = oracle.requests[:both], mine.requests[:both]
            if both and _refused(oracle) != _refused(mine):
                # The last request one side refused mid-body (a 400 after the app started, say on
                # a chunk size past 64 bits): its body is what arrived before the refusal, while
                # the other side may read on. Its head must still agree.
                theirs[-1] = Seen(**{**vars(theirs[-1]), "body": b""})
                ours[-1] = Seen(**{**vars(ours[-1]), "body": b""})
            if theirs != ours:
                found.append(f"{name} saw other requests: {oracle.requests} != fast {mine.requests}")
    return found


def _refused(outcome: Outcome) -> bool:
    return bool(outcome.statuses) and (outcome.statuses[-1] >= 400 or outcome.statuses[-1] == CRASHED)


def refusals(outcomes: dict[str, Outcome]) -> set[str]:
    """Which side refused requests the other accepted (mutated input): 'fast stricter', 'h11 stricter'."""
    fast, oracle = len(outcomes["forkserve-fast"].requests), len(outcomes["h11"].requests)
    return {"fast stricter"} if fast < oracle else {"h11 stricter"} if oracle < fast else set()
