"""--balance: which worker takes each connection, and that no mode loses one across a reload or stop.

Every response of the test apps starts with the pid of the worker that served it. Clients here
open one connection per request (``Connection: close``) unless they are the keep-alive load.
"""

from __future__ import annotations

import collections
import itertools
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import wait_until
from tests.integration.load import background_load

MODES = ["kernel", "reuseport", "round-robin", "least-conn", "ip-hash"]
HANDOFF = ["round-robin", "least-conn", "ip-hash"]


def request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode()


def read_pid(client: socket.socket) -> int:
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:300]
    return int(body.split()[0])


def ask(port: int, path: str = "/", source: str | None = None) -> int:
    """The pid of the worker that served one request on a new connection (from SOURCE, if given)."""
    address = (source, 0) if source else None
    with socket.create_connection(("127.0.0.1", port), timeout=15, source_address=address) as client:
        client.sendall(request(path))
        return read_pid(client)


def burst(port: int, count: int, path: str) -> list[int]:
    """COUNT connections opened at once, each with a request in it; the pid that served each."""
    clients = [socket.create_connection(("127.0.0.1", port), timeout=15) for _ in range(count)]
    try:
        for client in clients:
            client.sendall(request(path))
        return [read_pid(client) for client in clients]
    finally:
        for client in clients:
            client.close()


def start(serve, mode: str, *args: str, workers: int = 2, **kwargs) -> object:
    """A server in MODE whose balancer already routes to all WORKERS (the log says so)."""
    server = serve("-w", str(workers), "--balance", mode, *args, wait=workers, **kwargs)
    if mode != "kernel":
        ids = ", ".join(str(i) for i in range(1, workers + 1))
        server.wait_log(rf"{mode}: new connections go to workers? {ids}$", timeout=5)
    return server


def worker_pid(server, worker_id: int) -> int:
    return next(pid for pid, title in server.workers().items() if f"worker {worker_id} " in title)


@pytest.mark.parametrize("mode", MODES)
def test_a_hup_under_load_fails_nothing(serve, mode):
    server = start(serve, mode)
    original = set(server.workers())
    with background_load(server.url, keep_alive=8, fresh=4) as load:
        wait_until(lambda: load.ok > 50, 10, "load to start", server.tail)
        server.signal(signal.SIGHUP)
        wait_until(
            lambda: len(server.ready_workers() - original) == 2 and not set(server.workers()) & original,
            20, "the new generation alone", server.tail,
        )  # fmt: skip
        mark = load.ok
        wait_until(lambda: load.ok > mark + 100, 10, "requests after the reload", server.tail)
    assert load.failed == 0, f"{load}\n{server.tail()}"
    if mode in ("reuseport", "round-robin", "least-conn"):
        # Both new workers serve (kernel mode may favour one; ip-hash sends one address to one).
        served = {int(body.split()[0]) for body in load.bodies()}
        assert served >= server.ready_workers(), f"{served} vs {server.ready_workers()}"


@pytest.mark.parametrize("mode", ["reuseport", *HANDOFF])
def test_term_serves_every_connection_already_waiting(serve, mode):
    server = start(serve, mode, workers=1)
    with ThreadPoolExecutor(1) as pool:
        # The only worker is stuck in CPU for 2 s: new connections wait (in the accept queue, or in
        # its hand-off channel).
        blocker = pool.submit(lambda: ask(server.port, "/cpu?seconds=2"))
        wait_until(lambda: server.accepted() == 1, 5, "the blocking request", server.tail)
        queued = [socket.create_connection(("127.0.0.1", server.port), timeout=15) for _ in range(20)]
        for client in queued:
            client.sendall(request("/"))
        server.signal(signal.SIGTERM)
        pids = [read_pid(client) for client in queued]
        assert blocker.result(timeout=15)
    for client in queued:
        client.close()
    assert len(pids) == 20
    assert server.wait_exit() == 0


def test_round_robin_alternates(serve):
    server = start(serve, "round-robin")
    pids = [ask(server.port) for _ in range(12)]
    assert set(pids) == server.ready_workers()
    assert all(a != b for a, b in itertools.pairwise(pids)), pids


@pytest.mark.parametrize("mode", ["round-robin", "least-conn"])
def test_a_burst_of_32_connections_splits_evenly(serve, mode):
    server = start(serve, mode)
    shares = collections.Counter(burst(server.port, 32, "/slow?seconds=0.3"))
    assert sorted(shares.values()) in ([16, 16], [15, 17]), shares


def test_least_conn_spreads_cpu_bound_requests(serve):
    server = start(serve, "least-conn")
    deadline = time.monotonic() + 30

    def client(_: int) -> list[int]:
        pids = []
        while len(pids) < 12 and time.monotonic() < deadline:
            pids.append(ask(server.port, "/cpu?seconds=0.05"))
        return pids

    with ThreadPoolExecutor(4) as pool:
        shares = collections.Counter(pid for pids in pool.map(client, range(4)) for pid in pids)
    assert sum(shares.values()) == 48, shares
    assert len(shares) == 2 and max(shares.values()) / min(shares.values()) <= 1.3, shares


def test_ip_hash_keeps_each_client_address_on_one_worker(serve):
    server = start(serve, "ip-hash")
    owners = {}
    for last in range(2, 10):
        source = f"127.0.0.{last}"
        pids = {ask(server.port, source=source) for _ in range(5)}
        assert len(pids) == 1, f"{source} was served by {pids}"
        owners[source] = pids.pop()
    assert len(set(owners.values())) == 2, owners
    # Still sticky after a reload: worker ids keep their clients across the replacement.
    ids_before = {source: _worker_id_of(server, pid) for source, pid in owners.items()}
    original = set(server.workers())
    server.signal(signal.SIGHUP)
    wait_until(
        lambda: len(server.ready_workers() - original) == 2 and not set(server.workers()) & original,
        20, "the new generation", server.tail,
    )  # fmt: skip
    for source, worker_id in ids_before.items():
        assert {_worker_id_of(server, ask(server.port, source=source)) for _ in range(3)} == {worker_id}


def _worker_id_of(server, pid: int) -> int:
    title = server.workers()[pid]
    return int(title.split("worker ")[1].split()[0])


def test_reuseport_steers_away_from_a_hung_worker_and_its_queue_is_served(serve, tmp_path):
    flag = tmp_path / "slow-boot"
    server = start(
        serve, "reuseport", "--timeout", "2", "--startup-timeout", "10", app="slow_boot:app",
        env={"SLOW_BOOT_FLAG": str(flag)},
    )  # fmt: skip
    first, second = worker_pid(server, 1), worker_pid(server, 2)
    flag.touch()  # the replacement will boot for 3 s
    os.kill(second, signal.SIGSTOP)
    # Connections the kernel puts on worker 2's socket wait there, behind a stopped process.
    queued = [socket.create_connection(("127.0.0.1", server.port), timeout=20) for _ in range(16)]
    for client in queued:
        client.sendall(request("/"))
    server.wait_log(rf"\(pid {second}\) is hung", timeout=8)
    server.wait_log(r"reuseport: new connections go to worker 1$", timeout=3)
    # From now until the replacement has booted, every new connection goes to worker 1.
    detected = time.monotonic()
    during = [ask(server.port) for _ in range(20)]
    assert time.monotonic() - detected < 2.5, "the replacement may have booted: too slow to tell"
    assert set(during) == {first}, during
    # The connections queued on the hung worker's socket are served by its replacement.
    served = collections.Counter(read_pid(client) for client in queued)
    for client in queued:
        client.close()
    replacement = worker_pid(server, 2)
    assert replacement != second
    assert set(served) <= {first, replacement} and served[replacement] > 0, f"{served}\n{server.tail()}"


def test_balance_setting_is_validated(serve):
    server = serve("--balance", "random")
    assert server.wait_exit() == 2
    assert (
        "--balance 'random': expected one of kernel, reuseport, round-robin, least-conn, ip-hash"
        in server.log()
    )


def test_balance_setting_is_validated_in_the_library_too():
    import forkserve

    with pytest.raises(forkserve.ConfigError, match="expected one of kernel"):
        forkserve.run("hello:app", balance="random")


def test_handoff_takes_back_what_a_hung_worker_never_picked_up(serve):
    server = start(serve, "round-robin", "--timeout", "2")
    first, second = worker_pid(server, 1), worker_pid(server, 2)
    os.kill(second, signal.SIGSTOP)
    # Round-robin hands every other connection to the stopped worker: they wait in its channel.
    clients = [socket.create_connection(("127.0.0.1", server.port), timeout=20) for _ in range(10)]
    for client in clients:
        client.sendall(request("/"))
    server.wait_log(rf"\(pid {second}\) is hung", timeout=8)
    # Once it is detected it gets nothing new...
    assert {ask(server.port) for _ in range(6)} <= {first} | server.ready_workers() - {second}
    # ...and what it left in its channel is served by another worker: nothing is lost.
    served = collections.Counter(read_pid(client) for client in clients)
    for client in clients:
        client.close()
    assert second not in served and sum(served.values()) == 10, f"{served}\n{server.tail()}"


def test_reuseport_worker_retired_for_good_serves_its_own_queue(serve):
    server = start(serve, "reuseport")
    second = worker_pid(server, 2)
    # Stopped (not yet hung): connections hashed to its socket queue up there.
    os.kill(second, signal.SIGSTOP)
    clients = [socket.create_connection(("127.0.0.1", server.port), timeout=20) for _ in range(16)]
    for client in clients:
        client.sendall(request("/"))
    server.signal(signal.SIGTTOU)  # worker 2 goes, and no worker 2 replaces it
    server.wait_log(rf"retiring worker 2 \(pid {second}\)", timeout=5)
    os.kill(second, signal.SIGCONT)
    served = collections.Counter(read_pid(client) for client in clients)
    for client in clients:
        client.close()
    assert sum(served.values()) == 16 and served[second] > 0, f"{served}\n{server.tail()}"
    server.wait_log(r"reuseport: new connections go to worker 1$", timeout=3)
    wait_until(lambda: set(server.workers()) == {worker_pid(server, 1)}, 10, "worker 2 to leave", server.tail)
