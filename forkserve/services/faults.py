"""A fault-injection seam for the service loops: make accept(), listdir() and the like fail on demand.

Tests show that each loop beside the master's survives the errors an exhausted machine produces
(EMFILE, ENFILE, ENOMEM, EAGAIN). Real exhaustion is tested too (a lowered RLIMIT_NOFILE), but it
cannot aim at one loop, and some loops (the autoscaler's sampling, the reload watcher) would need
the whole machine starved. So each loop calls ``check(POINT)`` just before its OS call, and a test
arms points, in the process (``arm``) or, for a real master, through the environment variable
``FORKSERVE_FAULTS``: ``"control.accept=3,metrics.sweep=2"`` makes those calls fail that many
times with EMFILE (``point=N:ENOMEM`` names another errno). The variable is read once, at the
first check; unset, ``check`` is one dictionary lookup.
"""

from __future__ import annotations

import errno
import logging
import os
import threading

logger = logging.getLogger("forkserve")

ENV = "FORKSERVE_FAULTS"

CONTROL_ACCEPT = "control.accept"
METRICS_ACCEPT = "metrics.accept"
METRICS_SWEEP = "metrics.sweep"
BALANCER_ACCEPT = "balancer.accept"
AUTOSCALER_SAMPLE = "autoscaler.sample"
DEVRELOAD_WATCH = "devreload.watch"
WATCHDOG_PING = "watchdog.ping"
EVENT_LINES = "eventlines.write"
POINTS = (
    CONTROL_ACCEPT, METRICS_ACCEPT, METRICS_SWEEP, BALANCER_ACCEPT, AUTOSCALER_SAMPLE,
    DEVRELOAD_WATCH, WATCHDOG_PING, EVENT_LINES,
)  # fmt: skip

_armed: dict[str, tuple[int, int]] = {}  # point -> (failures left, errno)
_lock = threading.Lock()
_read_env = False


def parse(text: str) -> dict[str, tuple[int, int]]:
    """``point=N[:ERRNO]`` items, comma-separated, into point -> (N, errno number)."""
    armed: dict[str, tuple[int, int]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        point, _, rest = item.partition("=")
        count, _, name = rest.partition(":")
        if point not in POINTS or not count.isdigit():
            raise ValueError(f"{ENV}: {item!r} is not POINT=N[:ERRNO] with POINT one of {', '.join(POINTS)}")
        number = getattr(errno, name or "EMFILE", None)
        if not isinstance(number, int):
            raise ValueError(f"{ENV}: {name!r} is not an errno name such as EMFILE")
        armed[point] = (int(count), number)
    return armed


def arm(point: str, times: int, error: int = errno.EMFILE) -> None:
    with _lock:
        _armed[point] = (times, error)


def disarm() -> None:
    with _lock:
        _armed.clear()


def check(point: str) -> None:
    """Raise the armed OSError at POINT, if any failures are left there."""
    global _read_env
    if not _read_env:
        with _lock:
            if not _read_env:
                try:
                    _armed.update(parse(os.environ.get(ENV, "")))
                except ValueError as error:
                    logger.warning("%s; no faults injected", error)
                _read_env = True
    if not _armed:
        return
    with _lock:
        left, number = _armed.get(point, (0, 0))
        if left <= 0:
            return
        _armed[point] = (left - 1, number)
    raise OSError(number, f"{os.strerror(number)} (injected at {point})")
