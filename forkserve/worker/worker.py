"""A worker: serves the app on uvicorn's protocol stack over the sockets the master bound.

Theory of operation. The zygote built and loaded a ``uvicorn.Config`` before forking, so a worker
starts with the app, middleware and protocol classes already imported. It runs uvicorn's ``Server``
with forkserve owning the signal handlers (uvicorn's ``capture_signals`` re-raises the captured
signal on exit, which is right for a CLI and wrong for a worker whose exit status the master reads):

    TERM, INT   graceful: stop accepting, finish in-flight requests within --graceful-timeout, run
                lifespan shutdown, exit 0. A second INT is immediate. INT runs --worker-int first
                (on the loop, at its next turn).
    QUIT        immediate: run --worker-int (in the handler, as gunicorn does), exit now, skipping
                lifespan shutdown.
    USR1        reopen the log file.
    USR2        dump every thread's Python stack to the log (faulthandler; works while the loop is
                blocked, which is why the master sends it to a hung worker before SIGKILL), then,
                if the loop runs, every asyncio task's stack: a lifespan startup that awaits
                forever shows there, not in the threads' stacks. When the master marked the slot
                ABORT (it is killing this worker as hung), --worker-abort runs after the dump.

A ticker on the event loop writes the heartbeat and request counters into the worker's scoreboard
slot, so they cost nothing per request and go stale exactly when the loop is blocked. The read end
of the master's "alive" pipe is watched too: EOF means the master died, and the worker leaves
within a second instead of serving unsupervised.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import random
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from forkserve.common import forksignals, handoff, hooks, messages
from forkserve.common.logs import LogSetup
from forkserve.common.scoreboard import Scoreboard, SlotState, StopMode
from forkserve.common.sockets import accept_queue
from forkserve.config.settings import Config
from forkserve.errors import EXIT_APP, ConfigError
from forkserve.http import uvicorn_api, wsgi
from forkserve.http.choice import http_protocol_class
from forkserve.http.protocol import wrap_app
from forkserve.http.proxied import proxy_protocol_gate
from forkserve.http.secure_headers import server_override
from forkserve.http.uvicorn_api import asyncio_run
from forkserve.worker import inbox, wsdrain
from forkserve.worker.info import worker_info
from forkserve.worker.reqstats import RequestStats

logger = logging.getLogger("forkserve")

HEARTBEAT_INTERVAL = 0.25
ORPHAN_GRACE = 1.0
# On shutdown, how long a worker keeps accepting while connections wait in the accept queue.
QUEUE_DRAIN_LIMIT = 2.0
# reuseport: a retiring worker's queue must stay empty this long (several of the balancer's polls).
REUSEPORT_SETTLE = 0.2


def uvicorn_config(config: Config, app: Any) -> uvicorn_api.Config:
    """The uvicorn.Config for forkserve's settings; never binds, never configures logging."""
    http = http_protocol_class(
        config.http,
        header_timeout=config.header_timeout,
        max_header_size=config.max_header_size,
        max_header_count=config.max_header_count,
        max_request_size=config.limit_max_request_size,
        max_request_line=config.limit_request_line,
    )
    if config.proxy_protocol:
        http = proxy_protocol_gate(
            http, trusted=config.forwarded_allow_ips, header_timeout=config.header_timeout
        )
    # --secure-header Server=VALUE replaces uvicorn's own Server header rather than adding a second.
    server = server_override(config.secure_header)
    return uvicorn_api.Config(
        app,
        loop=config.loop,
        http=http,
        ws=config.ws,
        lifespan=config.lifespan,  # type: ignore[arg-type]  # validated by the settings table
        log_config=None,
        log_level=None,
        # A --access-logformat line is written by forkserve.http.accesslog instead.
        access_log=access_log_on(config) and config.access_logformat is None,
        proxy_headers=config.proxy_headers,
        forwarded_allow_ips=config.forwarded_allow_ips,
        root_path=config.root_path,
        backlog=config.backlog,
        timeout_keep_alive=config.keep_alive,
        # uvicorn counts the connection asking too (N lets N - 1 others in); forkserve's N means N.
        limit_concurrency=config.limit_concurrency + 1 if config.limit_concurrency else None,
        timeout_graceful_shutdown=max(1, int(config.graceful_timeout)),
        ws_max_size=config.ws_max_size,
        ws_max_queue=config.ws_max_queue,
        ws_ping_interval=config.ws_ping_interval or None,
        ws_ping_timeout=config.ws_ping_timeout or None,
        ws_per_message_deflate=config.ws_per_message_deflate,
        server_header=config.server_header and server != "",
        headers=[("server", server)] if server else None,
        date_header=config.date_header,
    )


def loop_factory(uv_config: uvicorn_api.Config) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """--loop's event loop factory, for the zygote to resolve before it forks.

    Resolving it imports uvloop: done in the zygote, its modules are shared copy-on-write by every
    worker rather than imported into each after the fork (1.4 MiB of private memory per worker
    measured on the hello app, docs/design.md "Memory").
    """
    try:
        return uv_config.get_loop_factory()
    except ImportError as exc:
        raise ConfigError(f"--loop {uv_config.loop}: {exc}; install it, or pass --loop auto") from None


def access_log_on(config: Config) -> bool:
    """--access-log, or gunicorn's way: an --access-logfile given."""
    return config.access_log or config.access_logfile is not None


class HealthCheck:
    """Answers --health-path before the app: 200 while this worker serves, 503 once it is stopping."""

    def __init__(self, app: Any, path: str, server: WorkerServer) -> None:
        self.app = app
        self.path = path
        self.server = server

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        serving = not self.server.stopping
        body = b"ok\n" if serving else b"stopping\n"
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200 if serving else 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@dataclass
class WorkerContext:
    worker_id: int
    slot: int
    generation: int
    title: str
    uv_config: uvicorn_api.Config
    listeners: list[socket.socket]
    scoreboard: Scoreboard
    channel: socket.socket
    alive_fd: int
    logs: LogSetup
    config: Config
    hooks: hooks.WorkerHooks = field(default_factory=hooks.WorkerHooks)
    # --balance round-robin/least-conn/ip-hash: connections come from here, not from listeners.
    handoff: socket.socket | None = None
    # --loop's event loop factory (None: asyncio's default), resolved by the zygote (loop_factory).
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None


class WorkerServer(uvicorn_api.Server):
    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx.uv_config)
        self.ctx = ctx
        self.slot = ctx.scoreboard[ctx.slot]
        self._ticker: asyncio.TimerHandle | None = None
        # Set by TERM/INT; should_exit follows at once, or after --shutdown-delay on a shutdown.
        self.stopping = False
        self._exit_at: float | None = None
        self._recycle_after = 0
        if ctx.config.max_requests:
            self._recycle_after = ctx.config.max_requests + random.randint(0, ctx.config.max_requests_jitter)
        self._recycle_asked = False
        self._pool_sampler = wsgi.PoolSampler(time.monotonic())
        # Busyness: the time the loop wanted a CPU (on one, or waiting for one) over wall time
        # between ticks. An idle loop sleeps in epoll and wants none. Counting the run-queue wait
        # too keeps a saturated loop at 100% on a machine whose CPUs are contended, where CPU time
        # alone would read low just when more workers are needed. (A loop blocked in a sync sleep
        # is not busy by this measure: that is the hung check's business.)
        self._cpu_mark = _cpu_demand()
        self._wall_mark = time.monotonic()
        self._ticks = 0
        self._rebalance_seen = 0
        self.hook_failed = False
        self.request_stats: RequestStats | None = None
        if ctx.config.metrics_bind:
            # Inside uvicorn's proxy-headers layer, which the fast protocol then replaces (wrap_app).
            stats = self.request_stats = RequestStats(None, ctx.worker_id)

            def count_requests_of(app: Any) -> RequestStats:
                stats.app = app
                return stats

            wrap_app(ctx.uv_config, count_requests_of)
        if ctx.config.health_path:
            path = ctx.config.health_path
            wrap_app(ctx.uv_config, lambda app: HealthCheck(app, path, self))
        # The --ws protocol class, once uvicorn's Config is loaded (None with --ws none).
        self.ws_class: type[Any] | None = getattr(ctx.uv_config, "ws_protocol_class", None)
        self.inbox: inbox.Inbox | None = None
        if ctx.handoff is not None:
            self.server_state.connections = handoff.CountedConnections(self.slot)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        handlers = {
            signal.SIGTERM: self._graceful,
            signal.SIGINT: self._interrupted,
            signal.SIGQUIT: self._immediate,
            signal.SIGUSR1: self._reopen_logs,
        }
        for number, handler in handlers.items():
            signal.signal(number, handler)
        forksignals.release()
        yield

    def _graceful(self, number: int, frame: FrameType | None) -> None:
        if self.stopping and number == signal.SIGINT:
            self._immediate(number, frame)
        if self.stopping:
            return
        self.stopping = True
        delay = self.ctx.config.shutdown_delay if self.slot.stop_mode == StopMode.SHUTDOWN else 0.0
        if delay > 0:
            # Health checks say 503 from now on; serving goes on until the balancer has noticed.
            self._exit_at = time.monotonic() + delay
        else:
            self.should_exit = True
            # At once, not at the next tick: --balance stops sending this worker connections.
            self.slot.state = SlotState.DRAINING

    def _interrupted(self, number: int, frame: FrameType | None) -> None:
        if not self.stopping and self.ctx.hooks.worker_int is not None:
            # On the loop rather than in the handler: the hook may log, and the handler may have
            # interrupted a log write. The loop turns before the drain begins.
            args = ("worker_int", self.ctx.hooks.worker_int, worker_info())
            try:
                asyncio.get_running_loop().call_soon_threadsafe(hooks.run_signal_hook, *args)
            except RuntimeError:  # the loop has stopped already
                hooks.run_signal_hook(*args)
        self._graceful(number, frame)

    def _immediate(self, number: int, frame: FrameType | None) -> None:
        # No logging of our own here: the handler may have interrupted a write holding the log lock.
        # gunicorn runs worker_int here all the same; run_signal_hook swallows what that breaks.
        if number == signal.SIGQUIT:
            hooks.run_signal_hook("worker_int", self.ctx.hooks.worker_int, worker_info())
        os._exit(0)

    def _reopen_logs(self, number: int, frame: FrameType | None) -> None:
        self.ctx.logs.reopen()

    def _tick(self) -> None:
        slot = self.slot
        now = slot.heartbeat = time.monotonic()
        state = self.server_state
        slot.requests = state.total_requests
        slot.in_flight = len(state.tasks)
        slot.connections = len(state.connections)
        slot.websockets = wsdrain.count(state.connections, self.ws_class)
        self._ticks += 1
        if self._ticks % 4 == 0:
            cpu = _cpu_demand()
            ratio = (cpu - self._cpu_mark) / max(now - self._wall_mark, 1e-6)
            slot.busy = min(1.0, ratio)
            slot.rss = _rss_bytes()
            self._cpu_mark, self._wall_mark = cpu, now
            self._sweep_slow_heads()
            self._watch_wsgi_pool(now)
        if self.request_stats is not None:
            self.request_stats.flush()
        if slot.rebalance != self._rebalance_seen:
            self._rebalance_seen = slot.rebalance
            self._rebalance()
        if self._exit_at is not None and now >= self._exit_at:
            self.should_exit = True
        if self.should_exit and slot.state == SlotState.READY:
            slot.state = SlotState.DRAINING
        if self._recycle_after and not self._recycle_asked and state.total_requests >= self._recycle_after:
            self._ask_to_be_replaced(
                "max-requests",
                f"served {state.total_requests} requests (--max-requests): asking to be replaced",
            )
        self._ticker = asyncio.get_running_loop().call_later(HEARTBEAT_INTERVAL, self._tick)

    def _watch_wsgi_pool(self, now: float) -> None:
        """A WSGI app works in threads: their share of use is busyness, a stuck one is a hang."""
        pool = wsgi.active_pool()
        if pool is None:
            return
        reading = self._pool_sampler.read(pool, now, self.ctx.config.timeout)
        self.slot.busy = max(self.slot.busy, reading.busy)
        if reading.stuck is not None and not self._recycle_asked:
            self._ask_to_be_replaced("timeout", reading.stuck)

    def _ask_to_be_replaced(self, reason: str, why: str) -> None:
        # The master starts a replacement and drains this worker once it serves: nothing is dropped.
        self._recycle_asked = True
        logger.log(logging.WARNING if reason == "timeout" else logging.INFO, "%s", why)
        with contextlib.suppress(OSError):
            messages.send(
                self.ctx.channel,
                {"op": messages.Op.RECYCLE, "slot": self.ctx.slot, "pid": os.getpid(), "reason": reason},
            )

    def _rebalance(self) -> None:
        """Move a fair share of this worker's keep-alive clients to the workers added since.

        A keep-alive connection stays with the worker that accepted it, so workers the autoscaler
        adds under a burst of kept-alive clients would get none of it. Each connection picked here
        gets ``Connection: close`` on its next response (the per-connection drain, so nothing is
        cut off) and its client reconnects, to whichever worker accepts first: an idle one, since
        this one is busy.
        """
        ready = sum(
            1 for i in range(self.ctx.scoreboard.capacity) if self.ctx.scoreboard[i].state == SlotState.READY
        )
        connections = [c for c in self.server_state.connections if hasattr(c, "header_overdue")]
        if ready < 2 or not connections:
            return
        share = len(connections) - len(connections) // ready
        for connection in connections[:share]:
            connection.shutdown()
        logger.info(
            "rebalancing: %d of %d keep-alive connections will reconnect (%d workers ready)",
            share, len(connections), ready,
        )  # fmt: skip

    def _sweep_slow_heads(self) -> None:
        now = time.monotonic()
        closed = 0
        for connection in list(self.server_state.connections):
            overdue = getattr(connection, "header_overdue", None)
            if overdue is not None and overdue(now):
                closed += 1
        if closed:
            logger.debug("closed %d connections whose request head was late (--header-timeout)", closed)

    def _master_gone(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.ctx.alive_fd)
        logger.warning("the master process is gone; finishing in-flight requests and exiting")
        # Unsupervised, a worker must not linger: at most a second to finish what it has.
        self.config.timeout_graceful_shutdown = ORPHAN_GRACE  # type: ignore[assignment]  # takes floats
        self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.ctx.alive_fd, self._master_gone)
        self._tick()
        await super().startup(sockets=sockets)
        if self.should_exit:
            return
        if not await hooks.run_worker_hook("worker_ready", self.ctx.hooks.worker_ready, worker_info()):
            self.hook_failed = self.should_exit = True
            return
        if self.ctx.handoff is not None:
            self.inbox = inbox.Inbox(
                self.ctx.handoff,
                self.slot,
                inbox.protocol_factory(self),
                self.config.ssl,
                self._handed_over,
                per_wakeup=1 if self.ctx.config.balance == "least-conn" else 64,
            )
            self.inbox.open()
        self.slot.state = SlotState.READY
        self.ctx.logs.boot_finished()
        with contextlib.suppress(OSError):
            messages.send(
                self.ctx.channel, {"op": messages.Op.READY, "slot": self.ctx.slot, "pid": os.getpid()}
            )

    def _handed_over(self, protocol: Any) -> None:
        if self.stopping and hasattr(protocol, "shutdown"):
            protocol.shutdown()  # arrived while draining: serve it, with Connection: close

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.slot.state = SlotState.DRAINING
        self.stopping = True
        limit = min(QUEUE_DRAIN_LIMIT, self.ctx.config.graceful_timeout)
        if self.slot.stop_mode == StopMode.SHUTDOWN and not self.force_exit:
            await self._empty_accept_queues(sockets or [])
            if self.inbox is not None:
                # The balancer empties the accept queue into the channels, then says END.
                await self.inbox.wait_end(limit)
        elif self.ctx.config.balance == "reuseport" and not self.force_exit:
            # This socket is this worker id's alone: once the master steers new connections
            # away (within its poll), what already waits in its queue is served here.
            await self._empty_accept_queues(sockets or [], settle=REUSEPORT_SETTLE)
        if not self.force_exit:
            # Stop accepting first: the clients told to leave must reconnect to another worker.
            for server in self.servers:
                server.close()
            config = self.ctx.config
            await wsdrain.drain(
                self.server_state.connections, self.ws_class, config.ws_drain_period, config.graceful_timeout
            )
        await super().shutdown(sockets=sockets)
        if self.inbox is not None:
            self.inbox.close()
        if self.request_stats is not None:
            self.request_stats.flush()
        await hooks.run_worker_hook("worker_exit", self.ctx.hooks.worker_exit, worker_info())

    async def _empty_accept_queues(self, sockets: list[socket.socket], settle: float = 0.0) -> None:
        """Keep accepting while connections wait in the queue: closing now would reset them.

        The master closed its copies of the listening sockets when the shutdown began, so when
        the last worker closes its copy the socket is gone, and with it anything still queued.
        With SETTLE, the queue must stay empty that long (new connections may still be arriving).
        """
        deadline = time.monotonic() + min(QUEUE_DRAIN_LIMIT, self.ctx.config.graceful_timeout)
        empty_since: float | None = None
        while time.monotonic() < deadline:
            now = time.monotonic()
            if any((accept_queue(sock) or (0, 0))[0] for sock in sockets):
                empty_since = None
            elif empty_since is None:
                empty_since = now
            if empty_since is not None and now - empty_since >= settle:
                return
            await asyncio.sleep(0.005)


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _cpu_demand() -> float:
    """Seconds this thread has run or waited to run (schedstat); CPU time where that is missing."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as schedstat:
            run_ns, wait_ns = schedstat.read().split()[:2]
        return (int(run_ns) + int(wait_ns)) / 1e9
    except (OSError, ValueError):
        return time.process_time()


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def _reset_signals() -> None:
    for number in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH):
        signal.signal(number, signal.SIG_IGN)
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD, signal.SIGUSR1):
        signal.signal(number, signal.SIG_DFL)


def _stack_dump_file(logs: LogSetup) -> Any:
    stream = getattr(logs.handler, "stream", None)
    return stream if stream is not None and hasattr(stream, "fileno") else sys.stderr


def _task_stacks() -> str:
    """Each pending asyncio task's chain of awaits, innermost last, as a traceback reads."""
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:  # no loop runs (yet, or any more)
        return ""
    parts = []
    for task in tasks:
        frames: list[tuple[FrameType, int]] = []
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is not None:
                frames.append((frame, frame.f_lineno))
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        lines = traceback.format_list(traceback.StackSummary.extract(frames))
        parts.append(f"Stack of asyncio task {task.get_name()!r} (most recent await last):\n{''.join(lines)}")
    return "".join(parts)


def _dump_task_stacks(file: Any, slot: Any, abort: hooks.Hook | None) -> Any:
    def handler(number: int, frame: FrameType | None) -> None:
        # os.write, not logging: the handler may have interrupted a write holding the log lock.
        with contextlib.suppress(OSError, ValueError):
            os.write(file.fileno(), _task_stacks().encode(errors="replace"))
        if slot.stop_mode == StopMode.ABORT:
            hooks.run_signal_hook("worker_abort", abort, worker_info())

    return handler


def run(ctx: WorkerContext) -> int:
    """Serve until told to stop; return the process's exit code (3 when lifespan startup failed)."""
    from setproctitle import setproctitle

    setproctitle(ctx.title)
    ctx.logs.set_role("worker", worker=ctx.worker_id, generation=ctx.generation)
    _reset_signals()
    dump_file = _stack_dump_file(ctx.logs)
    slot = ctx.scoreboard[ctx.slot]
    signal.signal(signal.SIGUSR2, _dump_task_stacks(dump_file, slot, ctx.hooks.worker_abort))
    # Threads first, from C, at once (works while the loop is blocked); then the handler above.
    faulthandler.register(signal.SIGUSR2, file=dump_file, all_threads=True, chain=True)
    # Held since the fork (forksignals): a stop sent while booting now ends the worker by the
    # default action; USR1 waits for its handler in capture_signals.
    forksignals.release(forksignals.STOPS | {signal.SIGUSR2})
    slot.pid = os.getpid()
    slot.worker_id = ctx.worker_id
    slot.generation = ctx.generation
    slot.boot_time = slot.heartbeat = time.monotonic()
    slot.state = SlotState.BOOTING
    if not hooks.run_post_fork(ctx.hooks.post_fork, worker_info()):
        return EXIT_APP

    server = WorkerServer(ctx)
    try:
        asyncio_run(server.serve(sockets=ctx.listeners), loop_factory=ctx.loop_factory)
    except SystemExit as exc:
        # uvicorn exits 3 (STARTUP_FAILURE) when lifespan startup fails; it logged why already.
        return exc.code if isinstance(exc.code, int) else 1
    return EXIT_APP if server.hook_failed else 0
