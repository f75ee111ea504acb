"""decide(): every autoscaling rule, from tables, with a fake clock."""

from __future__ import annotations

import pytest

from forkserve.policy.autoscale import (
    Note,
    Recycle,
    Sample,
    ScaleSettings,
    ScaleState,
    ScaleTo,
    WorkerSample,
    decide,
)

SETTINGS = ScaleSettings(
    min_workers=1, max_workers=3, scale_up_queue=8, scale_up_busy=0.8, scale_down_idle=30, cooldown=5
)


def workers(*busy: float, uss: float | None = 100.0) -> list[WorkerSample]:
    return [WorkerSample(slot=i, worker_id=i + 1, busy=b, uss_mb=uss, ready=True) for i, b in enumerate(busy)]


def sample(
    now: float, desired: int, queue: int, fleet: list[WorkerSample], available: float = 8000
) -> Sample:
    return Sample(
        now=now, desired=desired, queue=queue, workers=fleet, available_mb=available, total_mb=16000
    )


def run(samples: list[Sample], settings: ScaleSettings = SETTINGS) -> list[list[object]]:
    """Feed samples in order, carrying the state; the actions of each step."""
    state = ScaleState()
    steps = []
    for item in samples:
        actions, state = decide(item, settings, state)
        steps.append(actions)
    return steps


@pytest.mark.parametrize(
    ("queues", "busy", "expected_step", "reason"),
    [
        # Queue above the threshold in two samples running: grow on the second.
        ([20, 37], 0.1, 1, "scale up 1\u21922: accept queue 37 > 8 for 1.0 s"),
        # Busy loops, empty queue: grow on busyness.
        ([0, 0], 0.95, 1, "scale up 1\u21922: workers 95.0% busy > 80% for 1.0 s"),
    ],
)
def test_sustained_pressure_grows_by_one(queues, busy, expected_step, reason):
    steps = run([sample(t, 1, q, workers(busy)) for t, q in enumerate(queues)])
    assert steps[expected_step] == [ScaleTo(2, reason)]
    assert all(step == [] for i, step in enumerate(steps) if i != expected_step)


@pytest.mark.parametrize(
    "queues",
    [
        [20, 0, 20, 0, 20],  # never two samples in a row: a spike is not a trend
        [8, 8, 8],  # at the threshold is not above it
    ],
)
def test_no_growth_without_sustained_pressure(queues):
    assert run([sample(t, 1, q, workers(0.1)) for t, q in enumerate(queues)]) == [[] for _ in queues]


def test_cooldown_spaces_out_growth_and_max_caps_it():
    timeline = [(0, 1), (1, 1), (2, 2), (3, 2), (6, 2), (7, 3), (12, 3), (13, 3)]
    steps = run([sample(t, d, 50, workers(*[0.9] * d)) for t, d in timeline])
    grows = [(i, a[0].workers) for i, a in enumerate(steps) if a]
    # t=1 grows to 2; t=2,3 are in the 5 s cooldown; t=6 grows to 3; at 3 (max) nothing more.
    assert grows == [(1, 2), (4, 3)]


def test_idle_for_scale_down_idle_retires_one_then_waits_again():
    fleet = workers(0.0, 0.0, 0.0)
    times = [0, 10, 29, 30, 31, 59, 60]
    steps = run([sample(t, 3 if t <= 30 else 2, 0, fleet) for t in times])
    assert steps[3] == [ScaleTo(2, "scale down 3\u21922: idle for 30 s")]
    assert steps[6] == [ScaleTo(1, "scale down 2\u21921: idle for 30 s")]
    assert [i for i, step in enumerate(steps) if step] == [3, 6]


@pytest.mark.parametrize(
    ("queue", "busy"),
    [
        (1, 0.0),  # anything queued is not idle
        (0, 0.5),  # between half the grow threshold and the threshold: the hysteresis band
    ],
)
def test_load_in_the_hysteresis_band_neither_grows_nor_shrinks(queue, busy):
    steps = run([sample(t, 2, queue, workers(busy, busy)) for t in range(0, 100, 5)])
    assert all(step == [] for step in steps)


def test_never_below_min_workers():
    settings = ScaleSettings(min_workers=2, max_workers=4, scale_down_idle=1, cooldown=0)
    steps = run([sample(t, 2, 0, workers(0.0, 0.0)) for t in range(10)], settings)
    assert all(step == [] for step in steps)


def test_desired_outside_the_bounds_is_brought_back():
    steps = run([sample(0, 6, 0, workers(0.0))])
    assert steps[0] == [ScaleTo(3, "keeping within --min-workers 1 .. --max-workers 3")]


def test_memory_reserve_blocks_growth_and_says_so_once():
    settings = ScaleSettings(min_workers=1, max_workers=3, memory_reserve="1000")
    fleet = workers(0.95, uss=300.0)
    steps = run([sample(t, 1, 0, fleet, available=1200) for t in range(5)], settings)
    assert steps[1] == [
        Note(
            "scale up blocked: workers 95.0% busy > 80%, but a new worker (~300 MB) would leave "
            "900 MB free, below --memory-reserve 1000 MB"
        )
    ]
    assert steps[2:] == [[], [], []]


def test_memory_reserve_as_a_percentage_of_total():
    settings = ScaleSettings(min_workers=1, max_workers=3, memory_reserve="10%")
    assert settings.reserve_mb(16000) == 1600
    fleet = workers(0.95, uss=300.0)
    assert run([sample(t, 1, 0, fleet, available=1950) for t in range(2)], settings)[1] == [
        ScaleTo(2, "scale up 1\u21922: workers 95.0% busy > 80% for 1.0 s")
    ]
    assert isinstance(run([sample(t, 1, 0, fleet, available=1850) for t in range(2)], settings)[1][0], Note)


@pytest.mark.parametrize(
    ("uss", "ready", "outgoing", "expected"),
    [
        (250.0, True, False, [Recycle(0, 1, "memory 250 MB > 200 MB")]),
        (150.0, True, False, []),
        (250.0, False, False, []),  # still booting: not yet
        (250.0, True, True, []),  # already being replaced
        (None, True, False, []),  # unreadable: no guess
    ],
)
def test_memory_limit_recycles_even_without_autoscaling(uss, ready, outgoing, expected):
    settings = ScaleSettings(min_workers=2, max_workers=2, max_worker_memory_mb=200)
    fleet = [WorkerSample(slot=0, worker_id=1, busy=0.1, uss_mb=uss, ready=ready, outgoing=outgoing)]
    assert run([sample(0, 2, 0, fleet)], settings) == [expected]


def test_autoscaling_off_when_min_equals_max():
    settings = ScaleSettings(min_workers=2, max_workers=2)
    assert not settings.autoscaling
    assert run([sample(t, 2, 100, workers(1.0, 1.0)) for t in range(5)], settings) == [[]] * 5


def test_no_shrink_while_one_worker_is_saturated_even_if_the_average_is_low():
    # One worker at 100% beside two idle ones averages 33%, under half the grow threshold: still no
    # retirement, since the load is real and merely pinned to one worker.
    fleet = workers(1.0, 0.0, 0.0)
    steps = run([sample(t, 3, 0, fleet) for t in range(0, 100, 5)])
    assert all(step == [] for step in steps)
