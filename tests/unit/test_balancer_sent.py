"""``Sent``: how many handed-off connections a worker has not taken yet, and for how long."""

from __future__ import annotations

import pytest

from forkserve.services.balancer import Sent

# Each step: sent at these times, then observe(pid, taken, now) -> (waiting, oldest's wait).
STEPS = [
    ([], (100, 0, 0.5), (0, 0.0)),  # the balancer observes a worker before it sends it anything
    ([1.0, 2.0, 3.0], (100, 0, 4.0), (3, 3.0)),  # three waiting; the oldest since 1.0
    ([], (100, 2, 5.0), (1, 2.0)),  # it took two: the one sent at 3.0 waits
    ([6.0], (100, 3, 7.0), (1, 1.0)),
    ([], (100, 4, 8.0), (0, 0.0)),  # all taken
    ([9.0], (200, 0, 10.0), (0, 0.0)),  # a new worker in the slot: the old count means nothing
    ([11.0], (200, 0, 12.0), (1, 1.0)),
    ([], (200, 9, 13.0), (0, 0.0)),  # took more than we counted (it read before we noted): none waits
]


def test_observe_follows_what_was_sent_and_taken() -> None:
    sent = Sent()
    for times, (pid, taken, now), expected in STEPS:
        sent.times.extend(times)
        assert sent.observe(pid, taken, now) == pytest.approx(expected)


@pytest.mark.parametrize(("count", "left"), [(0, 3), (2, 1), (3, 0), (5, 0), (-1, 3)])
def test_forget_takes_from_the_front(count: int, left: int) -> None:
    sent = Sent()
    sent.times.extend([1.0, 2.0, 3.0])
    sent.forget(count)
    assert list(sent.times) == [1.0, 2.0, 3.0][3 - left :]
