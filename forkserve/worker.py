"""A worker: serves the app on uvicorn's protocol stack over the sockets the master bound.

Theory of operation. The zygote built and loaded a ``uvicorn.Config`` before forking, so a worker
starts with the app, middleware and protocol classes already imported. It runs uvicorn's ``Server``
with forkserve owning the signal handlers (uvicorn's ``capture_signals`` re-raises the captured
signal on exit, which is right for a CLI and wrong for a worker whose exit status the master reads):

    TERM, INT   graceful: stop accepting, finish in-flight requests within --graceful-timeout, run
                lifespan shutdown, exit 0. A second INT is immediate.
    QUIT        immediate: exit now, skipping lifespan shutdown.
    USR1        reopen the log file.
    USR2        dump every thread's Python stack to the log (faulthandler; works while the loop is
                blocked, which is why the master sends it to a hung worker before SIGKILL).

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
import signal
import socket
import sys
import time
from collections.abc import Generator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from uvicorn._compat import asyncio_run

from forkserve import messages
from forkserve.config import Config
from forkserve.logs import LogSetup
from forkserve.scoreboard import Scoreboard, SlotState

logger = logging.getLogger("forkserve")

HEARTBEAT_INTERVAL = 0.25
ORPHAN_GRACE = 1.0


def uvicorn_config(config: Config, app: Any) -> uvicorn.Config:
    """The uvicorn.Config for forkserve's settings; never binds, never configures logging."""
    return uvicorn.Config(
        app,
        loop=config.loop,
        http=config.http,
        ws=config.ws,
        lifespan=config.lifespan,  # type: ignore[arg-type]  # validated by the settings table
        log_config=None,
        log_level=None,
        access_log=config.access_log,
        proxy_headers=config.proxy_headers,
        forwarded_allow_ips=config.forwarded_allow_ips,
        root_path=config.root_path,
        backlog=config.backlog,
        timeout_keep_alive=config.keep_alive,
        timeout_graceful_shutdown=max(1, int(config.graceful_timeout)),
    )


@dataclass
class WorkerContext:
    worker_id: int
    slot: int
    generation: int
    title: str
    uv_config: uvicorn.Config
    listeners: list[socket.socket]
    scoreboard: Scoreboard
    channel: socket.socket
    alive_fd: int
    logs: LogSetup


class WorkerServer(uvicorn.Server):
    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx.uv_config)
        self.ctx = ctx
        self.slot = ctx.scoreboard[ctx.slot]
        self._ticker: asyncio.TimerHandle | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        handlers = {
            signal.SIGTERM: self._graceful,
            signal.SIGINT: self._graceful,
            signal.SIGQUIT: self._immediate,
            signal.SIGUSR1: self._reopen_logs,
        }
        for number, handler in handlers.items():
            signal.signal(number, handler)
        yield

    def _graceful(self, number: int, frame: FrameType | None) -> None:
        if self.should_exit and number == signal.SIGINT:
            self._immediate(number, frame)
        self.should_exit = True

    def _immediate(self, number: int, frame: FrameType | None) -> None:
        # No logging here: the handler may have interrupted a write holding the log lock.
        os._exit(0)

    def _reopen_logs(self, number: int, frame: FrameType | None) -> None:
        self.ctx.logs.reopen()

    def _tick(self) -> None:
        slot = self.slot
        slot.heartbeat = time.monotonic()
        state = self.server_state
        slot.requests = state.total_requests
        slot.in_flight = len(state.tasks)
        slot.connections = len(state.connections)
        if self.should_exit and slot.state == SlotState.READY:
            slot.state = SlotState.DRAINING
        self._ticker = asyncio.get_running_loop().call_later(HEARTBEAT_INTERVAL, self._tick)

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
        self.slot.state = SlotState.READY
        self.ctx.logs.boot_finished()
        with contextlib.suppress(OSError):
            messages.send(self.ctx.channel, {"op": "ready", "slot": self.ctx.slot, "pid": os.getpid()})

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.slot.state = SlotState.DRAINING
        await super().shutdown(sockets=sockets)


def _reset_signals() -> None:
    for number in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH):
        signal.signal(number, signal.SIG_IGN)
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD, signal.SIGUSR1):
        signal.signal(number, signal.SIG_DFL)


def _stack_dump_file(logs: LogSetup) -> Any:
    stream = getattr(logs.handler, "stream", None)
    return stream if stream is not None and hasattr(stream, "fileno") else sys.stderr


def run(ctx: WorkerContext) -> int:
    """Serve until told to stop; return the process's exit code (3 when lifespan startup failed)."""
    from setproctitle import setproctitle

    setproctitle(ctx.title)
    ctx.logs.set_role(f"worker {ctx.worker_id}")
    _reset_signals()
    faulthandler.register(signal.SIGUSR2, file=_stack_dump_file(ctx.logs), all_threads=True)
    slot = ctx.scoreboard[ctx.slot]
    slot.pid = os.getpid()
    slot.worker_id = ctx.worker_id
    slot.generation = ctx.generation
    slot.boot_time = slot.heartbeat = time.monotonic()
    slot.state = SlotState.BOOTING

    server = WorkerServer(ctx)
    try:
        asyncio_run(server.serve(sockets=ctx.listeners), loop_factory=ctx.uv_config.get_loop_factory())
    except SystemExit as exc:
        # uvicorn exits 3 (STARTUP_FAILURE) when lifespan startup fails; it logged why already.
        return exc.code if isinstance(exc.code, int) else 1
    return 0
