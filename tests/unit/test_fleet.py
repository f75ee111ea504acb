"""plan(): which workers to spawn and retire, from snapshots of the fleet written as tables.

Each worker is written ``(worker_id, generation, state)``. The expected actions are in the order
plan() returns them: current-generation scale-downs, then spawns by id, then older generations'
retirements by id.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from forkserve.policy.fleet import Action, Retire, Spawn, WorkerView, plan
from forkserve.policy.lifecycle import State

S, B, R, D, K, X = State.SPAWNING, State.BOOTING, State.READY, State.DRAINING, State.KILLING, State.EXITED


def fleet(*rows: tuple[int, int, State]) -> list[WorkerView]:
    return [WorkerView(worker_id, generation, state) for worker_id, generation, state in rows]


def everyone(_worker_id: int) -> bool:
    return True


def only(*ids: int) -> Callable[[int], bool]:
    return lambda worker_id: worker_id in ids


def replaced(worker_id: int, old: int, new: int) -> Retire:
    return Retire(worker_id, old, f"replaced by generation {new}")


def scaled_down(worker_id: int, generation: int) -> Retire:
    return Retire(worker_id, generation, "scaled down")


@pytest.mark.parametrize(
    ("workers", "desired", "generation", "may_start", "batch", "expected"),
    [
        pytest.param(fleet(), 2, 1, everyone, 1, [Spawn(1), Spawn(2)], id="empty fleet fills every id"),
        pytest.param(fleet(), 0, 1, everyone, 1, [], id="nothing desired, nothing to do"),
        pytest.param(fleet((1, 1, R), (2, 1, R)), 2, 1, everyone, 1, [], id="all ready: nothing"),
        pytest.param(
            fleet((1, 1, S), (2, 1, B)), 2, 1, everyone, 1, [], id="spawning and booting fill their ids"
        ),
        pytest.param(fleet((2, 1, R)), 3, 1, everyone, 1, [Spawn(1), Spawn(3)], id="gaps are filled"),
        pytest.param(
            fleet((1, 1, R), (2, 1, R), (3, 1, R), (4, 1, R)),
            2,
            1,
            everyone,
            1,
            [scaled_down(3, 1), scaled_down(4, 1)],
            id="desired lowered: highest ids retired",
        ),
        pytest.param(
            fleet((1, 1, R), (2, 1, B)),
            1,
            1,
            everyone,
            1,
            [scaled_down(2, 1)],
            id="scaling down retires a booting worker too",
        ),
        pytest.param(
            fleet((1, 1, R), (2, 1, R)),
            2,
            2,
            everyone,
            1,
            [Spawn(1)],
            id="reload: one replacement boots at a time, nothing retired yet",
        ),
        pytest.param(
            fleet((1, 1, R), (2, 1, R), (1, 2, B)),
            2,
            2,
            everyone,
            1,
            [],
            id="reload: replacement still booting holds the next one back",
        ),
        pytest.param(
            fleet((1, 1, R), (2, 1, R), (1, 2, S)),
            2,
            2,
            everyone,
            1,
            [],
            id="reload: replacement still spawning holds the next one back",
        ),
        pytest.param(
            fleet((1, 1, R), (2, 1, R), (1, 2, R)),
            2,
            2,
            everyone,
            1,
            [Spawn(2), replaced(1, 1, 2)],
            id="reload: replacement ready retires its predecessor and starts the next",
        ),
        pytest.param(
            fleet((2, 1, R), (1, 2, R), (2, 2, R)),
            2,
            2,
            everyone,
            1,
            [replaced(2, 1, 2)],
            id="reload: last predecessor retired",
        ),
        pytest.param(
            fleet((1, 1, D), (1, 2, R), (2, 2, R)),
            2,
            2,
            everyone,
            1,
            [],
            id="reload done: a draining predecessor is not retired again",
        ),
        pytest.param(
            fleet((1, 1, R), (2, 1, R)),
            2,
            2,
            everyone,
            2,
            [Spawn(1), Spawn(2)],
            id="reload with batch 2 boots two replacements",
        ),
        pytest.param(
            fleet((1, 1, R), (2, 1, R), (3, 1, R)),
            3,
            2,
            everyone,
            2,
            [Spawn(1), Spawn(2)],
            id="batch 2 of 3 stops at two",
        ),
        pytest.param(
            fleet((1, 1, R), (2, 1, R), (3, 1, R), (1, 2, B)),
            3,
            2,
            everyone,
            2,
            [Spawn(2)],
            id="batch 2 with one booting starts one more",
        ),
        pytest.param(
            fleet((1, 1, R)),
            2,
            2,
            everyone,
            1,
            [Spawn(1), Spawn(2)],
            id="scale up during a reload: a fresh id is not a replacement and ignores the batch",
        ),
        pytest.param(
            fleet((1, 1, R), (2, 1, R), (3, 1, R)),
            2,
            2,
            everyone,
            1,
            [Spawn(1), scaled_down(3, 1)],
            id="older generation worker above desired is retired",
        ),
        pytest.param(
            fleet((3, 1, B)),
            2,
            2,
            everyone,
            1,
            [Spawn(1), Spawn(2), scaled_down(3, 1)],
            id="older generation booting worker above desired is retired",
        ),
        pytest.param(
            fleet((1, 1, R), (1, 2, R), (1, 3, B)),
            1,
            3,
            everyone,
            1,
            [],
            id="two reloads: generation 2 is old too, and both wait for generation 3",
        ),
        pytest.param(
            fleet((1, 1, R), (1, 2, R), (1, 3, R)),
            1,
            3,
            everyone,
            1,
            [replaced(1, 1, 3), replaced(1, 2, 3)],
            id="two reloads: every older generation is replaced once the newest is ready",
        ),
        pytest.param(fleet(), 3, 1, only(1, 3), 1, [Spawn(1), Spawn(3)], id="may_start false: not spawned"),
        pytest.param(fleet(), 2, 1, only(), 1, [], id="may_start false for all: nothing spawned"),
        pytest.param(
            fleet((1, 1, R), (2, 1, R)),
            2,
            2,
            only(2),
            1,
            [Spawn(2)],
            id="reload: a backed-off id does not use up the batch",
        ),
        pytest.param(fleet((1, 1, D)), 1, 1, everyone, 1, [Spawn(1)], id="draining does not fill an id"),
        pytest.param(fleet((1, 1, K)), 1, 1, everyone, 1, [Spawn(1)], id="killing does not fill an id"),
        pytest.param(fleet((1, 1, X)), 1, 1, everyone, 1, [Spawn(1)], id="exited does not fill an id"),
        pytest.param(
            fleet((1, 1, D), (2, 1, K)),
            2,
            2,
            everyone,
            1,
            [Spawn(1), Spawn(2)],
            id="reload: draining/killing predecessors are not waited for",
        ),
        pytest.param(
            fleet((3, 1, D)),
            1,
            1,
            everyone,
            1,
            [Spawn(1)],
            id="a draining worker above desired is left alone",
        ),
    ],
)
def test_plan(
    workers: list[WorkerView],
    desired: int,
    generation: int,
    may_start: Callable[[int], bool],
    batch: int,
    expected: list[Action],
) -> None:
    assert plan(workers, desired=desired, generation=generation, may_start=may_start, batch=batch) == expected


def test_plan_defaults_to_batch_one_and_starting_anyone() -> None:
    assert plan(fleet((1, 1, R), (2, 1, R)), desired=2, generation=2) == [Spawn(1)]
    assert plan(fleet(), desired=1, generation=1) == [Spawn(1)]


def test_rolling_reload_never_has_fewer_ready_workers_than_before() -> None:
    # Play plan() forward: every spawned worker becomes READY, every retired one is gone, by the
    # next wake-up. Check the invariant the module promises, and that the reload completes.
    desired, generation = 3, 2
    states = {(worker_id, 1): R for worker_id in range(1, desired + 1)}
    for _step in range(2 * desired + 1):
        actions = plan(
            fleet(*((i, g, s) for (i, g), s in states.items())), desired=desired, generation=generation
        )
        if not actions:
            break
        for action in actions:
            if isinstance(action, Spawn):
                states[(action.worker_id, generation)] = R
            else:
                del states[(action.worker_id, action.generation)]
        assert sum(1 for s in states.values() if s is R) >= desired
    assert states == {(worker_id, generation): R for worker_id in range(1, desired + 1)}
