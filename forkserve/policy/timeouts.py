"""Which workers have run out of time: hung (stale heartbeat) or past a stop deadline.

The master calls ``overdue`` on every tick with what it knows of each live worker and applies the
verdicts: a hung worker gets SIGUSR2 (its stack is dumped) and, ``STACK_DUMP_GRACE`` later,
SIGKILL; a worker past its deadline gets SIGKILL at once.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from forkserve.policy.lifecycle import State

# A hung worker gets this long to write its stack dump before SIGKILL.
STACK_DUMP_GRACE = 0.5


class Overdue(enum.Enum):
    HUNG = "hung"  # heartbeat older than --timeout: dump its stack, then kill
    GRACE_EXPIRED = "grace expired"  # draining past --graceful-timeout: kill now
    DUMP_DONE = "dump done"  # its stack dump had its time: kill now


@dataclass(frozen=True)
class TimeView:
    slot: int
    state: State
    has_pid: bool
    heartbeat: float
    deadline: float | None


def overdue(workers: Iterable[TimeView], *, now: float, timeout: float) -> list[tuple[int, Overdue]]:
    """(slot, verdict) for every worker that must be signalled now. ``timeout`` 0 disables hang checks."""
    verdicts: list[tuple[int, Overdue]] = []
    for worker in workers:
        if not worker.has_pid:
            continue
        past_deadline = worker.deadline is not None and now >= worker.deadline
        if worker.state is State.KILLING:
            if past_deadline:
                verdicts.append((worker.slot, Overdue.DUMP_DONE))
        elif worker.state is State.DRAINING and past_deadline:
            verdicts.append((worker.slot, Overdue.GRACE_EXPIRED))
        elif timeout > 0 and now - worker.heartbeat > timeout:
            verdicts.append((worker.slot, Overdue.HUNG))
    return verdicts
