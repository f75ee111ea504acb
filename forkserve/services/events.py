"""What happened to the fleet, as records: the one feed that status, metrics, logs and systemd read.

The master emits an event wherever its state changes in a way an operator cares about (a worker
ready or gone, a reload begun, finished or aborted, a scale step, a stop). Observers subscribe;
they run on the master's thread, so they must be quick and must not block: anything slow (an
HTTP reply, a socket write that may stall) hands the event to its own thread. An observer that
raises is logged (with its traceback the first time, then a line a minute while it keeps failing)
and kept: a failure may be passing (a thread it could not start while memory was short), and a
broken observer can never stop the master.

The log keeps the last ``keep`` events for ``forkserve ctl status`` and the dashboard, and counts
every event by kind and reason for the metrics, so nothing here grows without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from forkserve.services.resilience import Pacer

logger = logging.getLogger("forkserve")

# The kinds the master emits, and the fields each carries (besides message and time).
SERVING = "serving"  # the first worker of the server serves: generation
WORKER_READY = "worker_ready"  # worker_id, pid, generation, slot
WORKER_EXITED = "worker_exited"  # worker_id, pid, generation, planned (bool), reason, status words
RELOAD_STARTED = "reload_started"  # generation
RELOAD_FINISHED = "reload_finished"  # generation, seconds
RELOAD_ABORTED = "reload_aborted"  # generation, reason
SCALED = "scaled"  # before, after, reason ("signal", "api", "autoscaler", "control")
RECYCLE = "recycle"  # worker_id, pid, reason (memory, max-requests)
STOPPING = "stopping"  # mode ("graceful", "immediate")
STOPPED = "stopped"  # exit_code


@dataclass(frozen=True)
class FleetEvent:
    kind: str
    message: str
    at: float  # wall-clock time (time.time()), for people and for other processes
    fields: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "at": self.at, **self.fields}


Observer = Callable[[FleetEvent], None]


def _name(observer: Observer) -> str:
    return getattr(observer, "__qualname__", type(observer).__name__)


class EventLog:
    def __init__(self, keep: int = 200) -> None:
        self._recent: deque[FleetEvent] = deque(maxlen=keep)
        self._observers: list[Observer] = []
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()
        self._errors: dict[int, Pacer] = {}

    def subscribe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def emit(self, kind: str, message: str, **fields: Any) -> FleetEvent:
        event = FleetEvent(kind, message, time.time(), fields)
        with self._lock:
            self._recent.append(event)
            self.counts[(kind, str(fields.get("reason", "")))] += 1
        for index, observer in enumerate(list(self._observers)):
            pacer = self._errors.get(index)
            try:
                observer(event)
            except Exception as error:
                if pacer is None:
                    pacer = self._errors[index] = Pacer(f"an observer of fleet events ({_name(observer)})")
                step = pacer.decide(error, time.monotonic())
                if pacer.failures == 1:
                    logger.exception("%s failed on %s", pacer.what, kind)
                elif step.log is not None:
                    logger.warning("%s", step.log)
            else:
                if pacer is not None:
                    pacer.worked()
        return event

    def recent(self, limit: int | None = None) -> list[FleetEvent]:
        """The newest events, oldest first; safe to call from any thread."""
        with self._lock:
            events = list(self._recent)
        return events if limit is None else events[-limit:]

    def count(self, kind: str) -> int:
        with self._lock:
            return sum(n for (k, _), n in self.counts.items() if k == kind)
