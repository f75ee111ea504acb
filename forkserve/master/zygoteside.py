"""The master's side of its zygotes: starting one per generation, its messages, its exit.

The channel protocol is ``forkserve.common.messages``; the zygote's side of it is
``forkserve.zygote.zygote``. A zygote that fails to load ends a reload (the old generation keeps
serving) or, for generation 1, the server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import threading
import time
from typing import Any

from forkserve.common import faults, messages
from forkserve.common.zygotespec import ZygoteSpec
from forkserve.errors import AppError, ConfigError, ResourceError
from forkserve.master import zygotes
from forkserve.master.core import MasterCore, ZygoteRetry
from forkserve.master.generations import ZygoteExit
from forkserve.master.process import (
    signal_process,
)
from forkserve.master.registry import waitpid
from forkserve.policy import oserrors
from forkserve.policy.backoff import restart_delay
from forkserve.policy.exits import describe_status
from forkserve.policy.lifecycle import Event, State, WorkerRecord
from forkserve.policy.masterstate import ShutdownMode
from forkserve.services import events

# Why a worker asked to be replaced ("recycle"), in the event line's words.
RECYCLE_REASONS = {
    "max-requests": "it served --max-requests",
    "timeout": "a WSGI request outran --timeout",
}

logger = logging.getLogger("forkserve")


class ZygoteSide(MasterCore):
    def _start_zygote(self, generation: int, *, adopt: frozenset[int] = frozenset()) -> bool:
        """Start GENERATION's zygote (which also forks for the generations in ADOPT); False when the
        OS refused (an fd or process limit): that is logged and decided in ``_zygote_start_failed``."""
        try:
            handle = self._launch_zygote(generation)
        except OSError as error:
            self._zygote_start_failed(generation, error, adopt)
            return False
        handle.generations |= adopt
        self.generations.add_pending(handle)
        return True

    def _launch_zygote(self, generation: int) -> zygotes.ZygoteHandle:
        faults.check(faults.CHANNEL_PAIR)
        master_end, zygote_end = messages.channel_pair()
        pid = 0
        try:
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
            faults.check(faults.ZYGOTE_START)
            proc = None
            if self.exec_mode:
                proc = zygotes.start_exec(spec, zygote_end)
                pid = proc.pid
            else:
                if threading.active_count() > 1:
                    # Forking a process with threads can deadlock the child on a lock a thread held.
                    logger.warning(
                        "forking the zygote from a process running %d threads; if it hangs, pass the app "
                        "as an import string ('module:app'), which starts a fresh interpreter instead",
                        threading.active_count(),
                    )
                pid = zygotes.start_fork(lambda: self._become_zygote(spec, master_end))
            zygote_end.close()
            faults.check(faults.ZYGOTE_PIDFD)
            handle = zygotes.new_handle(pid, generation, master_end, proc)
            try:
                self.selector.register(handle.channel, selectors.EVENT_READ, ("channel", handle))
                self.selector.register(handle.pidfd, selectors.EVENT_READ, ("zygote", handle))
            except BaseException:
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(handle.channel)
                os.close(handle.pidfd)
                raise
            return handle
        except BaseException:
            zygote_end.close()
            master_end.close()
            if pid:
                # Started, but it cannot be watched: it must not live on unsupervised.
                signal_process(pid, signal.SIGKILL)
                waitpid(pid, block=True)
            raise

    def _zygote_start_failed(self, generation: int, error: OSError, adopt: frozenset[int]) -> None:
        explained = oserrors.explain(error, f"start the zygote of generation {generation}")
        if not self.generations.ever_ready and generation == 1 and not adopt:
            self.error = ResourceError(explained)
            self.begin_stop(ShutdownMode.IMMEDIATE)
        elif self.state.reloading == generation:
            logger.error(
                "reload aborted: %s; generation %d keeps serving", explained, self.generations.current
            )
            self._reload_ended(generation, aborted=explained)
        else:
            # The serving generation's zygote died and none can start now: the workers it forked
            # serve on; another start is tried, backed off, and logged only when it changes.
            failures = self.zygote_retry.failures + 1 if self.zygote_retry is not None else 1
            delay = restart_delay(failures)
            if failures == 1:
                logger.error("%s; trying again, backed off (now in %.1f s)", explained, delay)
            self.zygote_retry = ZygoteRetry(generation, adopt, time.monotonic() + delay, failures)

    def _retry_zygote(self, now: float) -> None:
        retry = self.zygote_retry
        if retry is None or now < retry.at or self.generations.pending is not None:
            return
        if self._start_zygote(retry.generation, adopt=retry.adopt):
            # The first retry is news; the later ones of a streak are not (the streak's end is).
            log = logger.info if retry.failures == 1 else logger.debug
            log("started the zygote of generation %d again", retry.generation)

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
        assert self.run_zygote is not None
        return self.run_zygote(spec, self.logs)

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
        try:
            op = messages.Op(message.get("op"))
        except ValueError:
            logger.warning(
                "ignored a message with an unknown op from generation %d: %.80r", handle.generation, message
            )
            return
        now = time.monotonic()
        if op is messages.Op.LOADED:
            handle.asked_at = now
            became_current = self.generations.loaded(handle)
            retry = self.zygote_retry
            # Kept until now, not cleared at the start: a zygote that starts and then fails to load
            # counts toward the same back-off. A reload that loaded makes an older one's moot.
            if retry is not None and (retry.generation == handle.generation or became_current):
                self.zygote_retry = None
                if retry.generation == handle.generation and retry.failures > 1:
                    logger.info(
                        "the zygote of generation %d loaded after %d failed tries",
                        handle.generation, retry.failures,
                    )  # fmt: skip
            if became_current:
                logger.info("generation %d loaded (zygote pid %d)", handle.generation, handle.pid)
        elif op is messages.Op.FAILED:
            code = int(message.get("exit_code") or AppError.exit_code)
            self._zygote_failed(handle, str(message.get("message")), str(message.get("detail") or ""), code)
        elif op in (messages.Op.SPAWNED, messages.Op.READY):
            record = self.workers.get(int(message["slot"]))
            if record is None or record.state is State.EXITED:
                return
            if not record.pid:
                self.backoff.spawned()
                self._learn_pid(record, int(message["pid"]), now)
            if op is messages.Op.READY and record.state is State.BOOTING and record.pid == message["pid"]:
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
        elif op is messages.Op.RECYCLE:
            record = self.workers.get(int(message["slot"]))
            if record is not None and record.pid == message["pid"] and record.state is State.READY:
                record.outgoing = True
                reason = str(message.get("reason", "max-requests"))
                why = RECYCLE_REASONS.get(reason, reason)
                self.events.emit(
                    events.RECYCLE, f"replacing worker {record.worker_id}: {why}",
                    worker_id=record.worker_id, pid=record.pid, reason=reason,
                )  # fmt: skip
        elif op is messages.Op.SPAWN_FAILED:
            record = self.workers.get(int(message["slot"]))
            if record is not None and not record.pid:
                error = OSError(int(message.get("errno") or 0), str(message.get("error") or "unknown error"))
                self._spawn_failed(record, error, now)

    def _learn_pid(self, record: WorkerRecord, pid: int, now: float) -> None:
        if not self.workers.learn_pid(record, pid, now):
            self._forget(record, now, planned=False)
            return
        logger.info(
            "Booting worker %d with pid: %d (generation %d)", record.worker_id, pid, record.generation
        )
        if record.state is State.DRAINING:
            # Told to stop before its pid was known (its stop_mode is already in its slot): tell it now.
            signal_process(
                pid, signal.SIGQUIT if self.state.stop_mode is ShutdownMode.IMMEDIATE else signal.SIGTERM
            )

    def _zygote_failed(
        self, handle: zygotes.ZygoteHandle, message: str, detail: str, exit_code: int = AppError.exit_code
    ) -> None:
        self.generations.failed(handle)
        if not self.generations.ever_ready and handle.generation == 1:
            error_class = ConfigError if exit_code == ConfigError.exit_code else AppError
            self.error = error_class(message, detail=detail)
            self.begin_stop(ShutdownMode.IMMEDIATE)
            return
        if handle.generation == self.generations.current and self.state.reloading != handle.generation:
            self._zygote_restart_failed(handle, message, detail)
            return
        logger.error("reload aborted: generation %d failed to load: %s", handle.generation, message)
        self._reload_ended(handle.generation, aborted=f"failed to load: {message}")
        for line in detail.splitlines():
            logger.error("  %s", line)
        logger.error("generation %d keeps serving; fix the app and send HUP again", self.generations.current)

    def _zygote_restart_failed(self, handle: zygotes.ZygoteHandle, message: str, detail: str) -> None:
        """The serving generation's zygote, started again (after a crash, or for a worker wanted once
        it retired while idle), could not load the app: the workers that serve go on, and another
        start is tried, backed off; one line says so, not one per try."""
        retry = self.zygote_retry
        failures = retry.failures + 1 if retry is not None and retry.generation == handle.generation else 1
        delay = restart_delay(failures)
        self.zygote_retry = ZygoteRetry(
            handle.generation, frozenset(handle.generations), time.monotonic() + delay, failures
        )
        serving = sum(1 for record in self.workers.live() if record.state is State.READY)
        who = "the serving worker goes on" if serving == 1 else f"the {serving} serving workers go on"
        log = logger.error if failures == 1 else logger.debug
        log(
            "the zygote of generation %d could not be started again: %s; %s, and it is tried again, "
            "backed off (next in %.1f s)",
            handle.generation, message, who, delay,
        )  # fmt: skip
        for line in detail.splitlines():
            logger.debug("  %s", line)

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
        verdict = self.generations.classify_exit(handle, stopping=self.state.stopping)
        if verdict is ZygoteExit.FAILED_LOADING:
            self._zygote_failed(handle, f"the zygote {words} while loading the app", "")
        elif verdict is ZygoteExit.REPLACE:
            logger.error(
                "zygote of generation %d (pid %d) %s; starting another", handle.generation, handle.pid, words
            )
            self.generations.forget(handle)
            self._start_zygote(self.generations.current, adopt=frozenset(handle.generations))
