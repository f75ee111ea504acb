"""Who am I? ``forkserve.worker_info()`` tells the app which worker it runs in, and how many there are.

Theory of operation. A worker knows its number, slot and generation when it is forked; the number
of workers can change while it runs (TTIN/TTOU, the autoscaler), so that is read live from the
scoreboard's header, which only the master writes. An app sizes what it holds per worker from
these (a database pool of ``info.share(budget)`` connections) and, when it opens the pool in its
lifespan startup, gets a size that holds however the fleet rolls.

The same facts are in the environment of each worker (for code that reads settings from there):
``FORKSERVE_WORKER_ID``, ``FORKSERVE_GENERATION`` and ``FORKSERVE_WORKERS`` (the count when the
worker was forked). Outside a forkserve worker, ``worker_info()`` returns None.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from forkserve.common.scoreboard import Scoreboard


@dataclass(frozen=True)
class WorkerInfo:
    worker_id: int  # 1..workers; a replacement (reload, recycling) takes over its predecessor's number
    slot: int  # this worker's scoreboard slot, unique among the processes alive now
    generation: int  # the code generation: 1, then one more per reload
    pid: int
    workers: int  # the number of workers the master wants now
    max_workers: int  # the most it may want: the autoscaler's --max-workers, or -w

    def share(self, budget: int, minimum: int = 1) -> int:
        """This worker's fair share of BUDGET (database connections, say); see ``share_of``."""
        return share_of(budget, self.max_workers, minimum)


def share_of(budget: int, max_workers: int, minimum: int = 1) -> int:
    """A per-worker share of BUDGET that holds even when every worker overlaps with its replacement.

    During a rolling reload (or a recycle) a worker's replacement opens its resources while the old
    worker still holds its own until its last request finishes and its lifespan shutdown runs; in
    the worst case every worker number has two processes at once. So the share is BUDGET split
    over twice the most workers the master may run. Never below MINIMUM.
    """
    return max(minimum, budget // (2 * max(1, max_workers)))


class _Binding:
    def __init__(self, scoreboard: Scoreboard, slot: int, worker_id: int, generation: int) -> None:
        self.scoreboard = scoreboard
        self.slot = slot
        self.worker_id = worker_id
        self.generation = generation


_binding: _Binding | None = None


def bind(scoreboard: Scoreboard, slot: int, worker_id: int, generation: int) -> None:
    """Called once in each freshly forked worker, before the app runs."""
    global _binding
    _binding = _Binding(scoreboard, slot, worker_id, generation)
    header = scoreboard.header
    os.environ["FORKSERVE_WORKER_ID"] = str(worker_id)
    os.environ["FORKSERVE_GENERATION"] = str(generation)
    os.environ["FORKSERVE_WORKERS"] = str(header.workers or 1)


def worker_info() -> WorkerInfo | None:
    """This worker's identity and the fleet's size, read now; None outside a forkserve worker."""
    binding = _binding
    if binding is None:
        return None
    header = binding.scoreboard.header
    workers = header.workers or 1
    return WorkerInfo(
        worker_id=binding.worker_id,
        slot=binding.slot,
        generation=binding.generation,
        pid=os.getpid(),
        workers=workers,
        max_workers=max(workers, header.max_workers),
    )
