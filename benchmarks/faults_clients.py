"""The clients of the fault-injection benchmark, run in a process of their own.

``python -m benchmarks.faults_clients JOB CONFIG_JSON OUT_JSON`` runs one job against a server on
the loopback interface, prints ``started`` once it is under way, and writes its result to OUT_JSON:

- ``load``: keep-alive and new-connection clients at a fixed pace; every request is counted as ok
  (200 and the expected body) or failed, by kind, with no retries;
- ``slowloris``: connections that send their request headers one byte at a time, never finishing,
  while normal clients run;
- ``malformed``: invalid or hostile requests, each on a connection of its own; the first response
  of each is classified;
- ``flood``: many connection attempts at once, then normal requests to see whether it recovers.

Every loop here is bounded in time and in count, and the process exits by itself. The runner
(``benchmarks.faults``) starts it with ``start_new_session=True`` and kills its group regardless.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import stats
from benchmarks.client import Budget, Client, Outcome, paced, parse_head, watchdog
from benchmarks.failures import Failure, classify, label

HOST = "127.0.0.1"
MAX_FAILURE_EVENTS = 5000
# Stopped by SIGTERM: the load stops sending (requests in flight still finish) and reports.
_BUDGETS: list[Budget] = []
READ_LIMIT = 1 << 20  # the StreamReader's buffer limit; a response head never comes near it


def request_bytes(path: str, close: bool = False, host: str = "localhost") -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n".encode("latin-1") + connection + b"\r\n"


async def read_status(reader: asyncio.StreamReader) -> int:
    """Read one Content-Length-framed response off a stream; its status."""
    # For the attacks, which write raw bytes on a stream; a normal load uses benchmarks.client.
    head = parse_head((await reader.readuntil(b"\r\n\r\n"))[:-4])
    length = int(head.headers.get(b"content-length", b"0") or b"0")
    if length:
        await reader.readexactly(length)
    return head.status


def failure_word(exc: BaseException, connecting: bool) -> str:
    """The word of benchmarks.failures for ``exc``; a connection that never opened says so."""
    failure = classify(exc, connecting)
    if connecting and failure is not Failure.CONNECT_TIMEOUT:
        return f"connect {label(failure, error=exc)}"
    return label(failure, error=exc)


async def connect(
    port: int, timeout: float, source: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    local = (source, 0) if source else None
    return await asyncio.wait_for(
        asyncio.open_connection(HOST, port, local_addr=local, limit=READ_LIMIT), timeout
    )


def close_writer(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.close()


# --- steady load ------------------------------------------------------------------------------


@dataclass
class LoadStats:
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    failure_events: list[tuple[float, str]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    pid_first: dict[int, float] = field(default_factory=dict)
    pid_last: dict[int, float] = field(default_factory=dict)
    pid_count: Counter[int] = field(default_factory=Counter)
    # (time, pid or None, note) of each request of a "paced path" client (the leak calls)
    calls: list[tuple[float, int | None, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.ok + sum(self.failures.values())

    def fail(self, kind: str, when: float) -> None:
        self.failures[kind] += 1
        if len(self.failure_events) < MAX_FAILURE_EVENTS:
            self.failure_events.append((when, kind))

    def succeed(self, started: float, ended: float, pid: int | None) -> None:
        self.ok += 1
        self.latencies.append(ended - started)
        if pid is not None:
            self.pid_first.setdefault(pid, ended)
            self.pid_last[pid] = ended
            self.pid_count[pid] += 1


@dataclass(frozen=True)
class LoadConfig:
    port: int
    duration: float
    keepalive: int = 8
    fresh: int = 2
    rate: float = 50.0  # requests per second per client
    timeout: float = 5.0
    max_requests: int = 1_000_000  # over all clients
    path: str = "/pid"
    # Optional extra client: one request to extra_path every extra_interval s, on a kept-alive
    # connection (opened again when the server closes it); counted in the same totals.
    extra_path: str | None = None
    extra_interval: float = 1.0
    extra_timeout: float = 10.0


def _pid_of(body: bytes) -> int | None:
    first = body.split(None, 1)[:1]
    return int(first[0]) if first and first[0].isdigit() else None


def _has_pid(body: bytes) -> bool:
    return _pid_of(body) is not None


class Load:
    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.stats = LoadStats()
        self.budget = Budget(0.0, config.max_requests)

    def _client(self, path: str, keep_alive: bool, timeout: float) -> Client:
        return Client(self.config.port, path=path, keep_alive=keep_alive, timeout=timeout, body_ok=_has_pid)

    def _record(self, outcome: Outcome) -> None:
        if outcome.ok:
            self.stats.succeed(outcome.start, outcome.end, _pid_of(outcome.body))
        else:
            self.stats.fail(outcome.label, outcome.end)

    def _record_extra(self, outcome: Outcome) -> None:
        if outcome.ok:
            self.stats.succeed(outcome.start, outcome.end, _pid_of(outcome.body))
            self.stats.calls.append((outcome.start, _pid_of(outcome.body), outcome.body.decode("latin-1")))
        else:
            self.stats.fail(f"{self.config.extra_path}: {outcome.label}", outcome.end)
            self.stats.calls.append((outcome.start, None, outcome.label))

    async def run(self) -> dict[str, Any]:
        config = self.config
        started = time.monotonic()
        self.budget.deadline = started + config.duration
        _BUDGETS.append(self.budget)
        interval = 1.0 / config.rate
        clients = [self._client(config.path, True, config.timeout) for _ in range(config.keepalive)]
        clients += [self._client(config.path, False, config.timeout) for _ in range(config.fresh)]
        # Spread the clients' first requests over one interval so they do not all fire at once.
        runs = [
            paced(c, interval, started + interval * i / len(clients), self.budget, self._record)
            for i, c in enumerate(clients)
        ]
        if config.extra_path:
            extra = self._client(config.extra_path, True, config.extra_timeout)
            clients.append(extra)
            runs.append(paced(extra, config.extra_interval, started, self.budget, self._record_extra))
        async with watchdog(clients):
            await asyncio.gather(*runs)
        return self.result(started, time.monotonic())

    def result(self, started: float, ended: float) -> dict[str, Any]:
        s = self.stats
        p50, p99, most = stats.latency(s.latencies)
        return {
            "started": started,
            "ended": ended,
            "ok": s.ok,
            "failed": sum(s.failures.values()),
            "failures": dict(s.failures),
            "failure_events": s.failure_events,
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": most,
            "pid_first": {str(k): v for k, v in s.pid_first.items()},
            "pid_last": {str(k): v for k, v in s.pid_last.items()},
            "pid_count": {str(k): v for k, v in s.pid_count.items()},
            "calls": s.calls,
        }


# --- slowloris -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlowlorisConfig:
    port: int
    connections: int = 500
    byte_interval: float = 0.5
    count_at: float = 30.0  # seconds after the attack started
    source: str = "127.0.0.2"
    normal_clients: int = 4
    normal_rate: float = 25.0
    normal_timeout: float = 5.0
    connect_timeout: float = 5.0


@dataclass
class SlowConn:
    connected_at: float | None = None
    closed_at: float | None = None
    how: str = ""  # how the server ended it: a status line, "closed", "reset"


LATER = 3.0  # the second count of open connections, this long after the first

# An endless header block: the request line and one header whose value never ends.
SLOW_PREFIX = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: "


async def _slow_connection(config: SlowlorisConfig, conn: SlowConn, stop_at: float) -> None:
    try:
        reader, writer = await connect(config.port, config.connect_timeout, config.source)
    except Exception as exc:
        conn.how = failure_word(exc, True)
        return
    conn.connected_at = time.monotonic()

    async def watch() -> None:
        try:
            data = await reader.read(4096)
            first = data.split(b"\r\n", 1)[0][:40].decode("latin-1")
            conn.how = first if data else "closed"
        except Exception as exc:
            conn.how = failure_word(exc, False)
        conn.closed_at = time.monotonic()

    watcher = asyncio.ensure_future(watch())
    stream = SLOW_PREFIX + b"a" * 100_000
    sent = 0
    try:
        while time.monotonic() < stop_at and not watcher.done():
            writer.write(stream[sent : sent + 1])
            sent += 1
            try:
                await asyncio.wait_for(writer.drain(), config.byte_interval)
            except asyncio.TimeoutError:
                pass
            except Exception:
                await asyncio.sleep(0.05)  # let the watcher record how it ended
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(watcher), config.byte_interval)
    finally:
        if not watcher.done():
            watcher.cancel()
        close_writer(writer)


async def run_slowloris(config: SlowlorisConfig) -> dict[str, Any]:
    started = time.monotonic()
    count_at = started + config.count_at
    stop_at = count_at + LATER + 0.5
    conns = [SlowConn() for _ in range(config.connections)]
    load = Load(
        LoadConfig(
            port=config.port,
            duration=config.count_at,
            keepalive=0,
            fresh=config.normal_clients,
            rate=config.normal_rate,
            timeout=config.normal_timeout,
        )
    )
    slow = [_slow_connection(config, conn, stop_at) for conn in conns]
    counted: dict[str, int] = {}

    def still_open() -> int:
        return sum(1 for c in conns if c.connected_at is not None and c.closed_at is None)

    async def count() -> None:
        await asyncio.sleep(max(0.0, count_at - time.monotonic()))
        counted["open"] = still_open()
        # A server whose header timeout equals the count time closes them just after it.
        await asyncio.sleep(max(0.0, count_at + LATER - time.monotonic()))
        counted["later"] = still_open()

    normal, *_ = await asyncio.gather(load.run(), count(), *slow)
    lifetimes = [c.closed_at - c.connected_at for c in conns if c.connected_at and c.closed_at]
    return {
        "started": started,
        "connected": sum(1 for c in conns if c.connected_at is not None),
        "open_at_count": counted.get("open", 0),
        "open_later": counted.get("later", 0),
        "closed_by_server": len(lifetimes),
        "closed_median_s": statistics.median(lifetimes) if lifetimes else None,
        "closed_first_s": min(lifetimes) if lifetimes else None,
        "how_closed": dict(Counter(c.how for c in conns if c.how)),
        "normal": normal,
    }


# --- malformed input ----------------------------------------------------------------------------

PIPELINE_DEPTH = 1000
CATEGORIES = (
    "bad request line",
    "huge headers",
    "bad chunked / framing",
    "invalid UTF-8",
    "body longer than Content-Length",
    "NUL bytes",
    "pipelined 1000",
)  # the order of the page's tables


Variant = tuple[str, bytes]  # a short label, and the bytes sent


def _bad_request_line(rng: random.Random) -> Variant:
    host = b"\r\nHost: x\r\n\r\n"
    choices: list[Variant] = [
        ("no target, no version", b"GET\r\n\r\n"),
        ("HTTP/9.9", b"GET / HTTP/9.9" + host),
        ("bad method char G@T", b"G@T / HTTP/1.1" + host),
        ("no target", b"GET  HTTP/1.1" + host),
        ("extra token", b"GET / HTTP/1.1 extra" + host),
        ("target first", b"/ GET HTTP/1.1" + host),
        ("FTP/1.1", b"GET / FTP/1.1" + host),
        ("only empty lines", b"\r\n\r\n\r\n\r\n"),
        ("10-80 KB target", b"GET " + b"/a" * rng.randint(5000, 40000) + b" HTTP/1.1" + host),
        ("1-300 byte method", b"X" * rng.randint(1, 300) + b" / HTTP/1.1" + host),
        ("random bytes", bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))) + b"\r\n\r\n"),
        ("bare CR line ends", b"GET / HTTP/1.1\rHost: x\r\r"),
        ("DEL in target", b"GET /\x7f HTTP/1.1" + host),
        ("broken absolute URI", b"GET http://[::1 HTTP/1.1" + host),
        ("header without colon", b"GET / HTTP/1.1\r\nNoColonHere\r\n\r\n"),
        ("obs-fold header", b"GET / HTTP/1.1\r\nHost: x\r\n folded: continuation\r\n\r\n"),
        ("empty header name", b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n"),
        ("space in header name", b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"),
    ]
    return rng.choice(choices)


def _huge_headers(rng: random.Random) -> Variant:
    size = rng.randint(65 * 1024, 256 * 1024)
    if rng.random() < 0.5:
        return "one 65-256 KB header", b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"h" * size + b"\r\n\r\n"
    count = size // 40
    many = b"".join(b"X-H%06d: %s\r\n" % (i, b"v" * 26) for i in range(count))
    return "1,600-6,500 headers (65-256 KB)", b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"


def _bad_chunked(rng: random.Random) -> Variant:
    head = b"POST / HTTP/1.1\r\nHost: x\r\n"
    te = b"Transfer-Encoding: chunked\r\n"
    choices: list[Variant] = [
        ("chunk size zz", head + te + b"\r\nzz\r\nhello\r\n0\r\n\r\n"),
        ("chunk size -5", head + te + b"\r\n-5\r\nhello\r\n0\r\n\r\n"),
        ("chunk size overflow", head + te + b"\r\nffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ("chunk without CRLF", head + te + b"\r\n5\r\nhelloXX0\r\n\r\n"),
        ("70 KB chunk extension", head + te + b"\r\n5;" + b"e" * 70000 + b"\r\nhello\r\n0\r\n\r\n"),
        ("chunked + Content-Length", head + te + b"Content-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ("TE: chunked, gzip", head + b"Transfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ("TE: gzip only", head + b"Transfer-Encoding: gzip\r\n\r\nhello"),
        ("two different Content-Length", head + b"Content-Length: 5\r\nContent-Length: 7\r\n\r\nhello"),
        ("Content-Length: -1", head + b"Content-Length: -1\r\n\r\n"),
        ("Content-Length overflow", head + b"Content-Length: 99999999999999999999999\r\n\r\nx"),
        ("Content-Length: 1e3", head + b"Content-Length: 1e3\r\n\r\nx"),
        ("70 KB trailer", head + te + b"\r\n5\r\nhello\r\n0\r\nX-Trailer: " + b"t" * 70000 + b"\r\n\r\n"),
    ]
    return rng.choice(choices)


def _invalid_utf8(rng: random.Random) -> Variant:
    junk = bytes(rng.choice([0xFF, 0xFE, 0xC3, 0x28, 0xA0, 0xA1, 0xE2, 0x82, 0x80]) for _ in range(8))
    host = b"\r\nHost: x\r\n\r\n"
    choices: list[Variant] = [
        ("in the path", b"GET /" + junk + b" HTTP/1.1" + host),
        ("in the query", b"GET /?q=" + junk + b" HTTP/1.1" + host),
        ("in a header value", b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: " + junk + b"\r\n\r\n"),
        ("in Host", b"GET / HTTP/1.1\r\nHost: " + junk + b"\r\n\r\n"),
        ("in a header name", b"GET / HTTP/1.1\r\nX-" + junk + b": v\r\n\r\n"),
        ("percent-encoded", b"GET /%ff%fe%c3%28 HTTP/1.1" + host),
    ]
    return rng.choice(choices)


def _body_longer(rng: random.Random) -> Variant:
    extra = bytes(rng.randrange(256) for _ in range(rng.randint(10, 2000)))
    return (
        "10-2000 random bytes past it",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" + extra,
    )


def _nul_bytes(rng: random.Random) -> Variant:
    host = b"\r\nHost: x\r\n\r\n"
    choices: list[Variant] = [
        ("in the path", b"GET /\x00 HTTP/1.1" + host),
        ("in the method", b"G\x00T / HTTP/1.1" + host),
        ("in a header value", b"GET / HTTP/1.1\r\nHost: x\x00y\r\n\r\n"),
        ("in a header name", b"GET / HTTP/1.1\r\nX-\x00: v\r\n\r\n"),
        ("after the version", b"GET / HTTP/1.1\x00" + host),
        ("only NULs", b"\x00" * rng.randint(1, 1000)),
    ]
    return rng.choice(choices)


def malformed_cases(count: int, seed: int, pipelines: int) -> list[tuple[str, str, bytes]]:
    """``count`` hostile requests as (category, variant, bytes), always the same for the same seed;
    ``pipelines`` of them are 1000 pipelined GETs, and huge headers are a sixteenth of the rest so
    that the run stays short."""
    rng = random.Random(seed)
    makers = [
        ("bad request line", _bad_request_line, 3),
        ("huge headers", _huge_headers, 1),
        ("bad chunked / framing", _bad_chunked, 3),
        ("invalid UTF-8", _invalid_utf8, 3),
        ("body longer than Content-Length", _body_longer, 2),
        ("NUL bytes", _nul_bytes, 3),
    ]
    names = [name for name, _, weight in makers for _ in range(weight)]
    by_name = {name: maker for name, maker, _ in makers}
    pipeline = request_bytes("/pid") * PIPELINE_DEPTH
    cases = [("pipelined 1000", "1000 GETs in one write", pipeline)] * min(pipelines, count)
    while len(cases) < count:
        name = rng.choice(names)
        variant, payload = by_name[name](rng)
        cases.append((name, variant, payload))
    rng.shuffle(cases)
    return cases


@dataclass(frozen=True)
class MalformedConfig:
    port: int
    count: int
    seed: int = 1
    pipelines: int = 10
    concurrency: int = 64
    timeout: float = 1.0
    pipeline_timeout: float = 10.0
    source: str = "127.0.0.4"


def status_class(status_line: bytes) -> str:
    parts = status_line.split(None, 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1][:1].isdigit():
        return f"{parts[1][:1].decode()}xx"
    return "not HTTP"


async def _one_malformed(config: MalformedConfig, payload: bytes, pipelined: bool) -> tuple[str, int]:
    """The class of the server's first answer, and for a pipeline how many responses came."""
    try:
        reader, writer = await connect(config.port, config.timeout * 2, config.source)
    except Exception as exc:
        return failure_word(exc, True), 0
    write_error: str | None = None
    try:
        writer.write(payload)
        try:
            await asyncio.wait_for(writer.drain(), config.timeout * 2)
        except Exception as exc:
            write_error = failure_word(exc, False)
        if pipelined:
            return await _count_pipelined(reader, config.pipeline_timeout)
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\r\n"), config.timeout)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                return status_class(exc.partial), 0
            return "closed, no response", 0
        except (asyncio.TimeoutError, TimeoutError):
            return ("no response (write failed)" if write_error else "no response in 1 s"), 0
        except (ConnectionResetError, BrokenPipeError):
            return "reset, no response", 0
        except Exception as exc:
            return failure_word(exc, False), 0
        return status_class(line), 0
    finally:
        close_writer(writer)


async def _count_pipelined(reader: asyncio.StreamReader, timeout: float) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    first: str | None = None
    count = 0
    try:
        while count < PIPELINE_DEPTH:
            status = await asyncio.wait_for(read_status(reader), max(0.01, deadline - time.monotonic()))
            first = first or f"{status // 100}xx"
            count += 1
    except Exception as exc:
        first = first or failure_word(exc, False)
    return first or "no response", count


async def run_malformed(config: MalformedConfig) -> dict[str, Any]:
    cases = malformed_cases(config.count, config.seed, config.pipelines)
    gate = asyncio.Semaphore(config.concurrency)
    table: Counter[tuple[str, str, str]] = Counter()
    pipelined: list[int] = []

    async def one(category: str, variant: str, payload: bytes) -> None:
        async with gate:
            verdict, count = await _one_malformed(config, payload, category == "pipelined 1000")
        table[(category, variant, verdict)] += 1
        if category == "pipelined 1000":
            pipelined.append(count)

    started = time.monotonic()
    await asyncio.gather(*(one(*case) for case in cases))
    return {
        "started": started,
        "ended": time.monotonic(),
        "cases": len(cases),
        "table": [[*key, n] for key, n in sorted(table.items())],
        "pipelined_responses": pipelined,
    }


# --- connection flood ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FloodConfig:
    port: int
    attempts: int = 2000
    connect_timeout: float = 2.0
    source: str = "127.0.0.3"
    probe_for: float = 5.0
    probe_interval: float = 0.1
    probe_timeout: float = 1.0


async def _attempt(config: FloodConfig, held: list[asyncio.StreamWriter]) -> str:
    try:
        _, writer = await connect(config.port, config.connect_timeout, config.source)
    except Exception as exc:
        kind = failure_word(exc, True)
        return {"connect timeout": "timed out", "connect refused": "refused"}.get(kind, kind)
    # Held open, with a request in it, until the flood ends: it occupies its place in the queue.
    with contextlib.suppress(Exception):
        writer.write(request_bytes("/pid", close=True))
    held.append(writer)
    return "connected"


async def _probe(port: int, timeout: float) -> bool:
    client = Client(port, path="/pid", keep_alive=False, timeout=timeout)
    async with watchdog([client]):
        outcome = await client.request()
    return outcome.ok


async def run_flood(config: FloodConfig) -> dict[str, Any]:
    held: list[asyncio.StreamWriter] = []
    started = time.monotonic()
    outcomes = await asyncio.gather(*(_attempt(config, held) for _ in range(config.attempts)))
    for writer in held:
        close_writer(writer)
    ended = time.monotonic()
    probes: list[tuple[float, bool]] = []
    while time.monotonic() < ended + config.probe_for:
        t0 = time.monotonic()
        probes.append((t0, await _probe(config.port, config.probe_timeout)))
        await asyncio.sleep(max(0.0, config.probe_interval - (time.monotonic() - t0)))
    first_ok = next((t for t, ok in probes if ok), None)
    return {
        "started": started,
        "ended": ended,
        "outcomes": dict(Counter(outcomes)),
        "probes": len(probes),
        "probes_ok": sum(1 for _, ok in probes if ok),
        "first_ok_after_s": None if first_ok is None else first_ok - ended,
        "probes_ok_last_2s": sum(1 for t, ok in probes if ok and t >= ended + config.probe_for - 2),
        "probes_last_2s": sum(1 for t, _ in probes if t >= ended + config.probe_for - 2),
    }


# --- entry point --------------------------------------------------------------------------------


def run_job(job: str, config: dict[str, Any]) -> dict[str, Any]:
    if job == "load":
        return asyncio.run(Load(LoadConfig(**config)).run())
    if job == "slowloris":
        return asyncio.run(run_slowloris(SlowlorisConfig(**config)))
    if job == "malformed":
        return asyncio.run(run_malformed(MalformedConfig(**config)))
    if job == "flood":
        return asyncio.run(run_flood(FloodConfig(**config)))
    raise SystemExit(f"unknown job {job!r}")


def _request_stop(signum: int, frame: object) -> None:
    for budget in _BUDGETS:
        budget.stop()


def main(argv: list[str]) -> int:
    job, config_json, out = argv
    signal.signal(signal.SIGTERM, _request_stop)
    print("started", flush=True)
    result = run_job(job, json.loads(config_json))
    Path(out).write_text(json.dumps(result))
    return 0


def config_dict(config: LoadConfig | SlowlorisConfig | MalformedConfig | FloodConfig) -> dict[str, Any]:
    return asdict(config)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
