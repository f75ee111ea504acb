"""The worker state table: every (state, event) pair either moves where the table says or raises."""

from __future__ import annotations

import itertools

import pytest

from forkserve.policy.lifecycle import (
    LIVE,
    SERVING_OR_ABOUT_TO,
    TRANSITIONS,
    Event,
    IllegalTransition,
    State,
    WorkerRecord,
)

ALL_PAIRS = list(itertools.product(State, Event))
LEGAL = [(state, event) for state, event in ALL_PAIRS if event in TRANSITIONS[state]]
ILLEGAL = [(state, event) for state, event in ALL_PAIRS if event not in TRANSITIONS[state]]


def pair_id(pair: object) -> str:
    return pair.value if isinstance(pair, State | Event) else str(pair)


def record_in(state: State) -> WorkerRecord:
    return WorkerRecord(worker_id=3, slot=2, generation=1, spawned_at=0.0, state=state, pid=4321)


def test_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(State)


# The table written out a second time, by hand: a change to TRANSITIONS must be deliberate.
EXPECTED_TABLE = {
    (State.SPAWNING, Event.FORKED): State.BOOTING,
    (State.SPAWNING, Event.DRAIN): State.DRAINING,
    (State.SPAWNING, Event.EXITED): State.EXITED,
    (State.BOOTING, Event.READY): State.READY,
    (State.BOOTING, Event.DRAIN): State.DRAINING,
    (State.BOOTING, Event.KILL): State.KILLING,
    (State.BOOTING, Event.EXITED): State.EXITED,
    (State.READY, Event.DRAIN): State.DRAINING,
    (State.READY, Event.KILL): State.KILLING,
    (State.READY, Event.EXITED): State.EXITED,
    (State.DRAINING, Event.DRAIN): State.DRAINING,
    (State.DRAINING, Event.KILL): State.KILLING,
    (State.DRAINING, Event.EXITED): State.EXITED,
    # Once killing, a drain request cannot soften it.
    (State.KILLING, Event.DRAIN): State.KILLING,
    (State.KILLING, Event.KILL): State.KILLING,
    (State.KILLING, Event.EXITED): State.EXITED,
}


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=pair_id)
def test_every_pair_is_as_written_out(state: State, event: Event) -> None:
    assert TRANSITIONS[state].get(event) == EXPECTED_TABLE.get((state, event))


@pytest.mark.parametrize(("state", "event"), LEGAL, ids=pair_id)
def test_legal_event_moves_to_the_listed_state(state: State, event: Event) -> None:
    record = record_in(state)
    assert record.apply(event, now=5.0) is TRANSITIONS[state][event]
    assert record.state is TRANSITIONS[state][event]


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=pair_id)
def test_illegal_event_raises_naming_event_and_state(state: State, event: Event) -> None:
    record = record_in(state)
    with pytest.raises(IllegalTransition) as info:
        record.apply(event, now=5.0)
    assert str(info.value) == (
        f"can't handle event {event.value} for worker 3 (pid 4321) in state {state.value}"
    )
    # A refused event changes nothing.
    assert record.state is state
    assert record.history == []
    assert record.ready_at is None


def test_exited_is_final() -> None:
    assert TRANSITIONS[State.EXITED] == {}
    assert not record_in(State.EXITED).live


@pytest.mark.parametrize(
    ("state", "live", "counts"),
    [
        (State.SPAWNING, True, True),
        (State.BOOTING, True, True),
        (State.READY, True, True),
        # Told to stop: still a process to reap, but no longer one of the desired workers.
        (State.DRAINING, True, False),
        (State.KILLING, True, False),
        (State.EXITED, False, False),
    ],
)
def test_live_and_counting_states(state: State, live: bool, counts: bool) -> None:
    assert record_in(state).live is live
    assert (state in LIVE) is live
    assert (state in SERVING_OR_ABOUT_TO) is counts


def test_ready_sets_ready_at() -> None:
    record = WorkerRecord(worker_id=1, slot=0, generation=1, spawned_at=10.0)
    record.apply(Event.FORKED, now=10.5)
    assert record.ready_at is None
    record.apply(Event.READY, now=12.25)
    assert record.ready_at == 12.25
    # Later events keep the moment it became ready (its uptime is measured from there).
    record.apply(Event.DRAIN, now=20.0)
    assert record.ready_at == 12.25


def test_history_records_each_change_with_its_time() -> None:
    record = WorkerRecord(worker_id=1, slot=0, generation=1, spawned_at=10.0)
    assert record.state is State.SPAWNING
    for now, event in [
        (10.5, Event.FORKED),
        (12.0, Event.READY),
        (20.0, Event.DRAIN),
        (21.0, Event.DRAIN),  # a second TERM: same state, not a change
        (50.0, Event.KILL),
        (50.5, Event.KILL),
        (51.0, Event.EXITED),
    ]:
        record.apply(event, now)
    assert record.history == [
        (10.5, State.BOOTING),
        (12.0, State.READY),
        (20.0, State.DRAINING),
        (50.0, State.KILLING),
        (51.0, State.EXITED),
    ]
    assert not record.live


def test_a_new_record_is_spawning_with_empty_history() -> None:
    record = WorkerRecord(worker_id=2, slot=1, generation=4, spawned_at=0.0)
    assert record.state is State.SPAWNING
    assert record.history == []
    assert record.ready_at is None
    assert record.live


def test_records_do_not_share_history() -> None:
    first = WorkerRecord(worker_id=1, slot=0, generation=1, spawned_at=0.0)
    second = WorkerRecord(worker_id=2, slot=1, generation=1, spawned_at=0.0)
    first.apply(Event.FORKED, now=1.0)
    assert second.history == []
