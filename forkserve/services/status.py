"""The fleet at one instant, as plain data: the one snapshot behind ``ctl status``/``top``,
``/metrics``, ``/api/status`` and the dashboard.

``snapshot(master)`` must run on the master's thread (``master.call(lambda: snapshot(master))``):
there the registry cannot change under it, so the workers it lists are exactly the live ones, each
with the counters its scoreboard slot holds at that moment. When that thread does not answer in
time, ``scoreboard_snapshot`` builds the same ``FleetStatus`` from the shared scoreboard alone.
Everything here is plain dataclasses of numbers and strings, so it crosses a socket as JSON and
the pure functions that render it (``settled`` below, ``forkserve.services.fleetmetrics``) are tested from
tables without a master.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from forkserve.common.scoreboard import Scoreboard, SlotState
from forkserve.common.sockets import accept_queue
from forkserve.policy.lifecycle import State
from forkserve.services import events

if TYPE_CHECKING:
    from forkserve.common.scoreboard import Slot
    from forkserve.policy.lifecycle import WorkerRecord
    from forkserve.services.port import MasterPort

# The event kinds an operator asks "why?" about, shown by ctl status.
NOTABLE = frozenset(
    {
        events.SCALED,
        events.WORKER_EXITED,
        events.RELOAD_STARTED,
        events.RELOAD_FINISHED,
        events.RELOAD_ABORTED,
        events.RECYCLE,
        events.STOPPING,
    }
)


@dataclass(frozen=True)
class WorkerStatus:
    worker_id: int
    slot: int
    pid: int
    generation: int
    state: str  # a lifecycle.State value
    uptime: float  # seconds since the master asked for it (forkserve_worker_age_seconds)
    requests: int  # served by this process (its scoreboard count)
    in_flight: int
    connections: int
    websockets: int  # open WebSockets (counted in connections too)
    rss: int  # bytes, sampled about once a second by the worker
    busy: float  # 0..1, share of wall time its event loop wanted a CPU


@dataclass(frozen=True)
class ListenerStatus:
    address: str
    kind: str


@dataclass(frozen=True)
class QueueStatus:
    listener: str
    waiting: int  # connections in the accept queue
    limit: int  # its length limit (the backlog)


@dataclass(frozen=True)
class FleetStatus:
    master_pid: int
    app: str
    generation: int
    desired: int
    stopping: str | None
    reloading: int | None
    uptime: float
    workers: tuple[WorkerStatus, ...]
    listeners: tuple[ListenerStatus, ...]
    queues: tuple[QueueStatus, ...]
    events: tuple[dict[str, Any], ...]  # the latest NOTABLE events
    counts: tuple[tuple[str, str, int], ...]  # (event kind, reason, count) since the master started
    # The current generation's zygote (policy.zygoteidle.ZygoteState); "" when only the scoreboard spoke.
    zygote: str = ""

    @property
    def totals(self) -> dict[str, float]:
        return {
            "workers": len(self.workers),
            "ready": sum(1 for w in self.workers if w.state == State.READY.value),
            "requests": sum(w.requests for w in self.workers),
            "in_flight": sum(w.in_flight for w in self.workers),
            "connections": sum(w.connections for w in self.workers),
            "websockets": sum(w.websockets for w in self.workers),
            "rss": sum(w.rss for w in self.workers),
        }

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "totals": self.totals}


def worker_status(record: WorkerRecord, slot: Slot, now: float) -> WorkerStatus:
    # Until the worker has written its slot, the slot still holds zeros or the counters of the
    # process that had it before: those are not this worker's.
    booted = slot.pid == record.pid and record.pid != 0
    return WorkerStatus(
        worker_id=record.worker_id,
        slot=record.slot,
        pid=record.pid,
        generation=record.generation,
        state=record.state.value,
        uptime=round(now - record.spawned_at, 3),
        requests=int(slot.requests) if booted else 0,
        in_flight=int(slot.in_flight) if booted else 0,
        connections=int(slot.connections) if booted else 0,
        websockets=int(slot.websockets) if booted else 0,
        rss=int(slot.rss) if booted else 0,
        busy=round(float(slot.busy), 3) if booted else 0.0,
    )


def _in_order(workers: list[WorkerStatus]) -> tuple[WorkerStatus, ...]:
    return tuple(sorted(workers, key=lambda w: (w.worker_id, w.generation, w.slot)))


def snapshot(master: MasterPort, event_limit: int = 10, started_at: float | None = None) -> FleetStatus:
    """The fleet now; call it on the master's thread only.

    Only live records count: one that has exited is forgotten in the same loop turn, and if one
    were still held it would be no process to show or to measure.
    """
    now = time.monotonic()
    workers = [worker_status(record, master.scoreboard[record.slot], now) for record in master.live_workers()]
    queues = []
    for listener in master.listeners:
        depth = accept_queue(listener.sock) if listener.sock.fileno() != -1 else None
        if depth is not None:
            queues.append(QueueStatus(listener.address, depth[0], depth[1]))
    notable = [e.as_dict() for e in master.events.recent() if e.kind in NOTABLE][-event_limit:]
    return FleetStatus(
        master_pid=os.getpid(),
        app=master.app_name,
        generation=master.generation,
        desired=master.desired,
        stopping=master.state.stop_mode.value if master.state.stop_mode else None,
        reloading=master.state.reloading,
        uptime=round(now - started_at, 3) if started_at is not None else 0.0,
        workers=_in_order(workers),
        listeners=tuple(
            ListenerStatus(listener.address, listener.spec.kind) for listener in master.listeners
        ),
        queues=tuple(queues),
        events=tuple(notable),
        counts=tuple((kind, reason, n) for (kind, reason), n in master.events.counts.items()),
        zygote=master.zygote_state,
    )


_SLOT_STATES = {
    SlotState.BOOTING: State.BOOTING.value,
    SlotState.READY: State.READY.value,
    SlotState.DRAINING: State.DRAINING.value,
}


def scoreboard_snapshot(scoreboard: Scoreboard, app: str = "") -> FleetStatus:
    """What the scoreboard alone tells, for when the master's thread does not answer in time.

    Every slot listed was written by its own worker, so its counters are that worker's; what only
    the master knows (listeners, queues, events, the desired count) is empty or estimated.
    """
    now = time.monotonic()
    workers = []
    for index in range(scoreboard.capacity):
        slot = scoreboard[index]
        if slot.state not in _SLOT_STATES or not slot.pid:
            continue
        workers.append(
            WorkerStatus(
                worker_id=slot.worker_id,
                slot=index,
                pid=slot.pid,
                generation=slot.generation,
                state=_SLOT_STATES[SlotState(slot.state)],
                uptime=round(now - slot.boot_time, 3),
                requests=int(slot.requests),
                in_flight=int(slot.in_flight),
                connections=int(slot.connections),
                websockets=int(slot.websockets),
                rss=int(slot.rss),
                busy=round(float(slot.busy), 3),
            )
        )
    return FleetStatus(
        master_pid=os.getpid(),
        app=app,
        generation=max((w.generation for w in workers), default=0),
        desired=len(workers),
        stopping=None,
        reloading=None,
        uptime=0.0,
        workers=_in_order(workers),
        listeners=(),
        queues=(),
        events=(),
        counts=(),
    )


def ready_workers(scoreboard: Scoreboard) -> int:
    return sum(1 for index in range(scoreboard.capacity) if scoreboard[index].state == SlotState.READY)


def settled(workers: list[dict[str, Any]], desired: int, generation: int) -> bool:
    """True once exactly DESIRED workers live, all of GENERATION and all serving.

    What ``ctl scale`` waits for: added workers ready, retired ones gone.
    """
    return len(workers) == desired and all(
        w["state"] == State.READY.value and w["generation"] == generation for w in workers
    )
