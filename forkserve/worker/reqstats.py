"""Per-request metrics in a worker: status class and latency, counted cheaply, flushed per tick.

Theory of operation. Only with --metrics-bind does the worker wrap the app in ``RequestStats``
(between --health-path, which stays uncounted, and the app). A request costs a clock read on
each side, one closure that notes the response status, and a few additions to plain Python
numbers. The worker's ticker (``flush``, four times a second) moves the totals into
prometheus-client's multiprocess files, where the master's /metrics merges them with every other
worker's and with the app's own metrics.

The obvious alternative, a prometheus-client Counter and Histogram updated per request, takes
prometheus-client's lock and writes the mmap three times per request; batching writes it a few
times per tick however many requests went by.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence
from typing import Any

from forkserve.common.promdir import BUCKETS, DURATION, REQUESTS, STATUS_CLASSES

__all__ = ["BUCKETS", "DURATION", "REQUESTS", "STATUS_CLASSES", "RequestStats", "status_class"]


def status_class(status: int) -> int:
    """Index into STATUS_CLASSES; a request that ended without a response counts as 5xx.

    (uvicorn answers 500 when the app returns or raises before starting a response.)
    """
    if 100 <= status < 600:
        return status // 100 - 1
    return 4


def bucket_index(bounds: Sequence[float], seconds: float) -> int:
    """The first bucket whose upper bound holds SECONDS (len(bounds) is the +Inf bucket)."""
    return bisect.bisect_left(bounds, seconds)


class RequestStats:
    """ASGI middleware counting HTTP requests by status class and latency, for one worker."""

    def __init__(self, app: Any, worker_id: int) -> None:
        self.app = app
        self.worker_id = str(worker_id)
        self.by_class = [0] * len(STATUS_CLASSES)
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.seconds = 0.0
        self._flushed_by_class = [0] * len(STATUS_CLASSES)
        self._flushed_buckets = [0] * (len(BUCKETS) + 1)
        self._flushed_seconds = 0.0
        self._values: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def noting_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, noting_status)
        finally:
            elapsed = time.perf_counter() - started
            self.by_class[status_class(status)] += 1
            self.buckets[bisect.bisect_left(BUCKETS, elapsed)] += 1
            self.seconds += elapsed

    def flush(self) -> None:
        """Write what changed since the last flush into the multiprocess files."""
        if self.by_class == self._flushed_by_class:
            return
        if self._values is None:
            self._values = self._make_values()
        counters, buckets, total = self._values
        for index, count in enumerate(self.by_class):
            delta = count - self._flushed_by_class[index]
            if delta:
                counters[index].inc(delta)
                self._flushed_by_class[index] = count
        for index, count in enumerate(self.buckets):
            delta = count - self._flushed_buckets[index]
            if delta:
                buckets[index].inc(delta)
                self._flushed_buckets[index] = count
        total.inc(self.seconds - self._flushed_seconds)
        self._flushed_seconds = self.seconds

    def _make_values(self) -> tuple[list[Any], list[Any], Any]:
        # The value objects prometheus-client's Counter and Histogram are made of, so the files
        # hold exactly what theirs would and the master's collector merges them like any other.
        from prometheus_client import utils, values

        float_to_go: Any = utils.floatToGoString

        requests_help = "HTTP requests answered, by status class and worker"
        counters = [
            values.ValueClass(
                "counter",
                REQUESTS,
                REQUESTS + "_total",
                ("status", "worker"),
                (name, self.worker_id),
                requests_help,
            )
            for name in STATUS_CLASSES
        ]
        duration_help = "Time from a request's arrival at the app to the end of its response"
        bounds = [*(float_to_go(bound) for bound in BUCKETS), "+Inf"]
        buckets = [
            values.ValueClass("histogram", DURATION, DURATION + "_bucket", ("le",), (le,), duration_help)
            for le in bounds
        ]
        total = values.ValueClass("histogram", DURATION, DURATION + "_sum", (), (), duration_help)
        return counters, buckets, total
