"""The worker registry over a real scoreboard, a real selector and real child processes."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from forkserve.common.scoreboard import Scoreboard, StopMode
from forkserve.master.registry import WorkerRegistry
from forkserve.policy.lifecycle import State


@pytest.fixture
def registry() -> Iterator[WorkerRegistry]:
    scoreboard = Scoreboard.create(4)
    selector = selectors.DefaultSelector()
    yield WorkerRegistry(scoreboard, selector)
    selector.close()
    scoreboard.close()


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_slots_are_claimed_in_order_until_the_scoreboard_is_full(registry: WorkerRegistry) -> None:
    records = [registry.add(worker_id, 1, now=5.0) for worker_id in (1, 2, 3, 4)]
    assert [r.slot for r in records if r is not None] == [0, 1, 2, 3]
    assert registry.add(5, 1, now=5.0) is None
    # The hung check covers the fork and boot: the heartbeat starts when the slot is claimed.
    assert [registry.scoreboard[slot].heartbeat for slot in range(4)] == [5.0] * 4
    assert [r.state for r in registry] == [State.SPAWNING] * 4
    first = records[0]
    assert first is not None
    registry.forget(first, now=6.0)
    assert first.state is State.EXITED
    assert registry.add(6, 1, now=7.0).slot == 0  # type: ignore[union-attr]


def test_a_worker_is_watched_from_its_pid_to_its_reaping(
    registry: WorkerRegistry, child: subprocess.Popen[bytes]
) -> None:
    record = registry.add(1, 1, now=0.0)
    assert record is not None
    assert registry.learn_pid(record, child.pid, now=1.0) is True
    assert record.state is State.BOOTING
    assert registry.by_pid(child.pid) is record
    assert registry.selector.select(0) == []  # alive: its pidfd is not readable
    registry.stop(record, signal.SIGTERM, grace=2.0, now=1.0, reason="test", mode=StopMode.SHUTDOWN)
    assert (record.state, record.deadline, record.reason) == (State.DRAINING, 4.0, "test")
    assert registry.scoreboard[record.slot].stop_mode == StopMode.SHUTDOWN
    ready = registry.selector.select(10)
    assert [key.data for key, _ in ready] == [("worker", record)]
    status = registry.reap(record)
    assert status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    registry.forget(record, now=2.0)
    assert registry.live() == [] and registry.get(record.slot) is None
    assert registry.scoreboard[record.slot].pid == 0
    assert registry.selector.get_map() == {}  # nothing left registered


def test_a_pid_already_gone_is_reported_so_its_record_can_be_forgotten(registry: WorkerRegistry) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(10)  # reaped: the pid no longer exists
    record = registry.add(1, 1, now=0.0)
    assert record is not None
    assert registry.learn_pid(record, proc.pid, now=1.0) is False


def test_the_overdue_are_killed(registry: WorkerRegistry, child: subprocess.Popen[bytes]) -> None:
    record = registry.add(1, 1, now=0.0)
    assert record is not None
    registry.learn_pid(record, child.pid, now=0.0)
    registry.stop(record, signal.SIGCONT, grace=1.0, now=0.0, reason="retired")  # harmless signal
    registry.enforce_timeouts(now=1.5, timeout=30)  # within grace + 1 s
    assert record.state is State.DRAINING
    registry.enforce_timeouts(now=2.5, timeout=30)
    assert record.state is State.KILLING
    assert child.wait(10) == -signal.SIGKILL
