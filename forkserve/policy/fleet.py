"""Which workers to start and which to retire, from a snapshot of who is alive.

One function, ``plan``, decides for the master loop on every wake-up. Workers are numbered
1..desired ("worker 3"); a number is filled by at most one worker of the current generation. Older
generations' workers keep serving until the current generation's worker with the same number is
READY, then are retired: a rolling replacement, ``batch`` new workers booting at a time, so the
server never has fewer ready workers than it had. A worker that asked to be replaced
(``outgoing``, after --max-requests) is handled exactly like one of an older generation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from forkserve.policy.lifecycle import SERVING_OR_ABOUT_TO, State


@dataclass(frozen=True)
class WorkerView:
    worker_id: int
    generation: int
    state: State
    slot: int = -1
    # Asked to be replaced (--max-requests): treated like a worker of an older generation.
    outgoing: bool = False


@dataclass(frozen=True)
class Spawn:
    worker_id: int


@dataclass(frozen=True)
class Retire:
    worker_id: int
    generation: int
    reason: str
    slot: int = -1


Action = Spawn | Retire


def plan(
    workers: Sequence[WorkerView],
    *,
    desired: int,
    generation: int,
    may_start: Callable[[int], bool] = lambda _id: True,
    batch: int = 1,
) -> list[Action]:
    active = [w for w in workers if w.state in SERVING_OR_ABOUT_TO]
    current = {w.worker_id: w for w in active if w.generation == generation and not w.outgoing}
    older = [w for w in active if w.generation != generation or w.outgoing]
    older_ids = {w.worker_id for w in older}
    actions: list[Action] = []

    for worker in sorted(current.values(), key=lambda w: w.worker_id):
        if worker.worker_id > desired:
            actions.append(Retire(worker.worker_id, worker.generation, "scaled down", worker.slot))

    booting_replacements = sum(
        1 for w in current.values() if w.state is not State.READY and w.worker_id in older_ids
    )
    for worker_id in range(1, desired + 1):
        if worker_id in current or not may_start(worker_id):
            continue
        if worker_id in older_ids:
            if booting_replacements >= batch:
                continue
            booting_replacements += 1
        actions.append(Spawn(worker_id))

    for worker in sorted(older, key=lambda w: (w.worker_id, w.generation)):
        successor = current.get(worker.worker_id)
        if worker.worker_id > desired:
            actions.append(Retire(worker.worker_id, worker.generation, "scaled down", worker.slot))
        elif successor is not None and successor.state is State.READY:
            reason = "replaced (recycled)" if worker.outgoing else f"replaced by generation {generation}"
            actions.append(Retire(worker.worker_id, worker.generation, reason, worker.slot))
    return actions
