"""A seam for tests: make the n-th call at a named point fail with an OSError, to show the caller survives.

``FORKSERVE_FAULTS="channel_pair@2,worker_fork@1:EAGAIN"`` makes the second call at the point
``channel_pair`` raise ``OSError(EMFILE)`` (the default errno) and the first ``worker_fork`` raise
``EAGAIN``. Each process counts its own calls from its start; a forked child inherits the counts.
Unset (always, outside tests) a point costs one dictionary lookup.

The points, each just before the OS call it stands for:

    channel_pair   master: the socketpair for a new zygote's channel
    zygote_start   master: exec (Popen) or fork of a zygote
    zygote_pidfd   master: pidfd_open of a new zygote
    worker_pidfd   master: pidfd_open of a new worker
    worker_fork    zygote: the fork of a worker

Real exhaustion is tested too (an fd limit, a process limit); the seam reaches the calls a limit
cannot single out.
"""

from __future__ import annotations

import errno
import os

VARIABLE = "FORKSERVE_FAULTS"
_plan: dict[str, tuple[int, int]] | None = None
_calls: dict[str, int] = {}


def _parse(text: str) -> dict[str, tuple[int, int]]:
    plan: dict[str, tuple[int, int]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        point, _, rest = item.partition("@")
        nth, _, name = rest.partition(":")
        plan[point] = (int(nth or 1), getattr(errno, name or "EMFILE"))
    return plan


def inject(point: str) -> None:
    """Raise the planned OSError if this is the planned call at POINT."""
    global _plan
    if _plan is None:
        _plan = _parse(os.environ.get(VARIABLE, ""))
    if point not in _plan:
        return
    _calls[point] = count = _calls.get(point, 0) + 1
    nth, number = _plan[point]
    if count == nth:
        raise OSError(number, f"{os.strerror(number)} (injected at {point})")
