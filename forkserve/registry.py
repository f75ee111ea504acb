"""Who is alive: one WorkerRecord per scoreboard slot, found by slot or pid, each with its pidfd.

The master learns of a worker's death from its pidfd becoming readable (``os.pidfd_open``), which
works for processes it adopted as a child subreaper and needs no SIGCHLD handler. A pid is reaped
only once it is known to be a worker, so an embedding host's own children are never stolen.
"""

from __future__ import annotations

import os
import selectors
import signal
from collections.abc import Iterator

from forkserve.lifecycle import Event, State, WorkerRecord
from forkserve.process import signal_process
from forkserve.scoreboard import Scoreboard


def waitpid(pid: int, *, block: bool = False) -> int | None:
    """The wait status of PID if it has ended (and is ours to reap), else None."""
    try:
        reaped, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return None
    return status if reaped == pid else None


class WorkerRegistry:
    def __init__(self, scoreboard: Scoreboard, selector: selectors.BaseSelector) -> None:
        self.scoreboard = scoreboard
        self.selector = selector
        self.records: dict[int, WorkerRecord] = {}
        self._by_pid: dict[int, WorkerRecord] = {}
        self._pidfds: dict[int, int] = {}

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
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        self._pidfds[pid] = pidfd
        self.selector.register(pidfd, selectors.EVENT_READ, ("worker", record))
        return True

    def reap(self, record: WorkerRecord) -> int | None:
        """Stop watching RECORD's process and collect its wait status."""
        self._unwatch(record.pid)
        return waitpid(record.pid)

    def unwatch(self, pid: int) -> WorkerRecord | None:
        """For a pid reaped elsewhere (the orphan sweep): stop watching it, return its record."""
        self._unwatch(pid)
        return self._by_pid.get(pid)

    def _unwatch(self, pid: int) -> None:
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
