"""Workers' exits: reaping each through its pidfd, and what the exit means.

A planned exit (the worker was told to stop) is logged and forgotten. A crash feeds the restart
back-off; a death before serving gets a verdict (``policy.backoff.boot_failure_verdict``): stop the
server, abort the reload, or restart. A worker that could not be forked at all (a process limit)
feeds the same back-off, and after a few tries gets a verdict of its own
(``policy.backoff.spawn_failure_verdict``): a limit is a fact to report, not a loop to run.
"""

from __future__ import annotations

import logging
import os
import time

from forkserve.errors import EXIT_APP, ResourceError, WorkerBootError
from forkserve.master.core import MasterCore
from forkserve.master.registry import STARTUP_TIMED_OUT
from forkserve.policy import oserrors
from forkserve.policy.backoff import Verdict, boot_failure_verdict, spawn_failure_verdict
from forkserve.policy.exits import describe_status
from forkserve.policy.lifecycle import State, WorkerRecord
from forkserve.policy.masterstate import ShutdownMode
from forkserve.policy.timeouts import startup_limit
from forkserve.services import events

logger = logging.getLogger("forkserve")


class Reaping(MasterCore):
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
        if planned or self.state.stopping:
            return
        verdict = boot_failure_verdict(
            died_booting=died_booting,
            server_ever_ready=self.generations.ever_ready,
            generation_ever_ready=record.generation in self.generations.ready,
        )
        if verdict is Verdict.STOP_SERVER:
            if record.reason == STARTUP_TIMED_OUT:
                limit = startup_limit(self.config.startup_timeout, self.config.timeout)
                reason = (
                    f"worker {record.worker_id} did not finish its startup within --startup-timeout "
                    f"{limit:g} s (its stack is above)"
                )
            elif status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_APP:
                reason = (
                    f"the app's lifespan startup (or a worker hook) failed in worker {record.worker_id} "
                    "(its error is above)"
                )
            else:
                reason = f"worker {record.worker_id} {words} before it served"
            self.error = WorkerBootError(f"{reason}; fix the app and start again")
            # The others are most likely stuck in the same startup, where a TERM goes unheard: nothing
            # has served, so there is nothing to drain.
            timed_out = record.reason == STARTUP_TIMED_OUT
            self.begin_stop(ShutdownMode.IMMEDIATE if timed_out else ShutdownMode.GRACEFUL)
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

    def _spawn_failed(self, record: WorkerRecord, error: OSError, now: float) -> None:
        """The zygote could not fork RECORD's worker: back off as for a crash, then a verdict."""
        self._forget(record, now, planned=False)
        if self.state.stopping:
            return
        delay = self.backoff.spawn_failed(record.worker_id, now)
        tries = self.backoff.spawn_failures
        explained = oserrors.explain(error, f"fork worker {record.worker_id}")
        serving = [r for r in self.workers.live() if r.state is State.READY]
        verdict = spawn_failure_verdict(
            tries,
            server_ever_ready=self.generations.ever_ready,
            generation_ever_ready=record.generation in self.generations.ready,
            serving=len(serving),
        )
        if verdict is Verdict.RESPAWN:
            # Once per streak: the retries say nothing new, and a limit must not become a log storm.
            log = logger.error if tries == 1 else logger.debug
            log("%s; trying again in %.1f s", explained, delay)
            return
        self.backoff.spawned()  # the verdict ends this streak; the next request starts afresh
        if verdict is Verdict.STOP_SERVER:
            self.error = ResourceError(f"{explained} (tried {tries} times)")
            self.begin_stop(ShutdownMode.IMMEDIATE)
        elif verdict is Verdict.ABORT_RELOAD:
            self._abort_generation(record.generation, now, reason=f"could not fork its workers ({explained})")
        else:
            logger.error(
                "%s (tried %d times); keeping the %d workers that serve", explained, tries, len(serving)
            )
            self._set_desired(len(serving), "fork failed")

    def _forget(self, record: WorkerRecord, now: float, *, planned: bool) -> None:
        self.workers.forget(record, now)
        if planned:
            self.backoff.record_exit(record.worker_id, now - record.spawned_at, now, planned=True)
