"""The master: binds, supervises, and applies decisions; never imports the app.

Theory of operation. ``run()`` binds every socket, creates the scoreboard and the "alive" pipe,
starts the first zygote, and then loops: wait on one selector (the wake-up socket that signals and
other threads write to, each zygote's channel, and a pidfd per child process), handle what
arrived, then reconcile. Reconciling asks the pure ``policy.fleet.plan`` which workers to start
and retire, and applies the answer. Every change of a worker's state goes through its
``WorkerRecord`` (``forkserve.policy.lifecycle``), so the table there is the whole lifecycle.

Exits are learned from pidfds (``os.pidfd_open``), which work for the double-forked workers this
process adopts as a child subreaper, need no SIGCHLD handler, and so work on an embedding host's
thread too. A pid is only reaped once it is known to be ours, so an embedding host's own children
are left alone; the CLI master (``owns_process``) also sweeps any other orphan that lands on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from forkserve.common import hooks, memory, privileges, sockets
from forkserve.common.logs import LogSetup
from forkserve.common.scoreboard import Scoreboard, StopMode
from forkserve.common.sizing import cpu_budget
from forkserve.common.zygotespec import ZygoteSpec
from forkserve.config.settings import Config
from forkserve.errors import ForkserveError
from forkserve.master import startup, upgrade
from forkserve.master.core import ZygoteRetry
from forkserve.master.fleet import FleetChanges
from forkserve.master.generations import Generations
from forkserve.master.guard import LoopGuard
from forkserve.master.process import (
    SignalCapture,
    remove_pidfile,
    set_child_subreaper,
    signal_process,
    write_pidfile,
)
from forkserve.master.reaping import Reaping
from forkserve.master.registry import WorkerRegistry
from forkserve.master.zygoteside import ZygoteSide
from forkserve.policy.backoff import Backoff
from forkserve.policy.exits import signal_name
from forkserve.policy.lifecycle import WorkerRecord
from forkserve.policy.masterstate import MasterState, ShutdownMode, Stop, Stopped
from forkserve.policy.timeouts import startup_limit
from forkserve.policy.zygoteidle import zygote_state
from forkserve.services import events
from forkserve.services.autoscaler import Autoscaler, Scaling, scale_settings
from forkserve.services.balancer import Balancer
from forkserve.services.devreload import SourceWatcher
from forkserve.services.services import Service, build_services
from forkserve.version import __version__

logger = logging.getLogger("forkserve")

TICK = 0.25
IMMEDIATE_GRACE = 1.0
HANDLED_SIGNALS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU,
    signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD, signal.SIGWINCH,
)  # fmt: skip


class Master(FleetChanges, ZygoteSide, Reaping):
    def __init__(
        self,
        app: Any,
        config: Config,
        *,
        app_name: str | None = None,
        logs: LogSetup | None = None,
        handle_signals: bool = True,
        owns_process: bool = False,
        argv: list[str] | None = None,
        run_zygote: Callable[[ZygoteSpec, LogSetup], int] | None = None,
    ) -> None:
        self.app = app
        self.config = config
        self.app_name: str = app_name or (
            app if isinstance(app, str) else str(getattr(app, "__qualname__", "app"))
        )
        self.logs = logs or LogSetup.from_config(config, "master")
        self.handle_signals = handle_signals
        self.owns_process = owns_process
        self.handover = upgrade.Handover(argv, config.pid)
        self.watcher: SourceWatcher | None = None
        self.autoscaler: Autoscaler | None = None
        self.exec_mode = isinstance(app, str)
        if not self.exec_mode and run_zygote is None:
            raise TypeError("an app object needs run_zygote: the zygote is forked from this process")
        # The zygote's code, for fork mode only: handed in (forkserve.api), so this side never imports it.
        self.run_zygote = run_zygote
        self.requests: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self.generations = Generations()
        self.backoff = Backoff()
        self.zygote_retry: ZygoteRetry | None = None
        self.state = MasterState()  # serving / reloading / stopping / stopped: policy/masterstate.py
        self.error: ForkserveError | None = None
        self.desired = 1
        self.started = threading.Event()
        self.listeners: list[sockets.Listener] = []
        self.socket_activated = False
        self.identity: privileges.Identity | None = None
        self.events = events.EventLog()
        self.services: list[Service] = []
        self.app_environ: dict[str, str] = {}  # --env-file's variables for the next generation
        self.metrics_dir: str | None = None  # set by the metrics service, handed to every zygote
        self.balancer: Balancer | None = None
        self.alive_r = self.alive_w = -1
        self._wake_r, self._wake_w = socket.socketpair()
        for end in (self._wake_r, self._wake_w):
            end.setblocking(False)

    # ------------------------------------------------------------------ public, thread-safe

    def stop(self, graceful: bool = True) -> None:
        self._request(lambda: self.begin_stop(ShutdownMode.GRACEFUL if graceful else ShutdownMode.IMMEDIATE))

    def reload(self) -> None:
        self._request(self.begin_reload)

    def scale(self, delta: int, reason: str = "api") -> None:
        self._request(lambda: self._set_desired(self.desired + delta, reason))

    def set_workers(self, count: int | None = None, *, delta: int = 0, reason: str = "api") -> Future[bool]:
        """Set the number of workers to COUNT (or the current number + DELTA); the Future says
        whether it was accepted (False when out of range, see ``worker_limit``, or stopping)."""
        return self.call(
            lambda: (
                not self.state.stopping
                and self._set_desired(self.desired + delta if count is None else count, reason)
            )
        )

    @property
    def generation(self) -> int:
        return self.generations.current

    @property
    def zygote_state(self) -> str:
        generations = self.generations
        pending = generations.pending
        # A pending zygote of a newer generation is a reload's: the current one may still serve.
        loading = pending is not None and (
            pending.generation == generations.current or not generations.ever_ready
        )
        return zygote_state(
            running=generations.current_zygote() is not None,
            loading=loading,
            retrying=self.zygote_retry is not None,
            retired=generations.idle_retired == generations.current,
            stopping=self.state.stopping,
        ).value

    def live_workers(self) -> list[WorkerRecord]:
        return self.workers.live()

    def pass_on_upgrade(self, variable: str, fd: int) -> None:
        self.handover.extra_fds[variable] = fd

    def call(self, action: Callable[[], Any]) -> Future[Any]:
        """Run ACTION on the master's thread; its result (or exception) arrives through the Future."""
        future: Future[Any] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(action())
            except BaseException as error:
                future.set_exception(error)

        self._request(run)
        return future

    def _request(self, action: Callable[[], object]) -> None:
        self.requests.put(action)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        """Serve until stopped; return 0, or raise the ForkserveError that stopped the server."""
        capture = SignalCapture(self._wake_w, HANDLED_SIGNALS)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        scoreboard: Scoreboard | None = None
        try:
            prepared = startup.prepare(self.config, exec_mode=self.exec_mode)
            self.app_environ, self.identity = prepared.app_environ, prepared.identity
            self.listeners, self.socket_activated = prepared.listeners, prepared.activated > 0
            self.desired = self._resolve_workers()
            set_child_subreaper(True)
            if self.config.pid:
                write_pidfile(self.config.pid)
            privileges.hand_over(
                [*self.logs.files, *(lis.spec.path for lis in self.listeners if lis.owns_path)],
                self.identity,
            )
            self.scaling = Scaling(scale_settings(self.config, self.desired))
            scoreboard = self.scoreboard = Scoreboard.create(max(64, 4 * self.scaling.settings.max_workers))
            self.workers = WorkerRegistry(scoreboard, self.selector)
            # Only this process may hold the write end: EOF on it is how the others learn it died.
            self.alive_r, self.alive_w = os.pipe()
            if self.handle_signals:
                capture.install()
            logger.info(
                "forkserve %s starting (master pid %d) for %s", _version(), os.getpid(), self.app_name
            )
            startup.log_listeners(self.config, prepared)
            self.services = build_services(self.config)
            self.balancer = next((s for s in self.services if isinstance(s, Balancer)), None)
            for service in self.services:
                service.start(self)
            self._publish_fleet_size()
            hooks.run_master_hook("on_starting", self.config, self._server_info(1))
            self._start_zygote(self.generations.next_number())
            if self.config.reload:
                config = self.config
                self.watcher = SourceWatcher(
                    config.reload_dirs or [config.app_dir], self.reload,
                    config.reload_includes, config.reload_excludes, config.reload_delay,
                )  # fmt: skip
                self.watcher.start()
            if self.scaling.active:
                self._start_autoscaler()
            memory.trim()  # what starting up freed: 0.7 MiB that would stay resident for good
            self._loop()
        finally:
            if self.watcher is not None:
                self.watcher.stop()
            if self.autoscaler is not None:
                self.autoscaler.stop()
            self._cleanup()
            self.state.apply(Stopped())
            self.events.emit(
                events.STOPPED, "forkserve stopped", exit_code=self.error.exit_code if self.error else 0
            )
            for service in reversed(self.services):
                try:
                    service.stop()
                except Exception:
                    logger.exception("stopping the %s service failed", service.name)
            capture.restore()
            if scoreboard is not None:
                scoreboard.close()
            if self.alive_w >= 0:
                os.close(self.alive_w)
                os.close(self.alive_r)
            sockets.close_all(self.listeners)
            if self.handover.pidfile:
                remove_pidfile(self.handover.pidfile)
            set_child_subreaper(False)
            self.selector.close()
            self.started.set()
        if self.error is not None:
            raise self.error
        logger.info("forkserve stopped")
        return 0

    def _resolve_workers(self) -> int:
        if self.config.workers != "auto":
            return self.config.workers
        budget = cpu_budget()
        logger.info("-w auto: %s", budget.describe())
        return budget.workers

    def _loop(self) -> None:
        guard = LoopGuard()
        startup_timeout = startup_limit(self.config.startup_timeout, self.config.timeout)
        while True:
            # Signals first: a TERM that reached the whole process group explains the exits beside it.
            ready = sorted(self.selector.select(TICK), key=lambda event: event[0].data[0] != "wake")
            for key, _ in ready:
                kind, target = key.data
                with guard.step(f"handling a {kind} event"):
                    if kind == "wake":
                        self._drain_wakeups()
                    elif kind == "channel":
                        self._read_channel(target)
                    elif kind == "worker":
                        self._reap_worker(target)
                    elif kind == "zygote":
                        self._reap_zygote(target)
            with guard.step("reaping"):
                if self.owns_process:
                    self._sweep_orphans()
                for record, status in self.workers.poll():
                    self._worker_exited(record, status)
            now = time.monotonic()
            with guard.step("checking timeouts"):
                self.workers.enforce_timeouts(now, self.config.timeout, startup_timeout)
            if self.state.stopping:
                if not self.workers.live() and self.generations.all_exited():
                    return
            else:
                with guard.step("reconciling"):
                    self._reconcile(now)
            time.sleep(guard.end_pass())

    # ------------------------------------------------------------------ wake-ups and signals

    def _drain_wakeups(self) -> None:
        try:
            data = self._wake_r.recv(4096)
        except BlockingIOError:
            data = b""
        for number in data:
            if number:
                self._on_signal(number)
        while True:
            try:
                action = self.requests.get_nowait()
            except queue.Empty:
                break
            action()

    def _on_signal(self, number: int) -> None:
        action = self._signal_actions().get(number)
        if action is None:  # CHLD and WINCH only wake the loop
            return
        logger.info("received %s", signal_name(number))
        action()

    def _signal_actions(self) -> dict[int, Callable[[], object]]:
        """Each signal's meaning for the master (docs/signals.md)."""
        return {
            signal.SIGTERM: lambda: self.begin_stop(ShutdownMode.GRACEFUL),
            # A second Ctrl-C does not wait for the first one's drain.
            signal.SIGINT: lambda: self.begin_stop(
                ShutdownMode.IMMEDIATE if self.state.stopping else ShutdownMode.GRACEFUL
            ),
            signal.SIGQUIT: lambda: self.begin_stop(ShutdownMode.IMMEDIATE),
            signal.SIGHUP: self.begin_reload,
            signal.SIGTTIN: lambda: self._set_desired(self.desired + 1, "signal"),
            signal.SIGTTOU: lambda: self._set_desired(self.desired - 1, "signal"),
            signal.SIGUSR1: self._reopen_logs,
            signal.SIGUSR2: self._upgrade,
        }

    def _reopen_logs(self) -> None:
        self.logs.reopen()
        privileges.hand_over(self.logs.files, self.identity)
        # Zygotes too: a worker forked after the rotation inherits its zygote's log file.
        pids = [r.pid for r in self.workers.live()] + [
            z.pid for z in self.generations.zygotes if not z.exited
        ]
        for pid in pids:
            if pid:
                signal_process(pid, signal.SIGUSR1)

    def _upgrade(self) -> None:
        refusal = upgrade.refusal(socket_activated=self.socket_activated, balance=self.config.balance)
        if refusal is not None:
            logger.warning("USR2 ignored: %s", refusal)
        elif not self.state.stopping:
            self.handover.start(self.listeners)

    # ------------------------------------------------------------------ stopping

    def begin_stop(self, mode: ShutdownMode) -> None:
        if self.state.apply(Stop(mode)) is not None:
            return
        graceful = mode is ShutdownMode.GRACEFUL
        self.events.emit(events.STOPPING, f"{mode.value} shutdown", mode=mode.value)
        now = time.monotonic()
        grace = self.config.graceful_timeout + self.config.shutdown_delay if graceful else IMMEDIATE_GRACE
        live = self.workers.live()
        logger.info("%s shutdown: stopping %d worker%s", mode.value, len(live), "" if len(live) == 1 else "s")
        number = signal.SIGTERM if graceful else signal.SIGQUIT
        for record in live:
            self.workers.stop(record, number, grace, now, "server stopping", StopMode.SHUTDOWN)
        self.generations.retire_all()
        # The workers are the last to hold the listening sockets: once the last one has emptied the
        # accept queue and closed its copy, the kernel refuses new connections instead of queueing
        # them for nobody (which would end in resets).
        for listener in self.listeners:
            listener.sock.close()

    def _server_info(self, generation: int) -> hooks.ServerInfo:
        return hooks.ServerInfo(os.getpid(), self.desired, generation, self.config)

    def _cleanup(self) -> None:
        """Whatever is still alive here is killed: a leaked worker is a bug."""
        if hasattr(self, "workers"):
            self.workers.kill_all()
        self.generations.kill_all()
        self._wake_r.close()
        self._wake_w.close()


def _version() -> str:
    return __version__
