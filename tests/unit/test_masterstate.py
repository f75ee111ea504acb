"""The master's state table: every (phase, event) pair moves where the table says, is ignored for a
stated reason, or raises."""

from __future__ import annotations

import itertools

import pytest

from forkserve.policy.masterstate import (
    TRANSITIONS,
    Ignored,
    IllegalMove,
    MasterState,
    Phase,
    Reload,
    ReloadEnded,
    ShutdownMode,
    Stop,
    Stopped,
)

GRACEFUL, IMMEDIATE = ShutdownMode.GRACEFUL, ShutdownMode.IMMEDIATE

# The table written out a second time, by hand: a change to TRANSITIONS must be deliberate.
EXPECTED_TABLE = {
    (Phase.SERVING, Reload): Phase.RELOADING,
    (Phase.SERVING, ReloadEnded): Phase.SERVING,
    (Phase.SERVING, Stop): Phase.STOPPING,
    (Phase.SERVING, Stopped): Phase.STOPPED,
    (Phase.RELOADING, Reload): Phase.RELOADING,
    (Phase.RELOADING, ReloadEnded): Phase.SERVING,
    (Phase.RELOADING, Stop): Phase.STOPPING,
    (Phase.RELOADING, Stopped): Phase.STOPPED,
    (Phase.STOPPING, Reload): Phase.STOPPING,
    (Phase.STOPPING, ReloadEnded): Phase.STOPPING,
    (Phase.STOPPING, Stop): Phase.STOPPING,
    (Phase.STOPPING, Stopped): Phase.STOPPED,
}
KINDS = (Reload, ReloadEnded, Stop, Stopped)


def state_in(phase: Phase) -> MasterState:
    """A state in PHASE, reached through the table itself (reloading generation 2, stopping gracefully)."""
    state = MasterState()
    path = {
        Phase.SERVING: [],
        Phase.RELOADING: [Reload(2, 10.0)],
        Phase.STOPPING: [Stop(GRACEFUL)],
        Phase.STOPPED: [Stopped()],
    }[phase]
    for event in path:
        assert state.apply(event) is None
    assert state.phase is phase
    return state


def an_event(kind: type) -> Reload | ReloadEnded | Stop | Stopped:
    return {Reload: Reload(3, 20.0), ReloadEnded: ReloadEnded(2), Stop: Stop(IMMEDIATE), Stopped: Stopped()}[
        kind
    ]


def test_the_code_has_the_table_written_here() -> None:
    assert TRANSITIONS == EXPECTED_TABLE


@pytest.mark.parametrize(("phase", "kind"), list(itertools.product(Phase, KINDS)))
def test_every_pair_moves_as_the_table_says_or_raises(phase: Phase, kind: type) -> None:
    state = state_in(phase)
    if (phase, kind) not in EXPECTED_TABLE:
        with pytest.raises(IllegalMove, match=f"when the master is {phase.value}"):
            state.apply(an_event(kind))
        return
    state.apply(an_event(kind))
    assert state.phase is EXPECTED_TABLE[(phase, kind)]


# (phase, event) -> why it changes nothing (None: it changes the state).
IGNORED = [
    (Phase.SERVING, ReloadEnded(2), Ignored.NO_RELOAD),
    (Phase.RELOADING, ReloadEnded(1), Ignored.STALE_RELOAD),
    (Phase.RELOADING, ReloadEnded(2), None),
    (Phase.STOPPING, Reload(3, 20.0), Ignored.STOPPING),
    (Phase.STOPPING, ReloadEnded(2), Ignored.STOPPING),
    (Phase.STOPPING, Stop(GRACEFUL), Ignored.NOT_AN_ESCALATION),
    (Phase.STOPPING, Stop(IMMEDIATE), None),
    (Phase.SERVING, Stop(GRACEFUL), None),
]


@pytest.mark.parametrize(("phase", "event", "why"), IGNORED)
def test_ignored_events_say_why_and_change_nothing(phase: Phase, event: object, why: Ignored | None) -> None:
    state = state_in(phase)
    before = (state.phase, state.reload_generation, state.stop_mode, len(state.history))
    assert state.apply(event) is why  # type: ignore[arg-type]
    if why is not None:
        assert (state.phase, state.reload_generation, state.stop_mode, len(state.history)) == before


def test_an_immediate_stop_is_final() -> None:
    state = state_in(Phase.SERVING)
    assert state.apply(Stop(IMMEDIATE)) is None
    assert state.apply(Stop(GRACEFUL)) is Ignored.NOT_AN_ESCALATION
    assert state.apply(Stop(IMMEDIATE)) is Ignored.NOT_AN_ESCALATION
    assert state.stop_mode is IMMEDIATE


def test_a_reload_during_a_reload_awaits_the_newer_generation() -> None:
    state = state_in(Phase.RELOADING)
    assert state.apply(Reload(3, 20.0)) is None
    assert (state.reloading, state.reload_started) == (3, 20.0)
    assert state.apply(ReloadEnded(2)) is Ignored.STALE_RELOAD
    assert state.apply(ReloadEnded(3)) is None
    assert state.phase is Phase.SERVING and state.reloading is None


def test_stopping_forgets_the_reload_under_way() -> None:
    state = state_in(Phase.RELOADING)
    state.apply(Stop(GRACEFUL))
    assert (state.stopping, state.reloading, state.stop_mode) == (True, None, GRACEFUL)
