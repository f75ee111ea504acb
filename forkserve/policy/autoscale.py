"""The autoscaler's decisions: from one sample of the server's load to "grow", "shrink", "recycle".

Rules, each with the reason it logs:

* **Grow** by one worker when the accept queue holds more than ``scale_up_queue`` connections, or
  the workers' event loops are busier than ``scale_up_busy`` on average, in ``SUSTAIN`` samples in a
  row (one slow sample is not a trend), and the last change is ``cooldown`` seconds old.
* **Never grow into the memory reserve**: the new worker, estimated at the size of the largest
  current one, must leave ``memory_reserve`` free. A blocked grow is reported once per episode.
* **Shrink** by one worker when the queue is empty, the loops are busy less than half of
  ``scale_up_busy`` on average and none is above it (the gap between the two thresholds is the
  hysteresis that keeps load sitting at a threshold from flapping), for ``scale_down_idle``
  seconds; the idle clock then restarts, so each further retirement needs another idle period.
* **Recycle** a worker whose private memory exceeds ``max_worker_memory``: the master starts its
  replacement first, then drains it (the same path as --max-requests).
* Stay within ``min_workers``..``max_workers`` always.

``decide`` is a pure function of the sample, the settings and the state it returns; the master's
autoscaler thread gathers the samples and the master applies the actions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

SUSTAIN = 2


@dataclass(frozen=True)
class WorkerSample:
    slot: int
    worker_id: int
    busy: float  # share of the last interval its event loop spent running (0..1)
    uss_mb: float | None  # private memory; None when it could not be read
    ready: bool
    outgoing: bool = False  # already being replaced


@dataclass(frozen=True)
class Sample:
    now: float
    desired: int  # workers the master keeps now
    queue: int  # connections waiting in the accept queues, all listeners together
    workers: Sequence[WorkerSample]
    available_mb: float  # memory free for new workers (machine or container, whichever is tighter)
    total_mb: float  # the memory the reserve's percentage is of


@dataclass(frozen=True)
class ScaleSettings:
    min_workers: int
    max_workers: int
    scale_up_queue: int = 8
    scale_up_busy: float = 0.8
    scale_down_idle: float = 30.0
    cooldown: float = 5.0
    max_worker_memory_mb: int = 0
    memory_reserve: str = "0"

    @property
    def autoscaling(self) -> bool:
        return self.max_workers > self.min_workers

    def reserve_mb(self, total_mb: float) -> float:
        text = self.memory_reserve
        return total_mb * float(text[:-1]) / 100 if text.endswith("%") else float(text)


@dataclass(frozen=True)
class ScaleState:
    pressure_samples: int = 0  # consecutive samples above a grow threshold
    pressure_since: float | None = None
    idle_since: float | None = None  # start of the current low-load stretch
    last_change: float = float("-inf")
    blocked_reported: bool = False


@dataclass(frozen=True)
class ScaleTo:
    workers: int
    reason: str


@dataclass(frozen=True)
class Recycle:
    slot: int
    worker_id: int
    reason: str


@dataclass(frozen=True)
class Note:
    """Something worth one log line that changes nothing (a grow blocked by the memory reserve)."""

    reason: str


Action = ScaleTo | Recycle | Note


def _mean_busy(workers: Sequence[WorkerSample]) -> float:
    ready = [w.busy for w in workers if w.ready]
    return sum(ready) / len(ready) if ready else 0.0


def decide(sample: Sample, settings: ScaleSettings, state: ScaleState) -> tuple[list[Action], ScaleState]:
    actions: list[Action] = []
    now = sample.now

    for worker in sample.workers:
        uss = worker.uss_mb
        limit = settings.max_worker_memory_mb
        if limit and uss is not None and uss > limit and worker.ready and not worker.outgoing:
            actions.append(Recycle(worker.slot, worker.worker_id, f"memory {uss:.0f} MB > {limit} MB"))

    if not settings.autoscaling:
        return actions, state

    busy = _mean_busy(sample.workers)
    queue_high = sample.queue > settings.scale_up_queue
    busy_high = busy > settings.scale_up_busy
    # Low load means every worker is calm, not just the average: one saturated worker beside an idle
    # one averages 50%, and retiring either then would only make things worse.
    hottest = max((w.busy for w in sample.workers if w.ready), default=0.0)
    low = sample.queue == 0 and busy < settings.scale_up_busy / 2 and hottest < settings.scale_up_busy
    cooled = now - state.last_change >= settings.cooldown

    if queue_high or busy_high:
        pressure = state.pressure_samples + 1
        since = now if state.pressure_since is None else state.pressure_since
        state = replace(state, pressure_samples=pressure, pressure_since=since, idle_since=None)
    else:
        state = replace(state, pressure_samples=0, pressure_since=None, blocked_reported=False)
        idle_since = (now if state.idle_since is None else state.idle_since) if low else None
        state = replace(state, idle_since=idle_since)

    target = min(max(sample.desired, settings.min_workers), settings.max_workers)
    if target != sample.desired:
        actions.append(ScaleTo(target, f"keeping within --min-workers {settings.min_workers} .. "
                                       f"--max-workers {settings.max_workers}"))  # fmt: skip
        return actions, replace(state, last_change=now)

    if state.pressure_samples >= SUSTAIN and sample.desired < settings.max_workers and cooled:
        held = now - (now if state.pressure_since is None else state.pressure_since)
        why = (
            f"accept queue {sample.queue} > {settings.scale_up_queue}"
            if queue_high
            else f"workers {busy:.1%} busy > {settings.scale_up_busy:.0%}"
        )
        largest = max((w.uss_mb or 0.0 for w in sample.workers), default=0.0)
        reserve = settings.reserve_mb(sample.total_mb)
        if sample.available_mb - largest < reserve:
            if not state.blocked_reported:
                actions.append(Note(
                    f"scale up blocked: {why}, but a new worker (~{largest:.0f} MB) would leave "
                    f"{sample.available_mb - largest:.0f} MB free, below --memory-reserve {reserve:.0f} MB"
                ))  # fmt: skip
            return actions, replace(state, blocked_reported=True)
        desired = sample.desired + 1
        actions.append(ScaleTo(desired, f"scale up {sample.desired}\u2192{desired}: {why} for {held:.1f} s"))
        return actions, replace(state, last_change=now, pressure_samples=0, pressure_since=None)

    idle_for = now - state.idle_since if state.idle_since is not None else 0.0
    if (
        state.idle_since is not None
        and idle_for >= settings.scale_down_idle
        and sample.desired > settings.min_workers
        and cooled
    ):
        desired = sample.desired - 1
        actions.append(
            ScaleTo(desired, f"scale down {sample.desired}\u2192{desired}: idle for {idle_for:.0f} s")
        )
        return actions, replace(state, last_change=now, idle_since=now)

    return actions, state
