"""The autoscaler thread: samples the load once per --scale-interval and hands it to the master.

It only measures; ``policy.autoscale.decide`` decides, in the master's loop, which also applies
the decision (a new desired count, or a worker marked for replacement). Measuring here keeps the
slow parts (psutil reading /proc/PID/smaps_rollup for every worker) off the master's loop.

What it reads:
* the accept queue of every listening TCP socket (TCP_INFO; unix sockets report none, so there
  busyness alone drives growth);
* each worker's busyness and state from the scoreboard (written by the worker's event loop);
* each worker's private memory (USS) with psutil, when --max-worker-memory or a reserve needs it;
* memory available to new workers: the machine's, or the container's cgroup limit minus its
  usage (v2 ``memory.max``/``memory.current``, v1 ``memory.limit_in_bytes``/``usage_in_bytes``),
  whichever is tighter.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from forkserve.common import faults
from forkserve.common.scoreboard import Scoreboard, SlotState
from forkserve.common.sizing import parse_proc_self_cgroup
from forkserve.common.sockets import Listener, accept_queue
from forkserve.config.settings import Config
from forkserve.policy.autoscale import (
    Note,
    Recycle,
    Sample,
    ScaleSettings,
    ScaleState,
    ScaleTo,
    WorkerSample,
    decide,
)
from forkserve.services.resilience import Pacer

logger = logging.getLogger("forkserve")
MB = 1024 * 1024


@dataclass(frozen=True)
class Measurement:
    queue: int
    workers: list[WorkerSample]
    available_mb: float
    total_mb: float


def _read_number(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def cgroup_memory(root: Path = Path("/")) -> tuple[int, int] | None:
    """(limit, usage) in bytes of this process's cgroup, or None when it has no memory limit."""
    try:
        paths = parse_proc_self_cgroup((root / "proc/self/cgroup").read_text())
    except OSError:
        return None
    candidates = []
    if paths.v2 is not None:
        base = root / "sys/fs/cgroup" / paths.v2.lstrip("/")
        candidates.append((base / "memory.max", base / "memory.current"))
    for line in (root / "proc/self/cgroup").read_text().splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and "memory" in parts[1].split(","):
            base = root / "sys/fs/cgroup/memory" / parts[2].lstrip("/")
            candidates.append((base / "memory.limit_in_bytes", base / "memory.usage_in_bytes"))
    for limit_path, usage_path in candidates:
        limit, usage = _read_number(limit_path), _read_number(usage_path)
        # v1 reports "no limit" as a huge number rather than "max".
        if limit is not None and usage is not None and limit < 1 << 60:
            return limit, usage
    return None


def measure_memory() -> tuple[float, float]:
    """(available, total) MB for new workers: the tighter of the machine and the container."""
    # Imported by the autoscaler's first measurement: a fixed fleet's master never loads psutil.
    import psutil

    machine = psutil.virtual_memory()
    available, total = machine.available, machine.total
    container = cgroup_memory()
    if container is not None:
        limit, usage = container
        available, total = min(available, max(0, limit - usage)), min(total, limit)
    return available / MB, total / MB


def measure(listeners: Sequence[Listener], scoreboard: Scoreboard, *, want_memory: bool) -> Measurement:
    import psutil

    queue = sum((accept_queue(listener.sock) or (0, 0))[0] for listener in listeners)
    workers = []
    for index in range(scoreboard.capacity):
        slot = scoreboard[index]
        if slot.pid <= 0 or slot.state == SlotState.FREE:
            continue
        uss = None
        if want_memory:
            try:
                uss = psutil.Process(slot.pid).memory_full_info().uss / MB
            except (psutil.Error, OSError):
                uss = None
        workers.append(
            WorkerSample(
                slot=index,
                worker_id=int(slot.worker_id),
                busy=float(slot.busy),
                uss_mb=uss,
                ready=slot.state == SlotState.READY,
            )
        )
    available, total = measure_memory()
    return Measurement(queue, workers, available, total)


class Autoscaler:
    def __init__(
        self,
        interval: float,
        sample: Callable[[], Measurement],
        deliver: Callable[[Measurement], None],
    ) -> None:
        self.interval = interval
        self._sample = sample
        self._deliver = deliver
        self.errors = Pacer("autoscaler: sampling the load")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forkserve-autoscaler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        pause = self.interval
        while not self._stop.wait(pause):
            try:
                faults.check(faults.AUTOSCALER_SAMPLE)
                self._deliver(self._sample())
            except Exception as error:  # a hiccup (EMFILE reading /proc) must not end autoscaling
                pause = max(self.interval, self.errors.failed(error))
            else:
                self.errors.worked()
                pause = self.interval

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def scale_settings(config: Config, workers: int) -> ScaleSettings:
    """The policy's settings; --min-workers and --max-workers default to the starting count."""
    low = config.min_workers or workers
    high = max(config.max_workers or workers, low, workers)
    return ScaleSettings(
        min_workers=min(low, workers),
        max_workers=high,
        scale_up_queue=config.scale_up_queue,
        scale_up_busy=config.scale_up_busy,
        scale_down_idle=config.scale_down_idle,
        cooldown=config.scale_cooldown,
        max_worker_memory_mb=config.max_worker_memory,
        memory_reserve=config.memory_reserve,
    )


class Scaling:
    """The master's side: runs the pure decision on each measurement and logs what it decided."""

    def __init__(self, settings: ScaleSettings) -> None:
        self.settings = settings
        self.state = ScaleState()
        self._scale_up_at: float | None = None
        if settings.autoscaling:
            logger.info(
                "autoscaling %d..%d workers: grow on accept queue > %d or busy > %.0f%%, "
                "shrink after %g s idle",
                settings.min_workers, settings.max_workers, settings.scale_up_queue,
                settings.scale_up_busy * 100, settings.scale_down_idle,
            )  # fmt: skip

    @property
    def active(self) -> bool:
        return self.settings.autoscaling or bool(self.settings.max_worker_memory_mb)

    @property
    def wants_memory(self) -> bool:
        return bool(self.settings.max_worker_memory_mb) or self.settings.memory_reserve not in ("0", "0%")

    def apply(self, measurement: Measurement, desired: int, now: float) -> tuple[int, list[Recycle]]:
        """The new desired worker count, and the workers to replace."""
        sample = Sample(
            now,
            desired,
            measurement.queue,
            measurement.workers,
            measurement.available_mb,
            measurement.total_mb,
        )
        actions, self.state = decide(sample, self.settings, self.state)
        recycles = []
        for action in actions:
            if isinstance(action, ScaleTo):
                logger.info("%s", action.reason)
                if action.workers > desired:
                    self._scale_up_at = now
                desired = action.workers
            elif isinstance(action, Recycle):
                recycles.append(action)
            elif isinstance(action, Note):
                logger.warning("%s", action.reason)
        return desired, recycles

    def worker_ready(self, worker_id: int, now: float) -> bool:
        """True (and the time logged) when this worker is the first to serve after a scale-up."""
        if self._scale_up_at is None:
            return False
        logger.info("scale-up served: worker %d ready %.0f ms after the decision", worker_id,
                    (now - self._scale_up_at) * 1000)  # fmt: skip
        self._scale_up_at = None
        return True
