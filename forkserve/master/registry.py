"""Who is alive: one WorkerRecord per scoreboard slot, found by slot or pid, each with its pidfd;
and the effects on workers the master's decisions come down to (spawn, stop, kill when overdue).

The master learns of a worker's death from its pidfd becoming readable (``os.pidfd_open``), which
works for processes it adopted as a child subreaper and needs no SIGCHLD handler. A pid is reaped
only once it is known to be a worker, so an embedding host's own children are never stolen.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
from collections.abc import Iterator

from forkserve.common import faults
from forkserve.common.scoreboard import Scoreboard, StopMode
from forkserve.master.process import signal_process
from forkserve.master.zygotes import ZygoteHandle
from forkserve.policy import oserrors
from forkserve.policy.lifecycle import Event, State, WorkerRecord
from forkserve.policy.timeouts import STACK_DUMP_GRACE, Overdue, TimeView, overdue

# A worker's record.reason when it was killed for not finishing its startup in time.
STARTUP_TIMED_OUT = "stuck in its startup past --startup-timeout"

logger = logging.getLogger("forkserve")


def waitpid(pid: int, *, block: bool = False) -> int | None:
    """The wait status of PID if it has ended (and is ours to reap), else None."""
    try:
        reaped, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return None
    return status if reaped == pid else None


def _is_stopped(pid: int) -> bool:
    """True for a process in the stopped state (SIGSTOP, or a debugger): it cannot run a handler."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # The state follows the command name, which is in parentheses and may itself contain them.
            return stat.read().rsplit(b")", 1)[1].split()[0] in (b"T", b"t")
    except (OSError, IndexError):
        return False


class WorkerRegistry:
    def __init__(self, scoreboard: Scoreboard, selector: selectors.BaseSelector) -> None:
        self.scoreboard = scoreboard
        self.selector = selector
        self.records: dict[int, WorkerRecord] = {}
        self._by_pid: dict[int, WorkerRecord] = {}
        self._pidfds: dict[int, int] = {}
        # Workers whose pidfd could not be opened (the fd limit): polled with waitpid instead.
        self.polled: set[int] = set()

    def __iter__(self) -> Iterator[WorkerRecord]:
        return iter(list(self.records.values()))

    def live(self) -> list[WorkerRecord]:
        return [record for record in self.records.values() if record.live]

    def get(self, slot: int) -> WorkerRecord | None:
        return self.records.get(slot)

    def by_pid(self, pid: int) -> WorkerRecord | None:
        return self._by_pid.get(pid)

    def add(self, worker_id: int, generation: int, now: float) -> WorkerRecord | None:
        """Claim a free slot for a worker about to be forked; None when the scoreboard is full."""
        slot = next((i for i in range(self.scoreboard.capacity) if i not in self.records), None)
        if slot is None:
            return None
        self.scoreboard.reset(slot)
        # The hung check covers the fork and boot too, from the moment it is asked for.
        self.scoreboard[slot].heartbeat = now
        record = WorkerRecord(worker_id=worker_id, slot=slot, generation=generation, spawned_at=now)
        self.records[slot] = record
        return record

    def learn_pid(self, record: WorkerRecord, pid: int, now: float) -> bool:
        """Start watching PID; False if it is already gone without a trace (then forget it)."""
        record.pid = pid
        if record.state is State.SPAWNING:
            record.apply(Event.FORKED, now)
        self._by_pid[pid] = record
        try:
            self._watch(record)
        except ProcessLookupError:
            return False
        except OSError as error:
            # It runs, and is this process's child (a subreaper's): its exit is polled until a
            # pidfd can be had. A worker must never be lost because an fd could not be.
            logger.error(
                "%s; watching worker %d (pid %d) by polling until it can",
                oserrors.explain(error, "open a pidfd"), record.worker_id, pid,
            )  # fmt: skip
            self.polled.add(pid)
        return True

    def _watch(self, record: WorkerRecord) -> None:
        faults.check(faults.WORKER_PIDFD)
        pidfd = os.pidfd_open(record.pid)
        try:
            self.selector.register(pidfd, selectors.EVENT_READ, ("worker", record))
        except BaseException:
            os.close(pidfd)
            raise
        self._pidfds[record.pid] = pidfd

    def poll(self) -> list[tuple[WorkerRecord, int | None]]:
        """The polled workers that have ended, with their status; the others get a pidfd if one can be had."""
        ended: list[tuple[WorkerRecord, int | None]] = []
        for pid in list(self.polled):
            record = self._by_pid.get(pid)
            status = waitpid(pid)
            if record is None or status is not None or not os.path.exists(f"/proc/{pid}"):
                self.polled.discard(pid)
                if record is not None:
                    ended.append((record, status))
                continue
            try:
                self._watch(record)
            except OSError:
                continue
            self.polled.discard(pid)
            logger.info("watching worker %d (pid %d) by its pidfd again", record.worker_id, pid)
        return ended

    def reap(self, record: WorkerRecord) -> int | None:
        """Stop watching RECORD's process and collect its wait status."""
        self._unwatch(record.pid)
        return waitpid(record.pid)

    def unwatch(self, pid: int) -> WorkerRecord | None:
        """For a pid reaped elsewhere (the orphan sweep): stop watching it, return its record."""
        self._unwatch(pid)
        return self._by_pid.get(pid)

    def _unwatch(self, pid: int) -> None:
        self.polled.discard(pid)
        pidfd = self._pidfds.pop(pid, None)
        if pidfd is not None:
            self.selector.unregister(pidfd)
            os.close(pidfd)

    def forget(self, record: WorkerRecord, now: float) -> None:
        if record.state is not State.EXITED:
            record.apply(Event.EXITED, now)
        self.records.pop(record.slot, None)
        self._by_pid.pop(record.pid, None)
        self._unwatch(record.pid)
        self.scoreboard.reset(record.slot)

    def spawn(self, zygote: ZygoteHandle, worker_id: int, generation: int, now: float) -> WorkerRecord | None:
        """Ask ZYGOTE to fork a worker into a fresh slot; None when no slot is free."""
        record = self.add(worker_id, generation, now)
        if record is not None and not zygote.spawn(worker_id, record.slot, generation):
            self.forget(record, now)  # the zygote is gone; its exit brings a replacement
        return record

    def stop(
        self,
        record: WorkerRecord,
        number: int,
        grace: float,
        now: float,
        reason: str,
        mode: StopMode = StopMode.RETIRE,
    ) -> None:
        """Tell a worker to stop (TERM to drain, QUIT for at once), with a deadline for SIGKILL."""
        if record.state is State.KILLING:
            return
        self.scoreboard[record.slot].stop_mode = mode
        record.apply(Event.DRAIN, now)
        record.reason = record.reason or reason
        deadline = now + grace + 1.0
        record.deadline = min(record.deadline or deadline, deadline)
        if record.pid:
            signal_process(record.pid, number)

    def enforce_timeouts(self, now: float, timeout: float, startup_timeout: float = 0.0) -> None:
        """Apply policy.timeouts: stack dump then SIGKILL for the hung and the slow to start, SIGKILL
        for the overdue."""
        views = [
            TimeView(r.slot, r.state, bool(r.pid), self.heartbeat(r), r.deadline, r.spawned_at)
            for r in self.live()
        ]
        for slot, verdict in overdue(views, now=now, timeout=timeout, startup_timeout=startup_timeout):
            record = self.records[slot]
            if verdict in (Overdue.HUNG, Overdue.STARTUP):
                stopped = _is_stopped(record.pid)
                if verdict is Overdue.HUNG:
                    what = (
                        f"is hung: its event loop has not run for {now - self.heartbeat(record):.1f} s "
                        f"(--timeout {timeout:g})"
                    )
                else:
                    what = (
                        f"has not finished its startup {now - record.spawned_at:.1f} s after it was "
                        f"started (--startup-timeout {startup_timeout:g})"
                    )
                logger.error(
                    "worker %d (pid %d) %s; %s", record.worker_id, record.pid, what,
                    "it is stopped (SIGSTOP?), so it has no stack to show; killing it" if stopped
                    else "its stack follows, then it is killed",
                )  # fmt: skip
                record.apply(Event.KILL, now)
                record.reason = record.reason or (
                    "killed as hung" if verdict is Overdue.HUNG else STARTUP_TIMED_OUT
                )
                if not stopped:
                    record.deadline = now + STACK_DUMP_GRACE
                    signal_process(record.pid, signal.SIGUSR2)
                    continue
                # A stopped process runs no handler: no stack to wait for.
            if verdict is Overdue.GRACE_EXPIRED:
                logger.warning(
                    "worker %d (pid %d) did not finish within --graceful-timeout; killing it",
                    record.worker_id, record.pid,
                )  # fmt: skip
                record.apply(Event.KILL, now)
            record.deadline = None
            signal_process(record.pid, signal.SIGKILL)

    def rebalance(self, exclude: WorkerRecord) -> None:
        """Ask every other serving worker to send a share of its keep-alive clients elsewhere."""
        for record in self.live():
            if record is not exclude and record.state is State.READY:
                self.scoreboard[record.slot].rebalance += 1

    def heartbeat(self, record: WorkerRecord) -> float:
        return float(self.scoreboard[record.slot].heartbeat)

    def close_in_child(self) -> None:
        """In a process forked from the master: drop the master's pidfds, touch nothing else."""
        for pidfd in self._pidfds.values():
            os.close(pidfd)
        self._pidfds.clear()

    def kill_all(self) -> None:
        """Last resort on the way out: whatever still lives is killed and reaped."""
        for record in self.live():
            if record.pid:
                signal_process(record.pid, signal.SIGKILL)
                waitpid(record.pid, block=True)
        for pid in list(self._pidfds):
            self._unwatch(pid)
