"""overdue(): the hung-worker and stop-deadline verdicts, from a table and a fake clock."""

from __future__ import annotations

import pytest

from forkserve.policy.lifecycle import State
from forkserve.policy.timeouts import Overdue, TimeView, overdue

NOW = 1000.0


@pytest.mark.parametrize(
    ("state", "has_pid", "heartbeat", "deadline", "timeout", "expected"),
    [
        # A fresh heartbeat is fine in every serving state.
        (State.READY, True, NOW - 1, None, 30, []),
        (State.BOOTING, True, NOW - 1, None, 30, []),
        # A stale one is hung, booting or serving or draining alike.
        (State.READY, True, NOW - 31, None, 30, [Overdue.HUNG]),
        (State.BOOTING, True, NOW - 31, None, 30, [Overdue.HUNG]),
        (State.DRAINING, True, NOW - 31, NOW + 5, 30, [Overdue.HUNG]),
        # Exactly at the limit is not yet hung.
        (State.READY, True, NOW - 30, None, 30, []),
        # timeout 0 disables the check.
        (State.READY, True, NOW - 3600, None, 0, []),
        # No pid yet: nothing to signal.
        (State.SPAWNING, False, NOW - 3600, None, 30, []),
        # Draining past its deadline: kill, whatever the heartbeat says.
        (State.DRAINING, True, NOW, NOW - 0.1, 30, [Overdue.GRACE_EXPIRED]),
        (State.DRAINING, True, NOW, NOW, 30, [Overdue.GRACE_EXPIRED]),
        (State.DRAINING, True, NOW, NOW + 0.1, 30, []),
        # Killing: the stack dump had its time once the deadline passes; never "hung" twice.
        (State.KILLING, True, NOW - 100, NOW + 0.2, 30, []),
        (State.KILLING, True, NOW - 100, NOW - 0.2, 30, [Overdue.DUMP_DONE]),
        (State.KILLING, True, NOW - 100, None, 30, []),
    ],
)
def test_overdue(state, has_pid, heartbeat, deadline, timeout, expected):
    view = TimeView(slot=7, state=state, has_pid=has_pid, heartbeat=heartbeat, deadline=deadline)
    assert overdue([view], now=NOW, timeout=timeout) == [(7, verdict) for verdict in expected]


def test_overdue_reports_each_worker_by_slot():
    views = [
        TimeView(1, State.READY, True, NOW, None),
        TimeView(2, State.READY, True, NOW - 60, None),
        TimeView(3, State.DRAINING, True, NOW, NOW - 1),
    ]
    assert overdue(views, now=NOW, timeout=30) == [(2, Overdue.HUNG), (3, Overdue.GRACE_EXPIRED)]
