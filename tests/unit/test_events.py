"""The fleet event log: bounded history, counts by kind and reason, observers that cannot break it."""

from __future__ import annotations

import logging

import pytest

from forkserve.services import events
from forkserve.services.events import EventLog, FleetEvent


def test_keeps_only_the_newest_events_but_counts_all() -> None:
    log = EventLog(keep=3)
    for n in range(5):
        log.emit(events.SCALED, f"step {n}", before=n, after=n + 1, reason="signal")
    assert [e.message for e in log.recent()] == ["step 2", "step 3", "step 4"]
    assert [e.message for e in log.recent(1)] == ["step 4"]
    assert log.count(events.SCALED) == 5
    assert log.counts[(events.SCALED, "signal")] == 5


@pytest.mark.parametrize(
    ("reasons", "expected"),
    [
        (["crash", "crash", "hung"], {"crash": 2, "hung": 1}),
        ([], {}),
    ],
)
def test_counts_by_reason(reasons: list[str], expected: dict[str, int]) -> None:
    log = EventLog()
    for reason in reasons:
        log.emit(events.WORKER_EXITED, "gone", reason=reason)
    assert {r: n for (k, r), n in log.counts.items() if k == events.WORKER_EXITED} == expected


def test_a_failing_observer_is_dropped_and_the_others_still_hear(caplog: pytest.LogCaptureFixture) -> None:
    log = EventLog()
    heard: list[FleetEvent] = []

    def broken(event: FleetEvent) -> None:
        raise RuntimeError("observer bug")

    log.subscribe(broken)
    log.subscribe(heard.append)
    with caplog.at_level(logging.ERROR, logger="forkserve"):
        log.emit(events.SERVING, "serving", generation=1)
        log.emit(events.STOPPING, "graceful shutdown", mode="graceful")
    assert [e.kind for e in heard] == [events.SERVING, events.STOPPING]
    assert sum("observer" in r.getMessage() for r in caplog.records) == 1
    assert heard[0].as_dict()["generation"] == 1
