"""The fleet as Prometheus metric families and as the dashboard's JSON: pure functions of a
``status.FleetStatus`` (the one snapshot, taken on the master's thread by ``status.snapshot``) and
of the merged multiprocess metrics, tested from tables.

Labels stay bounded however long the server runs: per-worker gauges carry the worker's number
(1..N, reused by its replacements), never its pid, and an exit's free-text reason ("replaced by
generation 7") is reduced to one of a fixed set of words.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from forkserve.common.promdir import DURATION, REQUESTS, STATUS_CLASSES
from forkserve.policy.lifecycle import State
from forkserve.policy.zygoteidle import ZygoteState
from forkserve.services import events
from forkserve.services.status import FleetStatus, WorkerStatus

EXIT_REASONS = ("crash", "hung", "reload", "recycle", "scale_down", "shutdown", "reload_aborted", "other")


def exit_reason(reason: str) -> str:
    """One of EXIT_REASONS for the free-text reason of a worker_exited event."""
    if reason == "crash":
        return "crash"
    if reason.startswith("killed as hung"):
        return "hung"
    if reason.startswith("replaced by generation"):
        return "reload"
    if reason in ("replaced (recycled)", "recycle"):
        return "recycle"
    if reason == "scaled down":
        return "scale_down"
    if reason == "server stopping":
        return "shutdown"
    if reason == "reload aborted":
        return "reload_aborted"
    return "other"


_STATE_RANK = {
    State.READY.value: 0,
    State.BOOTING.value: 1,
    State.SPAWNING.value: 2,
    State.DRAINING.value: 3,
    State.KILLING.value: 4,
}


def one_row_per_worker(rows: Iterable[WorkerStatus]) -> list[WorkerStatus]:
    """The row that speaks for each worker number: during a reload or a recycle an old and a new
    process share a number; the one serving (else the newest) keeps the worker's series going."""
    chosen: dict[int, WorkerStatus] = {}
    for row in rows:
        current = chosen.get(row.worker_id)
        rank = (_STATE_RANK.get(row.state, 9), -row.generation, -row.slot)
        if current is None or rank < (_STATE_RANK.get(current.state, 9), -current.generation, -current.slot):
            chosen[row.worker_id] = row
    return [chosen[worker_id] for worker_id in sorted(chosen)]


@dataclass(frozen=True)
class Family:
    """A metric family as plain data; ``to_prometheus`` turns it into prometheus-client's type."""

    name: str
    kind: str  # gauge or counter
    help: str
    samples: tuple[tuple[dict[str, str], float], ...]


def fleet_families(snapshot: FleetStatus) -> list[Family]:
    rows = snapshot.workers
    states = [state.value for state in State if state is not State.EXITED]
    per_worker = one_row_per_worker(rows)

    def by_worker(field: str) -> list[tuple[dict[str, str], float]]:
        return [({"worker": str(row.worker_id)}, float(getattr(row, field))) for row in per_worker]

    counts: dict[tuple[str, str], int] = {}
    for kind, reason, n in snapshot.counts:
        counts[(kind, reason)] = counts.get((kind, reason), 0) + n

    def total(kind: str, reduce: Any = str) -> dict[str, float]:
        found: dict[str, float] = {}
        for (k, reason), n in counts.items():
            if k == kind:
                found[reduce(reason)] = found.get(reduce(reason), 0) + n
        return found

    exits = dict.fromkeys(EXIT_REASONS, 0.0) | total(events.WORKER_EXITED, exit_reason)
    reloads = {
        "started": sum(total(events.RELOAD_STARTED).values()),
        "finished": sum(total(events.RELOAD_FINISHED).values()),
        "aborted": sum(total(events.RELOAD_ABORTED).values()),
    }

    def one(value: float) -> list[tuple[dict[str, str], float]]:
        return [({}, value)]

    def labelled(label: str, values: Mapping[str, float]) -> list[tuple[dict[str, str], float]]:
        return [({label: key}, value) for key, value in values.items()]

    worker_states = {state: float(sum(1 for row in rows if row.state == state)) for state in states}
    queues = {q.listener: float(q.waiting) for q in snapshot.queues}
    limits = {q.listener: float(q.limit) for q in snapshot.queues}
    scaled = dict(sorted(total(events.SCALED).items()))
    recycled = dict(sorted(total(events.RECYCLE).items()))
    table: list[tuple[str, str, str, list[tuple[dict[str, str], float]]]] = [
        ("generation", "gauge", "Code generation new workers start from", one(snapshot.generation)),
        ("workers_desired", "gauge", "Workers the master aims to keep serving", one(snapshot.desired)),
        (
            "zygote",
            "gauge",
            "The current generation's zygote: 1 for the state it is in (retired: --zygote-idle-exit)",
            labelled("state", {state.value: float(state.value == snapshot.zygote) for state in ZygoteState}),
        ),
        ("workers", "gauge", "Worker processes by lifecycle state", labelled("state", worker_states)),
        ("in_flight", "gauge", "Requests being answered, all workers", one(sum(r.in_flight for r in rows))),
        (
            "connections",
            "gauge",
            "Open client connections, all workers",
            one(sum(r.connections for r in rows)),
        ),
        (
            "websockets",
            "gauge",
            "Open WebSocket connections, all workers",
            one(sum(r.websockets for r in rows)),
        ),
        (
            "rss_bytes",
            "gauge",
            "Resident memory of all workers (shared pages in each)",
            one(sum(r.rss for r in rows)),
        ),
        ("worker_in_flight", "gauge", "Requests being answered by this worker", by_worker("in_flight")),
        ("worker_connections", "gauge", "Open client connections of this worker", by_worker("connections")),
        ("worker_websockets", "gauge", "Open WebSocket connections of this worker", by_worker("websockets")),
        ("worker_rss_bytes", "gauge", "Resident memory of this worker's process", by_worker("rss")),
        (
            "worker_busy_ratio",
            "gauge",
            "Share of time this worker's event loop wanted a CPU",
            by_worker("busy"),
        ),
        ("worker_generation", "gauge", "Code generation this worker runs", by_worker("generation")),
        (
            "worker_age_seconds",
            "gauge",
            "Seconds since this worker's process was forked",
            by_worker("uptime"),
        ),
        ("accept_queue", "gauge", "Connections waiting to be accepted", labelled("listener", queues)),
        ("accept_queue_limit", "gauge", "Accept queue length limit (backlog)", labelled("listener", limits)),
        ("worker_exits", "counter", "Worker processes that ended, by reason", labelled("reason", exits)),
        ("reloads", "counter", "Rolling reloads, by outcome", labelled("outcome", reloads)),
        (
            "scale_events",
            "counter",
            "Changes of the desired worker count, by who asked",
            labelled("reason", scaled),
        ),
        (
            "recycles",
            "counter",
            "Workers replaced for memory or --max-requests",
            labelled("reason", recycled),
        ),
    ]
    return [Family("forkserve_" + name, kind, text, tuple(samples)) for name, kind, text, samples in table]


def to_prometheus(families: Iterable[Family]) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    for family in families:
        labels = sorted({name for sample_labels, _ in family.samples for name in sample_labels})
        metric_class = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
        metric = metric_class(family.name, family.help, labels=labels)
        for sample_labels, value in family.samples:
            metric.add_metric([sample_labels.get(name, "") for name in labels], value)
        yield metric


@dataclass(frozen=True)
class RequestTotals:
    by_status: dict[str, float]
    by_worker: dict[str, float]
    buckets: tuple[tuple[str, float], ...]  # (le, cumulative count)
    seconds: float
    count: float


def request_totals(metrics: Iterable[Any]) -> RequestTotals:
    """forkserve's own request metrics, read back from the merged multiprocess metrics."""
    by_status = dict.fromkeys(STATUS_CLASSES, 0.0)
    by_worker: dict[str, float] = {}
    buckets: list[tuple[float, str, float]] = []
    seconds = count = 0.0
    for metric in metrics:
        if metric.name == REQUESTS:
            for sample in metric.samples:
                status = sample.labels.get("status", "")
                by_status[status] = by_status.get(status, 0.0) + sample.value
                worker = sample.labels.get("worker", "")
                by_worker[worker] = by_worker.get(worker, 0.0) + sample.value
        elif metric.name == DURATION:
            for sample in metric.samples:
                if sample.name.endswith("_bucket"):
                    le = sample.labels["le"]
                    buckets.append((float(le), le, sample.value))
                elif sample.name.endswith("_sum"):
                    seconds += sample.value
                elif sample.name.endswith("_count"):
                    count += sample.value
    ordered = tuple((le, value) for _, le, value in sorted(buckets))
    return RequestTotals(by_status, by_worker, ordered, seconds, count)


def status_document(
    snapshot: FleetStatus,
    totals: RequestTotals,
    recent: Sequence[Mapping[str, Any]],
    *,
    health: bool,
    ready: bool,
    at: float,
) -> dict[str, Any]:
    """What /api/status answers (and what the dashboard draws)."""
    return {
        "at": at,
        "generation": snapshot.generation,
        "desired": snapshot.desired,
        "stopping": snapshot.stopping,
        "health": health,
        "ready": ready,
        "workers": [asdict(row) for row in snapshot.workers],
        "queues": [asdict(queue) for queue in snapshot.queues],
        "requests": {
            "total": sum(totals.by_status.values()),
            "by_status": totals.by_status,
            "by_worker": totals.by_worker,
            "duration_buckets": [list(bucket) for bucket in totals.buckets],
            "duration_sum": totals.seconds,
            "duration_count": totals.count,
        },
        "events": list(recent),
    }
