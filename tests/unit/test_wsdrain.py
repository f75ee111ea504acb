"""The pacing of a draining worker's WebSocket closes (forkserve.policy.wsdrain)."""

from __future__ import annotations

import pytest

from forkserve.policy.wsdrain import AUTO_RATE, CLOSE_MARGIN, TICK, Period, closes_now, wanted, window


@pytest.mark.parametrize(
    ("period", "graceful", "open_count", "expected"),
    [
        # A number of seconds: what it says, whatever the worker holds.
        (10.0, 30.0, 0, 10.0),  # well inside the grace
        (10.0, 30.0, 5000, 10.0),  # an explicit number wins over the count
        (30.0, 30.0, 10, 30.0 - CLOSE_MARGIN),  # shortened so the closes finish before the kill
        (5.0, 0.5, 10, 0.0),  # no room at all: close at once
        (0.0, 30.0, 1000, 0.0),  # pacing off
        # auto: open / AUTO_RATE (100 a second), at least AUTO_FLOOR (1 s), at most the grace less the margin.
        ("auto", 30.0, 0, 1.0),  # nothing open (the drain then does nothing)
        ("auto", 30.0, 3, 1.0),  # a few still leave one by one, over the floor
        ("auto", 30.0, 500, 5.0),  # N = 1,000 on 2 workers: 100 a second, as measured
        ("auto", 30.0, 2000, 20.0),  # N = 4,000 on 2 workers: 100 a second, as measured
        ("auto", 30.0, 10_000, 30.0 - CLOSE_MARGIN),  # capped by the graceful timeout
        ("auto", 10.0, 2000, 10.0 - CLOSE_MARGIN),  # ... whichever it is
        ("auto", 0.5, 2000, 0.0),  # no room at all
    ],
)
def test_window(period: Period, graceful: float, open_count: int, expected: float) -> None:
    assert window(period, graceful, open_count) == pytest.approx(expected)


def test_the_auto_window_grows_with_the_websockets_held_at_the_measured_rate() -> None:
    held = [0, 1, 50, 100, 150, 500, 1000, 2000, 2900, 4000]
    windows = [window("auto", 30.0, n) for n in held]
    assert windows == sorted(windows)
    for n, w in zip(held, windows, strict=True):
        # Never faster than AUTO_RATE closes a second, unless the graceful timeout forces it.
        assert n / w <= AUTO_RATE or w == 30.0 - CLOSE_MARGIN
        assert wanted("auto", n) >= w


@pytest.mark.parametrize(
    ("open_count", "closed", "elapsed", "window_", "expected"),
    [
        (0, 0, 0.0, 10.0, 0),  # nothing open
        (1000, 0, 0.0, 10.0, 1),  # the first at once
        (1000, 1, 0.05, 10.0, 5),  # then 100 a second
        (500, 500, 5.0, 10.0, 1),  # on schedule: half way, half closed
        (900, 100, 5.0, 10.0, 401),  # behind (a slow tick): catch up
        (400, 0, 5.0, 10.0, 201),  # 600 left on their own: 400 seen, 201 due by half time
        (1000, 0, 12.0, 10.0, 1000),  # past the window: the rest
        (50, 0, 0.0, 0.0, 50),  # no window: all at once, as uvicorn does
        (3, 0, 1.0, 10.0, 1),  # few clients: one now and then
        (2, 1, 1.0, 10.0, 0),  # ... the next one not yet
    ],
)
def test_due_per_tick(open_count: int, closed: int, elapsed: float, window_: float, expected: int) -> None:
    assert closes_now(open_count, closed, elapsed=elapsed, window=window_) == expected


@pytest.mark.parametrize("total", [1, 3, 200, 4000])
def test_a_whole_drain_closes_everyone_evenly_within_the_window(total: int) -> None:
    """Simulated tick by tick: every client closed by the window's end, spread evenly over it."""
    period = 4.0
    open_count, elapsed, closed_at = total, 0.0, []
    while open_count:
        assert elapsed <= period + TICK
        k = closes_now(open_count, len(closed_at), elapsed=elapsed, window=period)
        closed_at += [elapsed] * k
        open_count -= k
        elapsed += TICK
    assert len(closed_at) == total
    for quarter in (1, 2, 3):
        if total >= 200:
            assert closed_at[total * quarter // 4] == pytest.approx(period * quarter / 4, abs=2 * TICK)
