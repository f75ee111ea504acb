"""The one HTTP/1.1 load client of the benchmarks, and of the tests that need a load.

What it offers:

- ``Client``: one client, one connection at a time, either kept alive or opened per request
  (``Connection: close``, as HTTP/1.1 clients say it). Responses are framed by Content-Length,
  chunked transfer coding, or the close. It never retries: every request becomes one ``Outcome``,
  ok or failed with a word of ``benchmarks.failures``.
- Three shapes of load, each bounded by a ``Budget`` (a deadline, a request count, a stop flag):
  ``closed_loop`` (a client sends its next request when the last one is answered: the most a
  server serves to N users), ``paced`` (a client sends at a fixed rate and never bursts to catch
  up), ``open_loop`` (requests leave on a fixed schedule whether or not earlier ones have finished,
  on a pool of connections, so a slow server shows as latency rather than as fewer samples).
- ``run_load``: keep-alive and new-connection clients from a ``LoadPlan``, closed-loop or paced;
  ``BackgroundLoad``: the same in a thread, for tests.

Why a protocol and one watchdog: a response costs one ``data_received`` callback instead of a
reader registered and removed per read, and one timer for all clients checks deadlines instead of
an ``asyncio.timeout`` per request (a timer scheduled and cancelled every time). Both keep the
client's CPU, which the server under test shares the cores with, low. A connect gets its own
timer, because a connect that hangs (a full accept queue drops SYNs) has no response to expire.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import select
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, cast

from benchmarks.failures import Failure, RequestFailed, classify, label

HOST = "127.0.0.1"
WATCHDOG_INTERVAL = 0.1  # a request timeout of seconds does not need better than this


class Response(NamedTuple):
    # NamedTuples, not frozen dataclasses: built once per request, and their __init__ is slower.
    status: int
    body: bytes
    close: bool  # the server will close the connection after this response


class Outcome(NamedTuple):
    start: float  # time.monotonic() when the request started; CLOCK_MONOTONIC is machine-wide
    end: float
    failure: Failure | None  # None: the expected status and body
    label: str  # the failure's word with its detail ("bad status 503"); "" when ok
    status: int  # 0 when no response came
    body: bytes
    keep_alive: bool  # from a client that keeps its connection

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def latency(self) -> float:
        return self.end - self.start


class Budget:
    """What bounds a load: no request starts after ``deadline``, past ``max_requests``, or once stopped."""

    def __init__(self, deadline: float, max_requests: int = 10_000_000) -> None:
        self.deadline = deadline
        self.max_requests = max_requests
        self.sent = 0
        self.stopped = False  # set from any thread: a plain flag read between requests

    def take(self) -> bool:
        if self.stopped or self.sent >= self.max_requests or time.monotonic() >= self.deadline:
            return False
        self.sent += 1
        return True

    def stop(self) -> None:
        self.stopped = True


# --- framing ---------------------------------------------------------------------------------


class _Head(NamedTuple):
    version: bytes
    status: int
    headers: dict[bytes, bytes]


def parse_head(head: bytes) -> _Head:
    """The status line and headers of a response head (without its final blank line)."""
    status_line, *lines = head.split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise RequestFailed(Failure.BAD_RESPONSE, repr(status_line[:80]))
    headers = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon:
            raise RequestFailed(Failure.BAD_RESPONSE, repr(line[:80]))
        headers[name.strip().lower()] = value.strip()
    return _Head(parts[0], int(parts[1]), headers)


def wants_close(head: _Head) -> bool:
    connection = head.headers.get(b"connection", b"").lower()
    return connection == b"close" or (head.version == b"HTTP/1.0" and connection != b"keep-alive")


def chunked_body(buf: bytes | bytearray, start: int = 0) -> tuple[bytes, int] | None:
    """Decode a chunked body from buf[start:]: (body, end offset), or None if not all here yet."""
    body = bytearray()
    pos = start
    while True:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None
        size_text = bytes(buf[pos:end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise RequestFailed(Failure.BAD_RESPONSE, f"chunk size {size_text[:20]!r}") from None
        pos = end + 2
        if size == 0:
            trailers_end = buf.find(b"\r\n\r\n", pos - 2)
            return None if trailers_end < 0 else (bytes(body), trailers_end + 4)
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        pos += size + 2


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: frames responses as bytes arrive, hands each to the waiting request."""

    def __init__(self) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self.buf = bytearray()
        self.head: _Head | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False  # EOF or error seen: the connection cannot carry another request
        self.fd = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, so this is a cast, not a check.
        self.transport = cast(asyncio.WriteTransport, transport)
        self.fd = transport.get_extra_info("socket").fileno()

    def dropped(self) -> bool:
        """True if this idle connection cannot carry another request.

        Asks the socket itself, as urllib3 (wait_for_read(sock, 0)) and httpcore (is_readable) do
        before reusing a connection: a FIN that arrived right behind the last response may not have
        been read by the event loop yet. Between responses nothing may arrive, so readable means
        EOF, a reset or stray bytes.
        """
        if self.closed or self.fd < 0:
            return True
        # poll, not select: select refuses descriptors past FD_SETSIZE (1024), which a client
        # holding thousands of connections (benchmarks/c10k.py) has.
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(0))

    def request(self, data: bytes) -> asyncio.Future[Response]:
        if self.transport is None:
            raise RequestFailed(Failure.NO_RESPONSE, "not connected")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None:
            self.closed = True  # bytes nobody asked for: the connection is out of step, drop it
            return
        try:
            response = self._frame(eof=False)
        except (RequestFailed, ValueError) as error:
            self.fail(error)
            return
        if response is not None:
            self._deliver(response)

    def eof_received(self) -> bool:
        self.closed = True
        if self.waiter is not None:
            try:
                response = self._frame(eof=True)
            except (RequestFailed, ValueError) as error:
                self.fail(error)
            else:
                if response is None:
                    self.fail(self._cut_short())
                else:
                    self._deliver(response)
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None:
            self.fail(exc or self._cut_short())

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _cut_short(self) -> RequestFailed:
        if self.head is not None or self.buf:
            return RequestFailed(Failure.SHORT_READ)
        return RequestFailed(Failure.NO_RESPONSE)

    def _frame(self, eof: bool) -> Response | None:
        if self.head is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return None
            self.head = parse_head(bytes(self.buf[:end]))
            del self.buf[: end + 4]
        head = self.head
        if b"chunked" in head.headers.get(b"transfer-encoding", b"").lower():
            decoded = chunked_body(self.buf)
            if decoded is None:
                return None
            body, used = decoded
        elif b"content-length" in head.headers:
            used = int(head.headers[b"content-length"])
            if len(self.buf) < used:
                return None
            body = bytes(self.buf[:used])
        elif eof:  # no framing: the body is everything up to the close
            body, used = bytes(self.buf), len(self.buf)
        else:
            return None
        del self.buf[:used]
        return Response(head.status, body, close=eof or wants_close(head))

    def _deliver(self, response: Response) -> None:
        waiter, self.waiter, self.head = self.waiter, None, None
        if self.buf:
            self.closed = True  # more bytes than one response: out of step, do not reuse
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def fail(self, error: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        self.closed = True
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


# --- one client ------------------------------------------------------------------------------


def request_bytes(path: str, host: str, port: int, keep_alive: bool) -> bytes:
    # A client opening one connection per request says so, as HTTP/1.1 clients do.
    close = "" if keep_alive else "Connection: close\r\n"
    return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{close}\r\n".encode("latin-1")


class Client:
    """One client: sends a request, waits for the whole response, records it; never retries."""

    def __init__(
        self,
        port: int,
        *,
        path: str = "/",
        keep_alive: bool = True,
        timeout: float = 5.0,
        expect_status: int = 200,
        body_ok: Callable[[bytes], bool] | None = None,
        reconnect_every: int = 0,
        host: str = HOST,
    ) -> None:
        self.port = port
        self.host = host
        self.path = path
        self.keep_alive = keep_alive
        self.timeout = timeout
        self.expect_status = expect_status
        self.body_ok = body_ok
        # A client that reconnects now and then (a pool with a connection lifetime) gives the
        # kernel a chance to hand its next connection to a worker added meanwhile. 0: never.
        self.reconnect_every = reconnect_every
        self._on_connection = 0
        self.closed_by_header = 0  # keep-alive connections the server ended with Connection: close
        self.closed_idle = 0  # keep-alive connections found closed (EOF) before reuse
        self._conn: _Connection | None = None
        self._started: float | None = None  # when the request in flight started
        self._requests: dict[str, bytes] = {}

    @property
    def busy(self) -> bool:
        return self._started is not None

    def expire(self, now: float) -> None:
        """Fail the response being waited for if it is overdue; called by the watchdog."""
        conn = self._conn
        if self._started is not None and now - self._started > self.timeout and conn and conn.waiter:
            conn.fail(TimeoutError())

    async def request(self, path: str | None = None) -> Outcome:
        path = self.path if path is None else path
        data = self._requests.get(path)
        if data is None:
            data = self._requests[path] = request_bytes(path, self.host, self.port, self.keep_alive)
        if self._conn is not None and self._conn.dropped():
            # The server closed the connection after a complete response, before we reused it:
            # reconnecting is what any client does, not a failure.
            self.closed_idle += 1
            self.close()
        start = self._started = time.monotonic()
        connecting = self._conn is None
        try:
            if self._conn is None:
                self._conn = await self._connect(start)
                self._on_connection = 0
            connecting = False
            response = await self._conn.request(data)
        except (OSError, RequestFailed, ValueError) as error:
            self.close()  # its state is unknown now
            lost = classify(error, connecting)
            return Outcome(start, time.monotonic(), lost, label(lost, error=error), 0, b"", self.keep_alive)
        finally:
            self._started = None
        end = time.monotonic()
        self._on_connection += 1
        if response.close or not self.keep_alive:
            if self.keep_alive:
                self.closed_by_header += 1
            self.close()
        elif self.reconnect_every and self._on_connection >= self.reconnect_every:
            self.close()
        failure = None
        if response.status != self.expect_status:
            failure = Failure.BAD_STATUS
        elif self.body_ok is not None and not self.body_ok(response.body):
            failure = Failure.BAD_BODY
        word = "" if failure is None else label(failure, response.status)
        return Outcome(start, end, failure, word, response.status, response.body, self.keep_alive)

    async def _connect(self, start: float) -> _Connection:
        conn = _Connection()
        loop = asyncio.get_running_loop()
        # wait_for, not asyncio.timeout_at: the benchmarks and the tests' load run on Python 3.10 too.
        remaining = max(0.0, start + self.timeout - time.monotonic())
        await asyncio.wait_for(loop.create_connection(lambda: conn, self.host, self.port), remaining)
        return conn

    def connected(self) -> bool:
        """True while the kept-alive connection is open: not closed by either side, no EOF waiting."""
        return self._conn is not None and not self._conn.dropped()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


Record = Callable[[Outcome], None]


@contextlib.asynccontextmanager
async def watchdog(clients: Sequence[Client]) -> AsyncIterator[None]:
    """Expire overdue requests of ``clients`` (a list that may grow meanwhile) while inside."""

    async def watch() -> None:
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            now = time.monotonic()
            for client in clients:
                client.expire(now)

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- shapes of load --------------------------------------------------------------------------


async def closed_loop(
    client: Client, budget: Budget, record: Record, pause_after_failure: float = 0.0
) -> None:
    """Request after request, each sent when the last is answered, while the budget lasts."""
    try:
        while budget.take():
            outcome = await client.request()
            record(outcome)
            if not outcome.ok and pause_after_failure:
                # Not a retry: the next request is a new one. The pause keeps a dead server from
                # turning this loop into a failure counter spinning at full speed.
                await asyncio.sleep(pause_after_failure)
    finally:
        client.close()


async def _sleep_until(at: float) -> None:
    delay = at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def paced(client: Client, interval: float, first_at: float, budget: Budget, record: Record) -> None:
    """One request every ``interval`` seconds from ``first_at``; a client that fell behind (a slow
    response) does not burst to catch up."""
    next_at = first_at
    try:
        while True:
            await _sleep_until(next_at)
            next_at = max(next_at, time.monotonic()) + interval
            if not budget.take():
                return
            record(await client.request())
    finally:
        client.close()


async def open_loop(
    make_client: Callable[[], Client],
    rate: float,
    start_at: float,
    end_at: float,
    budget: Budget,
    record: Record,
) -> list[Client]:
    """``rate`` requests a second from ``start_at`` to ``end_at``, on schedule whatever is in flight.

    A request takes an idle client from the pool (its connection kept alive) or a new one. Returns
    every client it made, all closed, so a caller can read their connection counters.
    """
    made: list[Client] = []
    idle: list[Client] = []
    pending: set[asyncio.Task[None]] = set()

    async def one(client: Client) -> None:
        record(await client.request())
        idle.append(client)

    async with watchdog(made):
        at = start_at
        while at < end_at:
            await _sleep_until(at)
            at += 1 / rate
            if not budget.take():
                break
            if idle:
                client = idle.pop()
            else:
                client = make_client()
                made.append(client)
            task = asyncio.create_task(one(client))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
    for client in made:
        client.close()
    return made


@dataclass(frozen=True)
class LoadPlan:
    port: int
    path: str = "/"
    keep_alive: int = 16  # clients that keep one connection
    fresh: int = 4  # clients that open a connection per request
    duration: float = 10.0  # no request starts after this
    rate: float | None = None  # requests a second per client (paced); None: closed loop
    max_requests: int = 10_000_000  # over all clients
    timeout: float = 5.0  # per request, connect included
    pause_after_failure: float = 0.0
    host: str = HOST


@dataclass
class LoadTotals:
    sent: int
    closed_by_header: int
    closed_idle: int


async def run_load(
    plan: LoadPlan,
    record: Record,
    budget: Budget | None = None,
    body_ok: Callable[[bytes], bool] | None = None,
) -> LoadTotals:
    """Run the plan's clients until the budget (by default the plan's duration and count) runs out."""
    budget = budget or Budget(time.monotonic() + plan.duration, plan.max_requests)

    def client(keep_alive: bool) -> Client:
        return Client(
            plan.port,
            path=plan.path,
            keep_alive=keep_alive,
            timeout=plan.timeout,
            body_ok=body_ok,
            host=plan.host,
        )

    clients = [client(True) for _ in range(plan.keep_alive)] + [client(False) for _ in range(plan.fresh)]
    now = time.monotonic()
    if plan.rate:
        interval = 1 / plan.rate
        # The clients' first requests are spread over one interval so they do not all fire at once.
        runs = [
            paced(c, interval, now + interval * i / len(clients), budget, record)
            for i, c in enumerate(clients)
        ]
    else:
        runs = [closed_loop(c, budget, record, plan.pause_after_failure) for c in clients]
    # No request starts after the deadline and each one times out, so this bound never ends a
    # healthy run; it only guarantees the load ends.
    bound = max(0.0, budget.deadline - now) + plan.timeout + 2
    async with watchdog(clients):
        # asyncio.TimeoutError is the builtin TimeoutError only from Python 3.11 on.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*runs), bound)
    for c in clients:
        c.close()
    return LoadTotals(
        sent=budget.sent,
        closed_by_header=sum(c.closed_by_header for c in clients),
        closed_idle=sum(c.closed_idle for c in clients),
    )


class BackgroundLoad:
    """A ``LoadPlan`` run in a thread of its own until stopped (or its duration ends), for tests.

    Counts ok and failed requests, failures by word, and keeps the distinct bodies of the ok ones
    (a test asks which workers answered).
    """

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self.ok = 0
        self.failures: collections.Counter[str] = collections.Counter()
        self._bodies: set[bytes] = set()
        self._lock = threading.Lock()
        self._budget = Budget(time.monotonic() + plan.duration, plan.max_requests)
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def bodies(self) -> set[bytes]:
        with self._lock:
            return set(self._bodies)

    def __str__(self) -> str:
        return f"{self.ok} ok, {self.failed} failed {dict(self.failures)}"

    def __enter__(self) -> BackgroundLoad:
        self._budget = Budget(time.monotonic() + self.plan.duration, self.plan.max_requests)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._budget.stop()
        self._thread.join(self.plan.timeout + 5)

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            if outcome.ok:
                self.ok += 1
                self._bodies.add(outcome.body)
            else:
                self.failures[outcome.label] += 1

    def _run(self) -> None:
        asyncio.run(run_load(self.plan, self._record, self._budget))
