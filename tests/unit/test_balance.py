"""The balancing policy (forkserve.policy.balance), from tables: no sockets, no clock."""

from __future__ import annotations

import collections
import ipaddress

import pytest

from forkserve.policy.balance import (
    IP_HASH,
    LEAST_CONN,
    MAX_PENDING,
    READY,
    ROUND_ROBIN,
    STALL_AFTER,
    WorkerLoad,
    choose,
    eligible,
    serving_ids,
    take_back_from,
)

BOOTING, DRAINING, FREE = 1, 3, 0


def w(slot: int, state: int = READY, *, age: float = 0.1, conns: int = 0, pending: int = 0, inflight: int = 0,
      worker_id: int | None = None, generation: int = 1, waited: float = 0.0) -> WorkerLoad:  # fmt: skip
    return WorkerLoad(
        slot=slot, worker_id=slot + 1 if worker_id is None else worker_id, generation=generation,
        state=state, heartbeat_age=age, connections=conns, pending=pending, in_flight=inflight,
        pending_age=waited,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("workers", "hung_after", "expected_slots"),
    [
        ([w(0), w(1)], 30, [0, 1]),
        # Booting, draining and free slots take nothing.
        ([w(0, BOOTING), w(1), w(2, DRAINING), w(3, FREE)], 30, [1]),
        # A heartbeat older than --timeout is a hung worker: no new connections for it.
        ([w(0, age=31), w(1, age=2)], 30, [1]),
        ([w(0, age=30), w(1)], 30, [0, 1]),
        # --timeout 0 disables the hung check.
        ([w(0, age=3600)], 0, [0]),
        # A worker that has not picked up MAX_PENDING handed connections is stuck: skip it.
        ([w(0, pending=MAX_PENDING), w(1, pending=MAX_PENDING - 1)], 30, [1]),
        ([w(0, pending=MAX_PENDING)], 30, []),
        # Slot order, whatever the input order.
        ([w(5), w(2), w(9)], 30, [2, 5, 9]),
        ([], 30, []),
    ],
)
def test_eligible(workers, hung_after, expected_slots):
    assert [x.slot for x in eligible(workers, hung_after=hung_after)] == expected_slots


@pytest.mark.parametrize(
    ("mode", "candidates", "turn", "client", "expected"),
    [
        # Nobody eligible: nobody chosen, in every mode.
        (ROUND_ROBIN, [], 0, "", None),
        (LEAST_CONN, [], 3, "", None),
        (IP_HASH, [], 0, "10.0.0.1", None),
        # Round-robin walks the slots in order, whatever their load.
        (ROUND_ROBIN, [w(0, conns=9), w(4)], 0, "", 0),
        (ROUND_ROBIN, [w(0, conns=9), w(4)], 1, "", 4),
        (ROUND_ROBIN, [w(0), w(4)], 2, "", 0),
        (ROUND_ROBIN, [w(0), w(4), w(7)], 5, "", 7),
        # Least-conn: fewest open plus pending connections.
        (LEAST_CONN, [w(0, conns=3), w(1, conns=1)], 0, "", 1),
        (LEAST_CONN, [w(0, conns=1), w(1, conns=0, pending=2)], 0, "", 0),
        # A worker stuck in a CPU-bound request picks nothing up: its pending count sends work away.
        (LEAST_CONN, [w(0, conns=1, pending=3), w(1, conns=2)], 0, "", 1),
        # A worker that leaves a connection unpicked past STALL_AFTER is stuck: last, whatever its count.
        (LEAST_CONN, [w(0, conns=0, pending=1, waited=STALL_AFTER * 2), w(1, conns=9)], 0, "", 1),
        (LEAST_CONN, [w(0, conns=0, pending=1, waited=STALL_AFTER / 2), w(1, conns=9)], 0, "", 0),
        # Every worker stuck: the count decides again.
        (LEAST_CONN, [w(0, pending=5, waited=1), w(1, pending=2, waited=1)], 0, "", 1),
        # Round-robin stays strict: it does not look at stalls.
        (ROUND_ROBIN, [w(0, pending=1, waited=1), w(1)], 0, "", 0),
        # Ties: fewer requests in flight wins...
        (LEAST_CONN, [w(0, conns=2, inflight=2), w(1, conns=2, inflight=0)], 0, "", 1),
        # ...then round-robin order, so an idle fleet alternates.
        (LEAST_CONN, [w(0), w(1)], 0, "", 0),
        (LEAST_CONN, [w(0), w(1)], 1, "", 1),
        (LEAST_CONN, [w(0), w(1), w(2, conns=1)], 2, "", 0),
        # ip-hash without an address (a unix socket client): round-robin.
        (IP_HASH, [w(0), w(1)], 1, "", 1),
    ],
)
def test_choose(mode, candidates, turn, client, expected):
    assert choose(mode, candidates, turn=turn, client=client) == expected


CLIENTS = [str(ipaddress.IPv4Address("10.0.0.0") + i) for i in range(2000)]


def owners(candidates: list[WorkerLoad]) -> dict[str, int]:
    """client -> worker id under ip-hash."""
    by_slot = {c.slot: c.worker_id for c in candidates}
    return {
        client: by_slot[choose(IP_HASH, candidates, turn=i, client=client)]  # type: ignore[index]
        for i, client in enumerate(CLIENTS)
    }


def test_ip_hash_is_sticky_whatever_the_turn_or_load():
    fleet = [w(0), w(1), w(2)]
    loaded = [w(0, conns=50), w(1), w(2, pending=9)]
    for client in CLIENTS[:50]:
        picks = {choose(IP_HASH, fleet, turn=t, client=client) for t in range(5)}
        assert len(picks) == 1
        assert picks == {choose(IP_HASH, loaded, turn=0, client=client)}


def test_ip_hash_spreads_clients_evenly():
    shares = collections.Counter(owners([w(0), w(1), w(2), w(3)]).values())
    assert set(shares) == {1, 2, 3, 4}
    assert max(shares.values()) / min(shares.values()) < 1.25, shares


def test_ip_hash_moves_only_the_retired_workers_clients():
    before = owners([w(0), w(1), w(2), w(3)])
    after = owners([w(0), w(1), w(3)])  # worker 3 (slot 2) leaves
    moved = {client for client in CLIENTS if before[client] != after[client]}
    assert moved == {client for client in CLIENTS if before[client] == 3}


def test_ip_hash_moves_only_a_share_to_an_added_worker():
    before = owners([w(0), w(1)])
    after = owners([w(0), w(1), w(2)])
    moved = {client for client in CLIENTS if before[client] != after[client]}
    assert all(after[client] == 3 for client in moved)
    assert 0.25 < len(moved) / len(CLIENTS) < 0.42


def test_ip_hash_follows_a_worker_id_to_its_replacement():
    # A reload replaces worker 2 (slot 1) by worker 2 of generation 2 in slot 5: same clients.
    before = owners([w(0), w(1)])
    during = owners([w(0), w(1), w(5, worker_id=2, generation=2)])
    after = owners([w(0), w(5, worker_id=2, generation=2)])
    assert before == during == after
    # While both copies of worker 2 serve, the newer generation takes its clients.
    both = [w(0), w(1), w(5, worker_id=2, generation=2)]
    for i, client in enumerate(CLIENTS[:200]):
        if before[client] == 2:
            assert choose(IP_HASH, both, turn=i, client=client) == 5


@pytest.mark.parametrize(
    ("workers", "expected"),
    [
        ([w(0), w(1)], [1, 2]),
        # A worker id serves while any of its copies is ready: during a reload, old or new.
        ([w(0), w(1, DRAINING), w(4, worker_id=2, generation=2)], [1, 2]),
        # A hung worker's socket takes nothing until its replacement is ready.
        ([w(0), w(1, age=99)], [1]),
        ([w(0), w(1, age=99), w(4, BOOTING, worker_id=2)], [1]),
        ([w(0), w(1, age=99), w(4, worker_id=2)], [1, 2]),
        ([w(0, DRAINING)], []),
    ],
)
def test_serving_ids(workers, expected):
    assert serving_ids(workers, hung_after=30) == expected


@pytest.mark.parametrize(
    ("candidates", "expected"),
    [
        ([w(0), w(1)], []),
        ([w(0, pending=3, waited=STALL_AFTER * 3), w(1)], [0]),
        ([w(0, pending=3, waited=STALL_AFTER * 3), w(1, pending=1, waited=0.0001), w(2)], [0]),
        # Every worker stuck: nowhere better to send them.
        ([w(0, pending=3, waited=1), w(1, pending=1, waited=1)], []),
        ([w(0, pending=3, waited=1)], []),
    ],
)
def test_take_back_from(candidates, expected):
    assert take_back_from(candidates) == expected
