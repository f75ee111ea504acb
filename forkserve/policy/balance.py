"""Which worker takes a new connection: pure functions over a snapshot of the scoreboard.

The balancer (``forkserve/services/balancer.py``) reads each worker's slot into a ``WorkerLoad``, asks
``eligible`` who may take connections at all, then asks ``choose`` for each accepted connection.
Nothing here reads a clock, a socket or shared memory, so every rule is a row in
``tests/unit/test_balance.py``.

Rules:

* Only a READY worker whose heartbeat is fresh takes connections. A booting worker is not serving
  yet, a draining one is leaving, and a hung one (heartbeat older than ``--timeout``) would sit on
  them until it is killed. Nor does a worker with ``MAX_PENDING`` connections handed to it and not
  picked up: its loop is stuck (a long CPU-bound request, or a hang not yet detected), and more
  would only wait behind it. When every worker is that far behind, the connections stay in the
  kernel's accept queue, where the autoscaler sees them.
* ``round-robin`` takes the eligible workers in slot order, one after the other.
* ``least-conn`` takes the worker with the fewest open connections, counting those handed to it
  and not yet picked up (``pending``). A worker that has left a connection unpicked for longer
  than ``STALL_AFTER`` is *stalled*: its event loop is stuck (a CPU-bound request), so it comes
  last whatever its count, and ``take_back_from`` names it so that the balancer hands what waits
  in its channel to a worker that is not stuck. Ties go to the fewest requests in flight, then in
  round-robin order, so an idle fleet still alternates.
* ``ip-hash`` uses rendezvous hashing of the client address over worker ids: every worker id
  scores the address and the highest score wins. Adding or retiring a worker moves only the
  clients whose winner it is; a worker replaced in a reload keeps its id, so its clients follow it
  to the replacement. A client without an address (a unix socket) is placed round-robin.

``reuseport_targets`` is the same eligibility rule for ``--balance reuseport``, by worker id:
which per-worker sockets the kernel may put new connections on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

KERNEL = "kernel"
REUSEPORT = "reuseport"
ROUND_ROBIN = "round-robin"
LEAST_CONN = "least-conn"
IP_HASH = "ip-hash"
# The modes in which the master accepts and hands each connection to a worker.
HANDOFF_MODES = (ROUND_ROBIN, LEAST_CONN, IP_HASH)

# Scoreboard slot states (forkserve.common.scoreboard.SlotState), as plain numbers.
READY = 2
MAX_PENDING = 64
# A connection handed over and not picked up for this long means the worker's loop is stuck. A
# loop that runs picks up within a fraction of a millisecond; 20 ms allow for a busy machine (a
# worker waiting for a CPU) without flapping, and still spare most of a 100 ms request's wait.
STALL_AFTER = 0.02


@dataclass(frozen=True)
class WorkerLoad:
    slot: int
    worker_id: int
    generation: int
    state: int
    heartbeat_age: float  # seconds since the worker's loop last ticked
    connections: int = 0  # open connections, as the worker last wrote them
    pending: int = 0  # handed to it, not yet picked up from its channel
    in_flight: int = 0  # requests in progress, as of its last tick
    pending_age: float = 0.0  # seconds the oldest pending connection has waited to be picked up

    @property
    def stalled(self) -> bool:
        return self.pending_age > STALL_AFTER


def serving(worker: WorkerLoad, *, hung_after: float) -> bool:
    """Ready, and not hung (``hung_after`` 0: never hung)."""
    return worker.state == READY and (hung_after <= 0 or worker.heartbeat_age <= hung_after)


def eligible(workers: Iterable[WorkerLoad], *, hung_after: float) -> list[WorkerLoad]:
    """The workers that may take new connections now, in slot order."""
    return sorted(
        (w for w in workers if serving(w, hung_after=hung_after) and w.pending < MAX_PENDING),
        key=lambda worker: worker.slot,
    )


def choose(mode: str, candidates: Sequence[WorkerLoad], *, turn: int, client: str = "") -> int | None:
    """The slot of the worker that takes the next connection; None when nobody may.

    CANDIDATES come from ``eligible``; TURN counts the connections placed so far (the round-robin
    cursor), CLIENT is the client's IP address for ``ip-hash``.
    """
    if not candidates:
        return None
    start = turn % len(candidates)
    if mode == LEAST_CONN:
        rotated = [*candidates[start:], *candidates[:start]]
        return min(rotated, key=lambda w: (w.stalled, w.connections + w.pending, w.in_flight)).slot
    if mode == IP_HASH and client:
        return rendezvous(candidates, client).slot
    return candidates[start].slot


def take_back_from(candidates: Sequence[WorkerLoad]) -> list[int]:
    """least-conn: the stalled workers whose waiting connections another worker should serve.

    None while every worker is stalled: moving connections between stuck workers gains nothing.
    """
    stalled = [w.slot for w in candidates if w.stalled]
    return stalled if len(stalled) < len(candidates) else []


def rendezvous(candidates: Sequence[WorkerLoad], client: str) -> WorkerLoad:
    """Highest-random-weight hashing of CLIENT over worker ids; the newest generation breaks ties."""
    # Imported here: hashlib loads OpenSSL, 0.5 MiB in a master that never hashes (docs/design.md
    # "Memory"); only --balance ip-hash calls this.
    from hashlib import blake2b

    def score(worker_id: int) -> bytes:
        return blake2b(f"{worker_id}|{client}".encode(), digest_size=8).digest()

    return max(candidates, key=lambda w: (score(w.worker_id), w.generation, w.slot))


def serving_ids(workers: Iterable[WorkerLoad], *, hung_after: float) -> list[int]:
    """The ids of the workers that serve, ascending: for reuseport, whose sockets take connections."""
    return sorted({w.worker_id for w in workers if serving(w, hung_after=hung_after)})
