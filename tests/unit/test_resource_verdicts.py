"""The master's decisions at the end of a resource, from tables: fork-failure verdicts, the startup
deadline, what an errno tells the operator, the fault seam's plan, and the loop's guard."""

from __future__ import annotations

import errno
import logging

import pytest

from forkserve.common import faults
from forkserve.master.guard import MAX_PAUSE, LoopGuard
from forkserve.policy.backoff import SPAWN_TRIES, Backoff, Verdict, spawn_failure_verdict
from forkserve.policy.lifecycle import State
from forkserve.policy.oserrors import explain
from forkserve.policy.timeouts import Overdue, TimeView, overdue, startup_limit


@pytest.mark.parametrize(
    ("consecutive", "server_ever_ready", "generation_ever_ready", "serving", "verdict"),
    [
        (1, False, False, 0, Verdict.RESPAWN),  # at start: retried, backed off
        (SPAWN_TRIES - 1, False, False, 0, Verdict.RESPAWN),
        (SPAWN_TRIES, False, False, 0, Verdict.STOP_SERVER),  # at start: a verdict, not a loop
        (SPAWN_TRIES, True, False, 2, Verdict.ABORT_RELOAD),  # a HUP's generation: the old one serves
        (SPAWN_TRIES, True, True, 2, Verdict.SHRINK),  # a TTIN: keep the two that serve
        (SPAWN_TRIES, True, True, 0, Verdict.RESPAWN),  # none serves: nothing to keep, keep trying
        (SPAWN_TRIES + 5, True, True, 1, Verdict.SHRINK),
    ],
)
def test_spawn_failure_verdict(consecutive, server_ever_ready, generation_ever_ready, serving, verdict):
    facts = {"server_ever_ready": server_ever_ready, "generation_ever_ready": generation_ever_ready}
    assert spawn_failure_verdict(consecutive, serving=serving, **facts) is verdict


def test_fork_failures_back_off_as_crashes_do_and_a_success_ends_the_streak():
    backoff = Backoff()
    assert backoff.spawn_failed(1, now=100.0) == 0.5
    assert backoff.spawn_failed(1, now=100.5) == 1.0
    assert not backoff.may_start(1, 101.0) and backoff.may_start(1, 101.5)
    assert backoff.spawn_failures == 2
    backoff.spawned()
    assert backoff.spawn_failures == 0


def view(state: State, spawned_at: float, heartbeat: float) -> TimeView:
    return TimeView(
        slot=0, state=state, has_pid=True, heartbeat=heartbeat, deadline=None, spawned_at=spawned_at
    )


@pytest.mark.parametrize(
    ("state", "spawned_at", "heartbeat", "startup_timeout", "expected"),
    [
        (State.BOOTING, 0.0, 99.9, 5.0, [Overdue.STARTUP]),  # the loop ticks, startup never ends
        (State.BOOTING, 96.0, 99.9, 5.0, []),  # within its time
        (State.BOOTING, 0.0, 99.9, 0.0, []),  # 0 disables it
        (State.READY, 0.0, 99.9, 5.0, []),  # served: startup is over
        (State.BOOTING, 0.0, 0.0, 5.0, [Overdue.HUNG]),  # blocked outright: the hung check says so
    ],
)
def test_startup_deadline(state, spawned_at, heartbeat, startup_timeout, expected):
    verdicts = overdue(
        [view(state, spawned_at, heartbeat)], now=100.0, timeout=30.0, startup_timeout=startup_timeout
    )
    assert [verdict for _, verdict in verdicts] == expected


@pytest.mark.parametrize(
    ("startup_timeout", "timeout", "limit"), [(None, 30.0, 30.0), (5.0, 30.0, 5.0), (0.0, 30.0, 0.0)]
)
def test_startup_timeout_follows_timeout_while_unset(startup_timeout, timeout, limit):
    assert startup_limit(startup_timeout, timeout) == limit


@pytest.mark.parametrize(
    ("number", "doing", "says"),
    [
        (errno.EMFILE, "start the zygote of generation 2", "RLIMIT_NOFILE"),
        (errno.EAGAIN, "fork worker 3", "RLIMIT_NPROC"),
        (errno.ENFILE, "open a pidfd", "fs.file-max"),
        (errno.ENOMEM, "fork worker 1", "out of memory"),
        (errno.EPERM, "fork worker 1", "Operation not permitted"),  # no limit to name: the facts only
        (0, "fork worker 1", "died before"),
    ],
)
def test_an_os_error_names_the_limit_to_raise(number, doing, says):
    words = "the forking process died before it gave a pid" if number == 0 else None
    line = explain(OSError(number, words or __import__("os").strerror(number)), doing)
    assert line.startswith(f"could not {doing}: ")
    assert says in line and "\n" not in line


def test_the_fault_plan_fails_the_nth_call_only(monkeypatch):
    monkeypatch.setattr(faults, "_plan", faults.parse("channel_pair@2,worker_fork@1:EAGAIN"))
    monkeypatch.setattr(faults, "_calls", {})
    faults.check(faults.CHANNEL_PAIR)
    with pytest.raises(OSError) as raised:
        faults.check(faults.CHANNEL_PAIR)
    assert raised.value.errno == errno.EMFILE
    faults.check(faults.CHANNEL_PAIR)
    with pytest.raises(OSError) as raised:
        faults.check(faults.WORKER_FORK)
    assert raised.value.errno == errno.EAGAIN
    faults.check(faults.ZYGOTE_START)


def test_the_loop_guard_logs_a_failure_once_and_backs_off(caplog):
    guard = LoopGuard()
    pauses = []
    with caplog.at_level(logging.INFO, logger="forkserve"):
        for _ in range(20):
            with guard.step("reaping"):
                raise OSError(errno.EMFILE, "Too many open files")
            pauses.append(guard.end_pass())
        with guard.step("reaping"):
            pass
        assert guard.end_pass() == 0.0
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
    assert len(caplog.records) <= 8  # the first, summaries at 2, 4, 8, 16, and "again"
    assert pauses == sorted(pauses) and pauses[-1] == MAX_PAUSE
    assert "reaping again" in caplog.records[-1].getMessage()
