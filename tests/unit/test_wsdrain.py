"""The pacing of a draining worker's WebSocket closes (forkserve.policy.wsdrain)."""

from __future__ import annotations

import pytest

from forkserve.policy.wsdrain import CLOSE_MARGIN, TICK, closes_now, window


@pytest.mark.parametrize(
    ("period", "graceful", "expected"),
    [
        (10.0, 30.0, 10.0),  # well inside the grace
        (30.0, 30.0, 30.0 - CLOSE_MARGIN),  # shortened so the closes finish before the kill
        (5.0, 0.5, 0.0),  # no room at all: close at once
        (0.0, 30.0, 0.0),  # pacing off
    ],
)
def test_window_is_bounded_by_the_graceful_timeout(period: float, graceful: float, expected: float) -> None:
    assert window(period, graceful) == expected


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
