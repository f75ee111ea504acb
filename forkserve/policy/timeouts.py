"""Which workers have run out of time: hung (stale heartbeat), slow to start, or past a stop deadline.

The master calls ``overdue`` on every tick with what it knows of each live worker and applies the
verdicts: a hung worker, or one still booting after ``--startup-timeout``, gets SIGUSR2 (its stack
is dumped) and, ``STACK_DUMP_GRACE`` later, SIGKILL; a worker past its deadline gets SIGKILL at
once. The startup check is apart from the heartbeat: a lifespan startup that awaits something that
never comes keeps the event loop (and so the heartbeat) running, and would otherwise hang forever.
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
    STARTUP = "startup"  # still booting after --startup-timeout: dump its stack, then kill
    GRACE_EXPIRED = "grace expired"  # draining past --graceful-timeout: kill now
    DUMP_DONE = "dump done"  # its stack dump had its time: kill now


@dataclass(frozen=True)
class TimeView:
    slot: int
    state: State
    has_pid: bool
    heartbeat: float
    deadline: float | None
    spawned_at: float = 0.0  # when the master asked for it


def overdue(
    workers: Iterable[TimeView], *, now: float, timeout: float, startup_timeout: float = 0.0
) -> list[tuple[int, Overdue]]:
    """(slot, verdict) for every worker that must be signalled now; a timeout of 0 disables its check."""
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
        elif worker.state is State.BOOTING and 0 < startup_timeout < now - worker.spawned_at:
            verdicts.append((worker.slot, Overdue.STARTUP))
    return verdicts


def startup_limit(startup_timeout: float | None, timeout: float) -> float:
    """--startup-timeout, which follows --timeout while unset."""
    return timeout if startup_timeout is None else startup_timeout
