"""The figures every report prints: percentiles, medians and ratios, computed one way everywhere.

Percentiles are nearest-rank: the p99 is always a latency some request really had, and with few
samples it errs towards the slow side instead of inventing a value between two requests. Medians
and ratios skip missing values (a failed run has no p99), so a report needs no special cases.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import NamedTuple


def percentile(values: Iterable[float], q: float) -> float | None:
    """The ``q``-th percentile (0 < q <= 100) of ``values`` by nearest rank; None when empty."""
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is outside (0, 100]")
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are present; None when none is."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def median_or_nan(values: Iterable[float | None]) -> float:
    """The median as a plain float, NaN when no value is present: for table cells that print it."""
    value = median(values)
    return math.nan if value is None else value


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base``, or None when either is missing or the base is zero."""
    return value / base if value is not None and base else None


class Latency(NamedTuple):
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None


def latency(seconds: Sequence[float]) -> Latency:
    """p50, p99 and max, in milliseconds, of request latencies given in seconds."""
    if not seconds:
        return Latency(None, None, None)
    ordered = sorted(seconds)
    p50, p99 = percentile(ordered, 50), percentile(ordered, 99)
    assert p50 is not None and p99 is not None
    return Latency(p50 * 1000, p99 * 1000, ordered[-1] * 1000)
