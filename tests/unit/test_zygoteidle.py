"""--zygote-idle-exit's decisions, from tables: when the zygote leaves, when one is started again,
when the fleet counts as full, and the word status and metrics show for the zygote."""

from __future__ import annotations

import pytest

from forkserve.policy.fleet import WorkerView
from forkserve.policy.lifecycle import State
from forkserve.policy.zygoteidle import (
    ZygoteMove,
    ZygoteState,
    ZygoteView,
    fleet_full,
    zygote_move,
    zygote_state,
)

STAY, RETIRE, START = ZygoteMove.STAY, ZygoteMove.RETIRE, ZygoteMove.START


def view(**changes: object) -> ZygoteView:
    """A full fleet, its zygote running and idle for 10 s; CHANGES say what differs."""
    fields: dict[str, object] = {
        "running": True,
        "starting": False,
        "fleet_full": True,
        "spawn_wanted": False,
        "idle_for": 10.0,
        "reloading": False,
    }
    return ZygoteView(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("idle_exit", "situation", "expected"),
    [
        # The setting off: the zygote always stays, whatever the fleet does (today's behaviour).
        (None, view(), STAY),
        (None, view(running=False, spawn_wanted=True), STAY),
        # Full fleet, idle long enough: it leaves; at exactly the limit too.
        (0.5, view(), RETIRE),
        (10.0, view(idle_for=10.0), RETIRE),
        (0.0, view(idle_for=0.0), RETIRE),
        # Not idle long enough yet.
        (30.0, view(idle_for=10.0), STAY),
        # A worker number still empty (booting, backing off after a crash): it may be needed.
        (0.5, view(fleet_full=False), STAY),
        # The plan wants a worker this very pass: it is about to fork.
        (0.5, view(spawn_wanted=True), STAY),
        # A reload owns the zygotes until it ends (the new one becomes current, then may retire).
        (0.5, view(reloading=True), STAY),
        (0.5, view(running=False, spawn_wanted=True, reloading=True), STAY),
        # Retired, a worker wanted: start one.
        (0.5, view(running=False, fleet_full=False, spawn_wanted=True, idle_for=0.0), START),
        # ... but only one: while it loads, or while a failed start waits out its back-off, the
        # workers wanted wait for it.
        (0.5, view(running=False, starting=True, fleet_full=False, spawn_wanted=True), STAY),
        # Retired and nothing wanted: stay retired (a scale-down needs no zygote).
        (0.5, view(running=False, fleet_full=True, spawn_wanted=False), STAY),
        (0.5, view(running=False, fleet_full=False, spawn_wanted=False), STAY),
    ],
)
def test_zygote_move(idle_exit: float | None, situation: ZygoteView, expected: ZygoteMove) -> None:
    assert zygote_move(situation, idle_exit=idle_exit) is expected


R, B, D = State.READY, State.BOOTING, State.DRAINING


@pytest.mark.parametrize(
    ("workers", "desired", "expected"),
    [
        ([(1, 2, R, False), (2, 2, R, False)], 2, True),
        # One more than wanted (a scale-down still draining) does not matter.
        ([(1, 2, R, False), (2, 2, R, False), (3, 2, D, False)], 2, True),
        ([(1, 2, R, False), (2, 2, B, False)], 2, False),  # one still booting
        ([(1, 2, R, False)], 2, False),  # one missing (crashed, backing off)
        ([(1, 2, R, False), (2, 1, R, False)], 2, False),  # one of the old generation (a reload)
        ([(1, 2, R, False), (2, 2, R, True)], 2, False),  # one asked to be replaced (--max-requests)
        # The outgoing one's successor serves already: full.
        ([(1, 2, R, False), (2, 2, R, True), (2, 2, R, False)], 2, True),
        ([], 1, False),
    ],
)
def test_fleet_full(workers: list[tuple[int, int, State, bool]], desired: int, expected: bool) -> None:
    views = [
        WorkerView(worker_id, generation, state, outgoing=out)
        for worker_id, generation, state, out in workers
    ]
    assert fleet_full(views, desired=desired, generation=2) is expected


@pytest.mark.parametrize(
    ("running", "loading", "retrying", "retired", "stopping", "expected"),
    [
        (True, False, False, False, False, ZygoteState.RUNNING),
        # Retired on purpose: "retired", never "failed".
        (False, False, False, True, False, ZygoteState.RETIRED),
        # Started again for a worker wanted.
        (False, True, False, True, False, ZygoteState.STARTING),
        # Its start or its import failed; tried again, backed off.
        (False, False, True, True, False, ZygoteState.FAILED),
        (False, False, True, False, False, ZygoteState.FAILED),
        # The retry itself loading.
        (False, True, True, True, False, ZygoteState.STARTING),
        # At start, and between a crash and its replacement (started in the same loop pass).
        (False, True, False, False, False, ZygoteState.STARTING),
        (False, False, False, False, False, ZygoteState.STARTING),
        # Stopping: the zygotes were told to leave.
        (False, False, False, True, True, ZygoteState.NONE),
        (True, False, False, False, True, ZygoteState.RUNNING),
    ],
)
def test_zygote_state(
    running: bool, loading: bool, retrying: bool, retired: bool, stopping: bool, expected: ZygoteState
) -> None:
    state = zygote_state(
        running=running, loading=loading, retrying=retrying, retired=retired, stopping=stopping
    )
    assert state is expected
