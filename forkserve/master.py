"""The master: binds, supervises, and applies decisions; never imports the app.

Theory of operation. ``run()`` binds every socket, creates the scoreboard and the "alive" pipe,
starts the first zygote, and then loops: wait on one selector (the wake-up socket that signals and
other threads write to, each zygote's channel, and a pidfd per child process), handle what
arrived, then reconcile. Reconciling asks the pure ``policy.fleet.plan`` which workers to start
and retire, and applies the answer. Every change of a worker's state goes through its
``WorkerRecord`` (``forkserve.lifecycle``), so the table there is the whole lifecycle.

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

from forkserve import events, hooks, messages, privileges, sockets, startup, upgrade, zygotes
from forkserve.autoscaler import Autoscaler, Measurement, Scaling, measure, scale_settings
from forkserve.balancer import Balancer
from forkserve.config import Config
from forkserve.devreload import SourceWatcher
from forkserve.envfile import read_env_file
from forkserve.errors import AppError, ConfigError, ForkserveError, WorkerBootError
from forkserve.exits import describe_status, signal_name
from forkserve.generations import Generations, ZygoteExit
from forkserve.lifecycle import SERVING_OR_ABOUT_TO, Event, State, WorkerRecord
from forkserve.logs import LogSetup
from forkserve.policy.backoff import Backoff, Verdict, boot_failure_verdict
from forkserve.policy.fleet import Retire, Spawn, WorkerView, plan
from forkserve.process import (
    SignalCapture,
    remove_pidfile,
    set_child_subreaper,
    signal_process,
    write_pidfile,
)
from forkserve.registry import WorkerRegistry, waitpid
from forkserve.scoreboard import Scoreboard, StopMode
from forkserve.services import Service, build_services
from forkserve.sizing import cpu_budget
from forkserve.zygote import ZygoteSpec
from forkserve.zygote import run as run_zygote

logger = logging.getLogger("forkserve")

TICK = 0.25
IMMEDIATE_GRACE = 1.0
# Why a worker asked to be replaced ("recycle"), in the event line's words.
RECYCLE_REASONS = {
    "max-requests": "it served --max-requests",
    "timeout": "a WSGI request outran --timeout",
}
HANDLED_SIGNALS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU,
    signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD, signal.SIGWINCH,
)  # fmt: skip


class Master:
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
    ) -> None:
        self.app = app
        self.config = config
        self.app_name: str = app_name or (
            app if isinstance(app, str) else str(getattr(app, "__qualname__", "app"))
        )
        self.logs = logs or LogSetup(
            config.log_level, "master", config.log_file, log_format=config.log_format
        )
        self.handle_signals = handle_signals
        self.owns_process = owns_process
        self.handover = upgrade.Handover(argv, config.pid)
        self.watcher: SourceWatcher | None = None
        self.autoscaler: Autoscaler | None = None
        self.exec_mode = isinstance(app, str)
        self.requests: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self.generations = Generations()
        self.backoff = Backoff()
        self.stopping: str | None = None
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
        self.reloading: tuple[int, float] | None = None  # (generation, started at) while a reload rolls
        self.alive_r = self.alive_w = -1
        self._wake_r, self._wake_w = socket.socketpair()
        for end in (self._wake_r, self._wake_w):
            end.setblocking(False)

    # ------------------------------------------------------------------ public, thread-safe

    def stop(self, graceful: bool = True) -> None:
        self._request(lambda: self.begin_stop("graceful" if graceful else "immediate"))

    def reload(self) -> None:
        self._request(self.begin_reload)

    def scale(self, delta: int, reason: str = "api") -> None:
        self._request(lambda: self._set_desired(self.desired + delta, reason))

    def set_workers(self, count: int | None = None, *, delta: int = 0, reason: str = "api") -> Future[bool]:
        """Set the number of workers to COUNT (or the current number + DELTA); the Future says
        whether it was accepted (False when out of range, see ``worker_limit``, or stopping)."""
        return self.call(
            lambda: (
                not self.stopping
                and self._set_desired(self.desired + delta if count is None else count, reason)
            )
        )

    @property
    def worker_limit(self) -> int:
        """The most workers the scoreboard holds (half its slots: the rest are for reloads)."""
        return self.scoreboard.capacity // 2

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
                [self.config.log_file, *(lis.spec.path for lis in self.listeners if lis.owns_path)],
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
                self.watcher = SourceWatcher([self.config.app_dir], self.reload)
                self.watcher.start()
            if self.scaling.active:
                self._start_autoscaler()
            self._loop()
        finally:
            if self.watcher is not None:
                self.watcher.stop()
            if self.autoscaler is not None:
                self.autoscaler.stop()
            self._cleanup()
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

    def _start_autoscaler(self) -> None:
        want_memory = self.scaling.wants_memory
        self.autoscaler = Autoscaler(
            self.config.scale_interval,
            lambda: measure(self.listeners, self.scoreboard, want_memory=want_memory),
            lambda measurement: self._request(lambda: self._apply_scaling(measurement)),
        )
        self.autoscaler.start()

    def _apply_scaling(self, measurement: Measurement) -> None:
        if self.stopping:
            return
        before = self.desired
        self.desired, recycles = self.scaling.apply(measurement, self.desired, time.monotonic())
        if self.desired != before:
            self.events.emit(
                events.SCALED, f"workers: {before} -> {self.desired}", before=before, after=self.desired,
                reason="autoscaler",
            )  # fmt: skip
        for recycle in recycles:
            record = self.workers.get(recycle.slot)
            if record is None or record.worker_id != recycle.worker_id or record.outgoing:
                continue
            if record.state is State.READY:
                logger.warning(
                    "replacing worker %d (pid %d): %s", record.worker_id, record.pid, recycle.reason
                )
                record.outgoing = True
                self.events.emit(
                    events.RECYCLE, f"replacing worker {record.worker_id}: {recycle.reason}",
                    worker_id=record.worker_id, pid=record.pid, reason="memory",
                )  # fmt: skip

    def _loop(self) -> None:
        while True:
            # Signals first: a TERM that reached the whole process group explains the exits beside it.
            ready = sorted(self.selector.select(TICK), key=lambda event: event[0].data[0] != "wake")
            for key, _ in ready:
                kind, target = key.data
                if kind == "wake":
                    self._drain_wakeups()
                elif kind == "channel":
                    self._read_channel(target)
                elif kind == "worker":
                    self._reap_worker(target)
                elif kind == "zygote":
                    self._reap_zygote(target)
            if self.owns_process:
                self._sweep_orphans()
            now = time.monotonic()
            self.workers.enforce_timeouts(now, self.config.timeout)
            if self.stopping:
                if not self.workers.live() and self.generations.all_exited():
                    return
                continue
            self._reconcile(now)

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
        if number in (signal.SIGCHLD, signal.SIGWINCH):
            return
        logger.info("received %s", signal_name(number))
        if number == signal.SIGTERM:
            self.begin_stop("graceful")
        elif number == signal.SIGINT:
            self.begin_stop("immediate" if self.stopping else "graceful")
        elif number == signal.SIGQUIT:
            self.begin_stop("immediate")
        elif number == signal.SIGHUP:
            self.begin_reload()
        elif number == signal.SIGTTIN:
            self._set_desired(self.desired + 1, "signal")
        elif number == signal.SIGTTOU:
            self._set_desired(self.desired - 1, "signal")
        elif number == signal.SIGUSR1:
            self.logs.reopen()
            privileges.hand_over([self.config.log_file], self.identity)  # the zygotes reopen it next
            # Zygotes too: a worker forked after the rotation inherits its zygote's log file.
            pids = [r.pid for r in self.workers.live()] + [
                z.pid for z in self.generations.zygotes if not z.exited
            ]
            for pid in pids:
                if pid:
                    signal_process(pid, signal.SIGUSR1)
        elif number == signal.SIGUSR2 and self.socket_activated:
            logger.warning(
                "USR2 ignored: systemd holds the sockets; restart the unit instead (no connection is lost)"
            )
        elif number == signal.SIGUSR2 and self.config.balance == "reuseport":
            logger.error(
                "USR2 is not supported with --balance reuseport (its sockets are per master); use HUP"
            )
        elif number == signal.SIGUSR2 and not self.stopping:
            self.handover.start(self.listeners)

    def _set_desired(self, count: int, reason: str) -> bool:
        """Set the number of workers; False (and a warning) when COUNT is out of range."""
        capacity = self.worker_limit
        if count < 1 or count > capacity:
            logger.warning("keeping %d workers: the number must be from 1 to %d", self.desired, capacity)
            return False
        logger.info("workers: %d -> %d", self.desired, count)
        before, self.desired = self.desired, count
        if before != count:
            self.events.emit(
                events.SCALED, f"workers: {before} -> {count}", before=before, after=count, reason=reason
            )
        return True

    # ------------------------------------------------------------------ stopping

    def begin_stop(self, mode: str) -> None:
        if self.stopping == "immediate" or self.stopping == mode:
            return
        self.stopping = mode
        self.events.emit(events.STOPPING, f"{mode} shutdown", mode=mode)
        now = time.monotonic()
        grace = self.config.graceful_timeout if mode == "graceful" else IMMEDIATE_GRACE
        live = self.workers.live()
        logger.info("%s shutdown: stopping %d worker%s", mode, len(live), "" if len(live) == 1 else "s")
        number = signal.SIGTERM if mode == "graceful" else signal.SIGQUIT
        grace += self.config.shutdown_delay if mode == "graceful" else 0.0
        for record in live:
            self.workers.stop(record, number, grace, now, "server stopping", StopMode.SHUTDOWN)
        self.generations.retire_all()
        # The workers are the last to hold the listening sockets: once the last one has emptied the
        # accept queue and closed its copy, the kernel refuses new connections instead of queueing
        # them for nobody (which would end in resets).
        for listener in self.listeners:
            listener.sock.close()

    # ------------------------------------------------------------------ reload

    def begin_reload(self) -> None:
        if self.stopping:
            return
        generation = self.generations.next_number()
        self.reloading = (generation, time.monotonic())
        self.events.emit(events.RELOAD_STARTED, f"reload to generation {generation}", generation=generation)
        if self.config.env_file:
            try:
                self.app_environ = read_env_file(self.config.env_file)
            except ConfigError as error:
                logger.error("reload aborted: %s; the running generation keeps serving", error)
                self._reload_ended(generation, aborted=str(error))
                return
        hooks.run_master_hook("on_reload", self.config, self._server_info(generation))
        if not self.exec_mode:
            # An app object cannot be re-imported: new workers come from the same zygote.
            logger.info("reloading: replacing workers with generation %d (same code: app object)", generation)
            self.generations.share_zygote(generation)
            if self.config.env_file:
                # Too late for the app's import; each new worker sets these before it serves.
                self.generations.zygotes[-1].environ = self.app_environ
            return
        logger.info("reloading: starting generation %d", generation)
        self._start_zygote(generation)

    # ------------------------------------------------------------------ zygotes

    def _start_zygote(self, generation: int) -> None:
        master_end, zygote_end = messages.channel_pair()
        spec = ZygoteSpec(
            app=self.app,
            app_name=self.app_name,
            generation=generation,
            config=self.config,
            listener_fds=(
                self.balancer.zygote_listener_fds(self.listeners)
                if self.balancer is not None
                else [listener.sock.fileno() for listener in self.listeners]
            ),
            balance_fds=self.balancer.zygote_fds() if self.balancer is not None else [],
            scoreboard_fd=self.scoreboard.fd,
            scoreboard_capacity=self.scoreboard.capacity,
            channel_fd=zygote_end.fileno(),
            alive_fd=self.alive_r,
            environ=self.app_environ,
            metrics_dir=self.metrics_dir,
        )
        proc = None
        if self.exec_mode:
            proc = zygotes.start_exec(spec, zygote_end)
            pid = proc.pid
        else:
            if threading.active_count() > 1:
                # Forking a process with threads can deadlock the child on a lock a thread held.
                logger.warning(
                    "forking the zygote from a process running %d threads; if it hangs, pass the app as an "
                    "import string ('module:app'), which starts a fresh interpreter instead",
                    threading.active_count(),
                )
            pid = zygotes.start_fork(lambda: self._become_zygote(spec, master_end))
        zygote_end.close()
        handle = zygotes.new_handle(pid, generation, master_end, proc)
        self.generations.add_pending(handle)
        self.selector.register(handle.channel, selectors.EVENT_READ, ("channel", handle))
        self.selector.register(handle.pidfd, selectors.EVENT_READ, ("zygote", handle))

    def _become_zygote(self, spec: ZygoteSpec, master_end: socket.socket) -> int:
        """In the forked child: drop everything that is the master's, then act as the zygote."""
        if threading.current_thread() is threading.main_thread():
            signal.set_wakeup_fd(-1)
        master_end.close()
        os.close(self.alive_w)
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()
        self.generations.close_in_child()
        self.workers.close_in_child()
        if self.balancer is not None:
            self.balancer.close_in_child()
        return run_zygote(spec, self.logs)

    def _read_channel(self, handle: zygotes.ZygoteHandle) -> None:
        while True:
            try:
                message = messages.receive(handle.channel)
            except BlockingIOError:
                return
            except (OSError, ValueError):
                message = None
            if message is None:
                # _reap_zygote may have drained and closed it earlier in this same pass of the loop.
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(handle.channel)
                handle.channel.close()
                return
            self._on_message(handle, message)

    def _on_message(self, handle: zygotes.ZygoteHandle, message: dict[str, Any]) -> None:
        op = message.get("op")
        now = time.monotonic()
        if op == "loaded":
            if self.generations.loaded(handle):
                logger.info("generation %d loaded (zygote pid %d)", handle.generation, handle.pid)
        elif op == "failed":
            code = int(message.get("exit_code") or AppError.exit_code)
            self._zygote_failed(handle, str(message.get("message")), str(message.get("detail") or ""), code)
        elif op in ("spawned", "ready"):
            record = self.workers.get(int(message["slot"]))
            if record is None or record.state is State.EXITED:
                return
            if not record.pid:
                self._learn_pid(record, int(message["pid"]), now)
            if op == "ready" and record.state is State.BOOTING and record.pid == message["pid"]:
                record.apply(Event.READY, now)
                if not self.generations.ever_ready:
                    self.events.emit(events.SERVING, "serving", generation=record.generation)
                self.generations.mark_ready(record.generation)
                self.started.set()
                self.events.emit(
                    events.WORKER_READY, f"worker {record.worker_id} ready", worker_id=record.worker_id,
                    pid=record.pid, generation=record.generation, slot=record.slot,
                )  # fmt: skip
                if self.scaling.worker_ready(record.worker_id, now):
                    self.workers.rebalance(exclude=record)
                logger.debug("worker %d (pid %d) ready", record.worker_id, record.pid)
        elif op == "recycle":
            record = self.workers.get(int(message["slot"]))
            if record is not None and record.pid == message["pid"] and record.state is State.READY:
                record.outgoing = True
                reason = str(message.get("reason", "max-requests"))
                why = RECYCLE_REASONS.get(reason, reason)
                self.events.emit(
                    events.RECYCLE, f"replacing worker {record.worker_id}: {why}",
                    worker_id=record.worker_id, pid=record.pid, reason=reason,
                )  # fmt: skip
        elif op == "spawn_failed":
            record = self.workers.get(int(message["slot"]))
            if record is not None and not record.pid:
                logger.error("the zygote could not fork worker %d", record.worker_id)
                self._forget(record, now, planned=False)

    def _learn_pid(self, record: WorkerRecord, pid: int, now: float) -> None:
        if not self.workers.learn_pid(record, pid, now):
            self._forget(record, now, planned=False)
            return
        logger.info(
            "Booting worker %d with pid: %d (generation %d)", record.worker_id, pid, record.generation
        )
        if record.state is State.DRAINING:
            # Told to stop before its pid was known (its stop_mode is already in its slot): tell it now.
            signal_process(pid, signal.SIGTERM if self.stopping != "immediate" else signal.SIGQUIT)

    def _zygote_failed(
        self, handle: zygotes.ZygoteHandle, message: str, detail: str, exit_code: int = AppError.exit_code
    ) -> None:
        self.generations.failed(handle)
        if not self.generations.ever_ready and handle.generation == 1:
            error_class = ConfigError if exit_code == ConfigError.exit_code else AppError
            self.error = error_class(message, detail=detail)
            self.begin_stop("immediate")
            return
        logger.error("reload aborted: generation %d failed to load: %s", handle.generation, message)
        self._reload_ended(handle.generation, aborted=f"failed to load: {message}")
        for line in detail.splitlines():
            logger.error("  %s", line)
        logger.error("generation %d keeps serving; fix the app and send HUP again", self.generations.current)

    def _reap_zygote(self, handle: zygotes.ZygoteHandle) -> None:
        self.selector.unregister(handle.pidfd)
        os.close(handle.pidfd)
        status = waitpid(handle.pid)
        handle.exited = True
        if handle.proc is not None:
            handle.proc.returncode = os.waitstatus_to_exitcode(status) if status is not None else -1
        words = describe_status(status) if status is not None else "ended"
        # Whatever it reported before it died is in its channel; after that, a worker it was asked
        # for and never reported will not come.
        if handle.channel.fileno() != -1:
            self._read_channel(handle)
        now = time.monotonic()
        for record in self.workers:
            if not record.pid and record.generation in handle.generations:
                self._forget(record, now, planned=True)
        verdict = self.generations.classify_exit(handle, stopping=bool(self.stopping))
        if verdict is ZygoteExit.FAILED_LOADING:
            self._zygote_failed(handle, f"the zygote {words} while loading the app", "")
        elif verdict is ZygoteExit.REPLACE:
            logger.error(
                "zygote of generation %d (pid %d) %s; starting another", handle.generation, handle.pid, words
            )
            self.generations.forget(handle)
            self._start_zygote(self.generations.current)
            assert self.generations.pending is not None
            self.generations.pending.generations |= handle.generations

    # ------------------------------------------------------------------ workers

    def _server_info(self, generation: int) -> hooks.ServerInfo:
        return hooks.ServerInfo(os.getpid(), self.desired, generation, self.config)

    def _publish_fleet_size(self) -> None:
        """What ``forkserve.worker_info()`` reads in the workers: how many there are, and may be."""
        header = self.scoreboard.header
        header.workers = self.desired
        header.max_workers = max(self.desired, self.scaling.settings.max_workers)

    def _reconcile(self, now: float) -> None:
        self._publish_fleet_size()
        zygote = self.generations.current_zygote()
        if zygote is None:
            return
        views = [WorkerView(r.worker_id, r.generation, r.state, r.slot, r.outgoing) for r in self.workers]
        nobody_serving = not any(view.state in SERVING_OR_ABOUT_TO for view in views)
        rescue = nobody_serving and self.backoff.may_rescue(now)

        def may_start(worker_id: int) -> bool:
            return self.backoff.may_start(worker_id, now) or (rescue and worker_id == 1)

        actions = plan(
            views,
            desired=self.desired,
            generation=self.generations.current,
            may_start=may_start,
            batch=self.config.reload_batch,
        )
        for action in actions:
            if isinstance(action, Spawn):
                if not self.backoff.may_start(action.worker_id, now):
                    logger.warning(
                        "no worker is serving: starting worker %d now despite its back-off "
                        "(at most one such start a second)", action.worker_id,
                    )  # fmt: skip
                    self.backoff.rescued(now)
                if self.workers.spawn(zygote, action.worker_id, self.generations.current, now) is None:
                    logger.error("no free scoreboard slot for worker %d", action.worker_id)
            elif isinstance(action, Retire):
                record = self.workers.get(action.slot)
                if record is not None and record.state in SERVING_OR_ABOUT_TO:
                    logger.info(
                        "retiring worker %d (pid %d): %s", record.worker_id, record.pid, action.reason
                    )
                    self.workers.stop(
                        record, signal.SIGTERM, self.config.graceful_timeout, now, action.reason
                    )
        self.generations.retire_idle({r.generation for r in self.workers.live()})
        self._check_reload_finished(now)

    def _check_reload_finished(self, now: float) -> None:
        if self.reloading is None or self.generations.pending is not None:
            return
        generation = self.reloading[0]
        live = self.workers.live()
        ready = [r for r in live if r.generation == generation and r.state is State.READY]
        if len(ready) >= self.desired and all(r.generation == generation for r in live):
            self._reload_ended(generation)

    def _reload_ended(self, generation: int, aborted: str | None = None) -> None:
        if self.reloading is None or self.reloading[0] != generation:
            return
        seconds = round(time.monotonic() - self.reloading[1], 3)
        self.reloading = None
        if aborted:
            self.events.emit(
                events.RELOAD_ABORTED, f"reload to generation {generation} aborted: {aborted}",
                generation=generation, reason=aborted,
            )  # fmt: skip
        else:
            self.events.emit(
                events.RELOAD_FINISHED, f"generation {generation} serves ({seconds} s)",
                generation=generation, seconds=seconds,
            )  # fmt: skip

    def _reap_worker(self, record: WorkerRecord) -> None:
        self._worker_exited(record, self.workers.reap(record))

    def _sweep_orphans(self) -> None:
        """Reap every child that ended, ours or an orphan re-parented to us (only as the CLI)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.handover.is_successor(pid):
                self.handover.successor_exited(status, self.listeners)
                continue
            record = self.workers.unwatch(pid)
            if record is not None and record.state is not State.EXITED:
                self._worker_exited(record, status)
            for handle in self.generations.zygotes:
                if handle.pid == pid and not handle.exited:
                    self.selector.unregister(handle.pidfd)
                    os.close(handle.pidfd)
                    handle.exited = True
                    if handle.proc is not None:
                        handle.proc.returncode = os.waitstatus_to_exitcode(status)

    def _worker_exited(self, record: WorkerRecord, status: int | None) -> None:
        now = time.monotonic()
        # Told to stop (even if then killed for overstaying its graceful time): not a crash.
        planned = record.state is State.DRAINING or any(s is State.DRAINING for _, s in record.history)
        died_booting = record.ready_at is None
        killed_by_us = record.state is State.KILLING
        words = describe_status(status, killed_by_us=killed_by_us) if status is not None else "ended"
        name = f"worker {record.worker_id} (pid {record.pid}, generation {record.generation})"
        if planned:
            logger.info("%s %s", name, words)
        else:
            logger.error("%s %s%s", name, words, f" after being {record.reason}" if record.reason else "")
        self._forget(record, now, planned=planned)
        self.events.emit(
            events.WORKER_EXITED, f"{name} {words}", worker_id=record.worker_id, pid=record.pid,
            generation=record.generation, planned=planned,
            reason=record.reason or ("planned" if planned else "crash"), status=words,
        )  # fmt: skip
        if planned or self.stopping:
            return
        verdict = boot_failure_verdict(
            died_booting=died_booting,
            server_ever_ready=self.generations.ever_ready,
            generation_ever_ready=record.generation in self.generations.ready,
        )
        if verdict is Verdict.STOP_SERVER:
            if status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3:
                reason = (
                    f"the app's lifespan startup (or a worker hook) failed in worker {record.worker_id} "
                    "(its error is above)"
                )
            else:
                reason = f"worker {record.worker_id} {words} before it served"
            self.error = WorkerBootError(f"{reason}; fix the app and start again")
            self.begin_stop("graceful")
        elif verdict is Verdict.ABORT_RELOAD:
            self._abort_generation(record.generation, now)
        else:
            delay = self.backoff.record_exit(record.worker_id, now - record.spawned_at, now, planned=False)
            if delay > 0:
                failures = self.backoff.failures[record.worker_id]
                logger.warning(
                    "worker %d has died young %d time%s in a row%s; restarting it in %.1f s",
                    record.worker_id, failures, "" if failures == 1 else "s",
                    " (crash loop?)" if failures >= 3 else "", delay,
                )  # fmt: skip

    def _abort_generation(self, generation: int, now: float) -> None:
        previous = self.generations.revert(generation)
        self._reload_ended(generation, aborted="failed to boot")
        logger.error(
            "reload aborted: generation %d failed to boot; generation %s keeps serving", generation, previous
        )
        if previous is None:
            return
        for record in self.workers.live():
            if record.generation == generation:
                self.workers.stop(record, signal.SIGTERM, self.config.graceful_timeout, now, "reload aborted")

    def _forget(self, record: WorkerRecord, now: float, *, planned: bool) -> None:
        self.workers.forget(record, now)
        if planned:
            self.backoff.record_exit(record.worker_id, now - record.spawned_at, now, planned=True)

    def _cleanup(self) -> None:
        """Whatever is still alive here is killed: a leaked worker is a bug."""
        if hasattr(self, "workers"):
            self.workers.kill_all()
        self.generations.kill_all()
        self._wake_r.close()
        self._wake_w.close()


def _version() -> str:
    from forkserve import __version__

    return __version__
