"""The one fleet snapshot: whose counters a worker row shows, what the scoreboard alone tells, and
that the same dataclass serves ``ctl status --json``, ``/api/status`` and the metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import pytest

from forkserve.cli import statusview
from forkserve.common.scoreboard import Scoreboard, SlotState
from forkserve.policy.lifecycle import State, WorkerRecord
from forkserve.services import fleetmetrics
from forkserve.services.fleetmetrics import RequestTotals
from forkserve.services.status import (
    FleetStatus,
    ListenerStatus,
    ready_workers,
    scoreboard_snapshot,
    worker_status,
)


@pytest.fixture
def scoreboard() -> Iterator[Scoreboard]:
    board = Scoreboard.create(4)
    try:
        yield board
    finally:
        board.close()


def fill(board: Scoreboard, index: int, pid: int, state: SlotState, requests: int, **fields: float) -> None:
    slot = board[index]
    slot.pid, slot.state, slot.requests = pid, state, requests
    slot.worker_id = int(fields.get("worker_id", index + 1))
    slot.generation = int(fields.get("generation", 1))
    slot.boot_time = fields.get("boot_time", 0.0)
    slot.in_flight, slot.connections, slot.rss, slot.busy = 2, 3, 4096, 0.25


@pytest.mark.parametrize(
    ("record_pid", "slot_pid", "counted"),
    [
        (4242, 4242, True),  # the worker wrote its slot
        (4242, 0, False),  # forked, not yet booted: the slot is still blank
        (4242, 4100, False),  # the slot still holds its previous owner's counters
        (0, 0, False),  # asked for, not yet forked
    ],
)
def test_a_worker_shows_only_counters_it_wrote(
    scoreboard: Scoreboard, record_pid: int, slot_pid: int, counted: bool
) -> None:
    fill(scoreboard, 0, slot_pid, SlotState.READY, 17)
    record = WorkerRecord(
        worker_id=1, slot=0, generation=2, spawned_at=100.0, state=State.BOOTING, pid=record_pid
    )
    row = worker_status(record, scoreboard[0], now=112.5)
    assert (row.worker_id, row.slot, row.pid, row.generation, row.state, row.uptime) == (
        1, 0, record_pid, 2, "booting", 12.5,
    )  # fmt: skip
    measured = (row.requests, row.in_flight, row.connections, row.rss, row.busy)
    assert measured == ((17, 2, 3, 4096, 0.25) if counted else (0, 0, 0, 0, 0.0))


def test_the_scoreboard_alone_gives_the_same_snapshot(scoreboard: Scoreboard) -> None:
    fill(scoreboard, 0, 500, SlotState.DRAINING, 9, worker_id=1, generation=1)
    fill(scoreboard, 1, 501, SlotState.READY, 3, worker_id=2, generation=2)
    fill(scoreboard, 2, 502, SlotState.READY, 1, worker_id=1, generation=2)
    fill(scoreboard, 3, 0, SlotState.READY, 5)  # no pid: a slot nobody owns
    fleet = scoreboard_snapshot(scoreboard, "main:app")
    assert isinstance(fleet, FleetStatus)
    assert [(w.worker_id, w.generation, w.slot, w.state) for w in fleet.workers] == [
        (1, 1, 0, "draining"), (1, 2, 2, "ready"), (2, 2, 1, "ready"),
    ]  # fmt: skip
    assert (fleet.app, fleet.generation, fleet.desired, fleet.totals["requests"]) == ("main:app", 2, 3, 13)
    assert ready_workers(scoreboard) == 3


def test_one_snapshot_serves_ctl_the_metrics_and_the_dashboard(scoreboard: Scoreboard) -> None:
    fill(scoreboard, 0, 500, SlotState.READY, 9, boot_time=0.0)
    fleet = scoreboard_snapshot(scoreboard, "main:app")
    fleet = replace(fleet, listeners=(ListenerStatus("127.0.0.1:8000", "tcp"),))

    ctl = json.loads(json.dumps(fleet.as_dict()))  # as ctl status --json gets it
    documented = {"master_pid", "app", "generation", "desired", "stopping", "reloading", "uptime"}
    assert documented | {"workers", "listeners", "events", "totals"} <= ctl.keys()
    assert {"worker_id", "slot", "pid", "generation", "state", "uptime", "requests", "in_flight"} <= set(
        ctl["workers"][0]
    )
    assert "127.0.0.1:8000" in "\n".join(statusview.render(ctl))

    document = fleetmetrics.status_document(
        fleet, RequestTotals({}, {}, (), 0.0, 0.0), [], health=True, ready=True, at=0.0
    )
    assert json.loads(json.dumps(document))["workers"] == ctl["workers"]  # the dashboard reads w.uptime

    age = {f.name: f for f in fleetmetrics.fleet_families(fleet)}["forkserve_worker_age_seconds"]
    assert age.samples == (({"worker": "1"}, fleet.workers[0].uptime),)
