"""Fault injection, quick form: each scenario of docs/reliability.md, small and bounded, on every CI."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil

from tests.conftest import wait_until
from tests.integration.load import background_load


def established(pid: int, port: int) -> int:
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


def test_sigkill_under_load_fails_only_the_victims_connections(serve):
    server = serve("-w", "2", wait=2)
    with background_load(server.url, keep_alive=8, fresh=2) as load:
        wait_until(lambda: load.ok > 200, 10, "load to run")
        victim = min(server.workers())
        held = established(victim, server.port)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        server.wait_workers(2, exclude={victim}, timeout=5)
        # A bound, not a benchmark (docs/reliability.md has the figure): replaced at once, not after
        # a crash-loop back-off; generous because the load shares two cores with the new worker.
        assert time.monotonic() - killed < 3.0
        mark = load.ok
        wait_until(lambda: load.ok > mark + 200, 10, "load after the replacement")
    # Only requests on the victim's own connections may fail: one per connection at most.
    assert load.failed <= held + 2, f"{load}, victim held {held}"


def test_sigstopped_worker_is_detected_and_replaced(serve):
    server = serve("-w", "2", "--timeout", "2", wait=2)
    victim = min(server.workers())
    os.kill(victim, signal.SIGSTOP)
    stopped = time.monotonic()
    server.wait_log(rf"\(pid {victim}\) is hung: .* it is stopped \(SIGSTOP\?\)", timeout=6)
    server.wait_workers(2, exclude={victim}, timeout=6)
    assert time.monotonic() - stopped < 5
    wait_until(
        lambda: not psutil.pid_exists(victim) or psutil.Process(victim).status() == "zombie", 5, "gone"
    )


def test_crash_loop_backs_off_and_stays_responsive(serve):
    server = serve("-w", "2", app="crash_after_boot:app")
    started = time.monotonic()
    server.wait_log(
        r"worker \d has died young 3 times in a row \(crash loop\?\); restarting it in 2\.0 s", timeout=15
    )
    # Both workers back off in step; one still starts every second, so something keeps serving.
    server.wait_log(r"no worker is serving: starting worker 1 now despite its back-off", timeout=10)
    elapsed = time.monotonic() - started
    boots = len(re.findall(r"Booting worker", server.log()))
    # Deaths 1 s after each boot, back-off 0.5, 1, 2 s, and at most one rescue a second: no storm.
    assert boots <= 2 * elapsed + 2, f"{boots} boots in {elapsed:.1f} s\n{server.tail()}"
    server.signal(signal.SIGTERM)
    assert server.wait_exit(5) == 0


def test_slowloris_connections_time_out_and_others_are_served(serve):
    server = serve("-w", "2", "--header-timeout", "2", wait=2)
    slow = []
    for _ in range(60):
        client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        slow.append(client)
    latencies = []
    for _ in range(30):
        begin = time.monotonic()
        assert server.get().status_code == 200
        latencies.append(time.monotonic() - begin)
    for client in slow[:30]:
        client.sendall(b"X-Slow: 1\r\n")  # still trickling: the deadline counts from the first byte
    time.sleep(0.1)
    assert sorted(latencies)[-1] < 1.0
    deadline = time.monotonic() + 6
    closed = 0
    for client in slow:
        client.settimeout(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            closed += client.recv(1) == b""
        client.close()
    assert closed == len(slow)


def test_oversized_headers_get_431(serve):
    server = serve("-w", "1", "--max-header-size", "8192", wait=1)
    response = httpx.get(server.url, headers={"x-big": "a" * 20000})
    assert response.status_code == 431
    assert server.get().status_code == 200


MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nnope\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: \x00\x01\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 5000 + b"\r\n",
    b"\r\n\r\n\r\n",
]


def probe(port: int, payload: bytes) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        try:
            client.sendall(payload)
            data = client.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
    if not data:
        return "closed"
    match = re.match(rb"HTTP/1\.1 (\d)\d\d", data)
    return f"{match.group(1).decode()}xx" if match else "garbage"


def test_malformed_requests_get_4xx_or_a_close_and_no_worker_dies(serve):
    # A corrupted byte can leave a head that never completes: --header-timeout closes those.
    server = serve("-w", "2", "--header-timeout", "1", wait=2)
    before = set(server.workers())
    rss_before = sum(psutil.Process(pid).memory_info().rss for pid in before)
    rng = random.Random(7)
    payloads = []
    for _ in range(200):
        payload = rng.choice(MALFORMED)
        if rng.random() < 0.3:  # corrupt a random byte
            corrupted = bytearray(payload)
            corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
            payload = bytes(corrupted)
        payloads.append(payload)
    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(lambda payload: probe(server.port, payload), payloads))
    # Pipelining abuse: 1000 requests written at once on one connection.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 1000)
        received = b""
        while received.count(b"HTTP/1.1 200") < 1000:
            chunk = client.recv(65536)
            if not chunk:
                break
            received += chunk
    assert received.count(b"HTTP/1.1 200") == 1000
    assert set(server.workers()) == before
    assert not {o for o in outcomes if o in ("5xx", "garbage")}, outcomes
    # A valid request followed by garbage is answered 400 and the connection half-closed; the app's
    # late answer to the valid one must be dropped quietly, not logged as a crash per request.
    for _ in range(20):
        probe(server.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\x01\x02garbage")
    time.sleep(0.5)  # let any late write happen before the log is read
    assert "Exception in ASGI application" not in server.log(), server.tail()
    rss_after = sum(psutil.Process(pid).memory_info().rss for pid in before)
    assert rss_after < rss_before + 30 * 1024 * 1024
    assert server.get().status_code == 200


def test_connection_flood_past_the_backlog_recovers(serve):
    server = serve("-w", "2", "--backlog", "8", wait=2)
    workers = set(server.workers())
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:

        def attempt(_: int) -> str:
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
                    return "connected"
            except TimeoutError:
                return "timeout"
            except ConnectionRefusedError:
                return "refused"

        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(attempt, range(100)))
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    assert results.count("connected") >= 8
    wait_until(lambda: _answers(server.url), 5, "the server to answer again", server.tail)
    assert set(server.workers()) == workers


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_unwritable_log_file_never_takes_a_worker_down(serve):
    server = serve("-w", "1", "--log-file", "/dev/full", "--access-log")
    wait_until(lambda: _answers(server.url), 15, "the server to answer", server.tail)
    before = set(server.workers())
    for _ in range(200):
        assert server.get().status_code == 200
    assert set(server.workers()) == before
    stderr = server.log()
    assert "forkserve: cannot write the log file /dev/full: [Errno 28] No space left on device" in stderr
    assert "--- Logging error ---" not in stderr
