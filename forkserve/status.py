"""A consistent picture of the fleet at one instant, as plain data for ``ctl status``, ``top`` and metrics.

``snapshot(master)`` must run on the master's thread (``master.call(lambda: snapshot(master))``):
there the registry cannot change under it, so the workers it lists are exactly the live ones, each
with the counters its scoreboard slot holds at that moment. Everything it returns is plain
dataclasses of numbers and strings, so it crosses a socket as JSON and the pure helpers below
(``settled``) are tested from tables without a master.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from forkserve import events
from forkserve.lifecycle import State

if TYPE_CHECKING:
    from forkserve.master import Master

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
    state: str
    uptime: float  # seconds since the master asked for it
    requests: int
    in_flight: int
    connections: int
    rss: int  # bytes, sampled about once a second by the worker
    busy: float  # 0..1, share of wall time its event loop wanted a CPU


@dataclass(frozen=True)
class ListenerStatus:
    address: str
    kind: str


@dataclass(frozen=True)
class FleetStatus:
    master_pid: int
    app: str
    generation: int
    desired: int
    stopping: str | None
    reloading: int | None
    uptime: float
    workers: list[WorkerStatus]
    listeners: list[ListenerStatus]
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, float]:
        return {
            "workers": len(self.workers),
            "ready": sum(1 for w in self.workers if w.state == State.READY.value),
            "requests": sum(w.requests for w in self.workers),
            "in_flight": sum(w.in_flight for w in self.workers),
            "connections": sum(w.connections for w in self.workers),
            "rss": sum(w.rss for w in self.workers),
        }

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "totals": self.totals}


def snapshot(master: Master, event_limit: int = 10, started_at: float | None = None) -> FleetStatus:
    """The fleet now; call it on the master's thread only."""
    now = time.monotonic()
    workers = []
    for record in sorted(master.workers.live(), key=lambda r: (r.worker_id, r.generation)):
        slot = master.scoreboard[record.slot]
        workers.append(
            WorkerStatus(
                worker_id=record.worker_id,
                slot=record.slot,
                pid=record.pid,
                generation=record.generation,
                state=record.state.value,
                uptime=round(now - record.spawned_at, 3),
                requests=int(slot.requests),
                in_flight=int(slot.in_flight),
                connections=int(slot.connections),
                rss=int(slot.rss),
                busy=round(float(slot.busy), 3),
            )
        )
    notable = [e.as_dict() for e in master.events.recent() if e.kind in NOTABLE][-event_limit:]
    return FleetStatus(
        master_pid=os.getpid(),
        app=master.app_name,
        generation=master.generations.current,
        desired=master.desired,
        stopping=master.stopping,
        reloading=master.reloading[0] if master.reloading else None,
        uptime=round(now - started_at, 3) if started_at is not None else 0.0,
        workers=workers,
        listeners=[ListenerStatus(listener.address, listener.spec.kind) for listener in master.listeners],
        events=notable,
    )


def settled(workers: list[dict[str, Any]], desired: int, generation: int) -> bool:
    """True once exactly DESIRED workers live, all of GENERATION and all serving.

    What ``ctl scale`` waits for: added workers ready, retired ones gone.
    """
    return len(workers) == desired and all(
        w["state"] == State.READY.value and w["generation"] == generation for w in workers
    )
