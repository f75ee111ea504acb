"""A seam for tests: make calls at a named point fail with an OSError, to show the caller survives.

Real exhaustion is tested too (a lowered RLIMIT_NOFILE, a process limit), but it cannot aim at
one call, and some loops (the autoscaler's sampling, the reload watcher) would need the whole
machine starved. So each place that makes an OS call an exhausted machine can refuse calls
``check(POINT)`` just before it, and a test plans failures there:

- in a real server, through the environment: ``FORKSERVE_FAULTS="control.accept=3,
  worker_fork@2:EAGAIN"`` — ``POINT=N`` fails the next N calls, ``POINT@N`` fails the N-th call
  only (counted per process from its start; a forked child inherits the counts); ``:ERRNO`` names
  the error (EMFILE when omitted). The variable is read once, at the first check.
- in the test's own process: ``arm(POINT, times, errno)`` and ``disarm()``.

Unset (always, outside tests), a check is one dictionary lookup. The points, each just before the
OS call it stands for:

    channel_pair       master: the socketpair for a new zygote's channel
    zygote_start       master: exec (Popen) or fork of a zygote
    zygote_pidfd       master: pidfd_open of a new zygote
    worker_pidfd       master: pidfd_open of a new worker
    worker_fork        zygote: the fork of a worker
    control.accept     control socket: accept()
    metrics.accept     --metrics-bind: accept()
    metrics.sweep      --metrics-bind: the multiprocess directory's listdir()
    balancer.accept    hand-off balancer: accept()
    autoscaler.sample  autoscaler: one load sample
    devreload.watch    --reload: the file watcher
    watchdog.ping      systemd watchdog: the notify socket
    eventlines.write   event lines: writing one
"""

from __future__ import annotations

import errno
import logging
import os
import threading

logger = logging.getLogger("forkserve")

VARIABLE = "FORKSERVE_FAULTS"

CHANNEL_PAIR = "channel_pair"
ZYGOTE_START = "zygote_start"
ZYGOTE_PIDFD = "zygote_pidfd"
WORKER_PIDFD = "worker_pidfd"
WORKER_FORK = "worker_fork"
CONTROL_ACCEPT = "control.accept"
METRICS_ACCEPT = "metrics.accept"
METRICS_SWEEP = "metrics.sweep"
BALANCER_ACCEPT = "balancer.accept"
AUTOSCALER_SAMPLE = "autoscaler.sample"
DEVRELOAD_WATCH = "devreload.watch"
WATCHDOG_PING = "watchdog.ping"
EVENT_LINES = "eventlines.write"
POINTS = (
    CHANNEL_PAIR, ZYGOTE_START, ZYGOTE_PIDFD, WORKER_PIDFD, WORKER_FORK, CONTROL_ACCEPT, METRICS_ACCEPT,
    METRICS_SWEEP, BALANCER_ACCEPT, AUTOSCALER_SAMPLE, DEVRELOAD_WATCH, WATCHDOG_PING, EVENT_LINES,
)  # fmt: skip

# point -> (first failing call, number of failing calls, errno)
Plan = dict[str, tuple[int, int, int]]

_plan: Plan = {}
_calls: dict[str, int] = {}
_lock = threading.Lock()
_read_env = False


def parse(text: str) -> Plan:
    """``POINT=N[:ERRNO]`` (the next N calls) or ``POINT@N[:ERRNO]`` (the N-th call), comma-separated."""
    plan: Plan = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        spec, _, name = item.partition(":")
        if "@" in spec:
            point, _, nth = spec.partition("@")
            first, times = nth, "1"
        else:
            point, _, times = spec.partition("=")
            first = "1"
        if point not in POINTS or not first.isdigit() or not times.isdigit():
            points = ", ".join(POINTS)
            raise ValueError(f"{VARIABLE}: {item!r} is not POINT=N or POINT@N[:ERRNO], POINT one of {points}")
        number = getattr(errno, name or "EMFILE", None)
        if not isinstance(number, int):
            raise ValueError(f"{VARIABLE}: {name!r} is not an errno name such as EMFILE")
        plan[point] = (int(first), int(times), number)
    return plan


def arm(point: str, times: int, error: int = errno.EMFILE) -> None:
    """Fail the next TIMES calls at POINT in this process."""
    with _lock:
        _plan[point] = (_calls.get(point, 0) + 1, times, error)


def disarm() -> None:
    with _lock:
        _plan.clear()


def check(point: str) -> None:
    """Raise the planned OSError if this call at POINT is one planned to fail."""
    global _read_env
    if not _read_env:
        with _lock:
            if not _read_env:
                try:
                    _plan.update(parse(os.environ.get(VARIABLE, "")))
                except ValueError as error:
                    logger.warning("%s; no faults injected", error)
                _read_env = True
    if not _plan:
        return
    with _lock:
        _calls[point] = call = _calls.get(point, 0) + 1
        first, times, number = _plan.get(point, (0, 0, 0))
        if not first <= call < first + times:
            return
    raise OSError(number, f"{os.strerror(number)} (injected at {point})")
