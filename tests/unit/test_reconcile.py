"""``Master._reconcile`` applies the plan: spawn requests on the zygote's real channel, TERM decisions
recorded on the workers, over a real scoreboard. No process is started: no worker here has a pid."""

from __future__ import annotations

import selectors
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from forkserve.api import build_config
from forkserve.common import messages
from forkserve.common.scoreboard import Scoreboard
from forkserve.master.master import Master
from forkserve.master.registry import WorkerRegistry
from forkserve.master.zygotes import ZygoteHandle
from forkserve.policy.lifecycle import State
from forkserve.services.autoscaler import Scaling, scale_settings

NOW = 1000.0
R, B, D = State.READY, State.BOOTING, State.DRAINING


@dataclass
class Fleet:
    master: Master
    master_end: socket.socket
    zygote_end: socket.socket

    def spawned(self) -> list[int]:
        found = []
        while True:
            try:
                message = messages.receive(self.zygote_end)
            except BlockingIOError:
                return found
            assert message is not None and message["op"] == "spawn"
            assert message["generation"] == self.master.generations.current
            found.append(int(message["worker_id"]))


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    config, _ = build_config({"reload_batch": 1})
    master = Master("hello:app", config)
    master.scoreboard = Scoreboard.create(16)
    master.selector = selectors.DefaultSelector()
    master.workers = WorkerRegistry(master.scoreboard, master.selector)
    master_end, zygote_end = messages.channel_pair()
    zygote_end.setblocking(False)
    try:
        yield Fleet(master, master_end, zygote_end)
    finally:
        for end in (master_end, zygote_end, master._wake_r, master._wake_w):
            end.close()
        master.selector.close()
        master.scoreboard.close()


def given(fleet: Fleet, *, desired: int, current: int, workers: list[tuple[int, int, State, bool]]) -> None:
    master = fleet.master
    master.desired = desired
    master.scaling = Scaling(scale_settings(master.config, desired))
    handle = ZygoteHandle(pid=0, generation=current, channel=fleet.master_end, pidfd=-1, loaded=True)
    handle.generations = {current}
    master.generations.zygotes = [handle]
    master.generations.current = current
    for worker_id, generation, state, outgoing in workers:
        record = master.workers.add(worker_id, generation, NOW - 60)
        assert record is not None
        record.state, record.outgoing = state, outgoing


# desired, current generation, workers (id, generation, state, asked to be replaced)
#   -> workers spawned, workers told to stop
CASES = {
    "a fresh server starts every worker": (3, 1, [], [1, 2, 3], []),
    "a full fleet: nothing to do": (2, 1, [(1, 1, R, False), (2, 1, R, False)], [], []),
    "scaled down: the highest number goes": (1, 1, [(1, 1, R, False), (2, 1, R, False)], [], [2]),
    "a booting worker counts toward the number": (2, 1, [(1, 1, R, False), (2, 1, B, False)], [], []),
    "a draining one does not: its replacement starts": (2, 1, [(1, 1, R, False), (2, 1, D, False)], [2], []),
    "a recycled worker is replaced before it is retired": (1, 1, [(1, 1, R, True)], [1], []),
    "a reload starts the new generation one batch at a time": (
        2, 2, [(1, 1, R, False), (2, 1, R, False)], [1], [],
    ),
    "once a new worker serves, the old one it replaces goes": (
        2, 2, [(1, 1, R, False), (2, 1, R, False), (1, 2, R, False)], [2], [1],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_reconcile_applies_the_plan(fleet: Fleet, name: str) -> None:
    desired, current, workers, spawned, stopped = CASES[name]
    given(fleet, desired=desired, current=current, workers=workers)
    fleet.master._reconcile(NOW)
    assert fleet.spawned() == spawned
    draining = sorted(r.worker_id for r in fleet.master.workers if r.state is D and r.reason)
    assert draining == stopped
    # What the workers read through forkserve.worker_info():
    assert fleet.master.scoreboard.header.workers == desired


def test_a_worker_in_back_off_is_not_started_unless_nobody_serves(fleet: Fleet) -> None:
    master = fleet.master
    given(fleet, desired=2, current=1, workers=[(1, 1, R, False)])
    master.backoff.record_exit(2, lifetime=0.1, now=NOW - 0.1, planned=False)
    master.backoff.record_exit(2, lifetime=0.1, now=NOW, planned=False)
    master._reconcile(NOW)
    assert fleet.spawned() == []
    master._reconcile(NOW + 60)
    assert fleet.spawned() == [2]
