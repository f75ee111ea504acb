"""The process model, end to end: real forked processes, real sockets, real signals."""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from tests.conftest import alive, wait_until


def test_titles_name_every_role(serve):
    server = serve("-w", "2", wait=2)
    titles = sorted(server.processes().values())
    assert psutil.Process(server.pid).cmdline()[0] == "forkserve: master [hello:app]"
    assert titles == [
        "forkserve: worker 1 [hello:app] gen 1",
        "forkserve: worker 2 [hello:app] gen 1",
        "forkserve: zygote [hello:app] gen 1",
    ]


def test_two_workers_answer_concurrent_requests(serve):
    server = serve("-w", "2", wait=2)
    # /cpu holds its worker's loop for 0.2 s, so concurrent requests must spread to the other worker.
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _: server.get("/cpu").text, range(8)))
    pids = {int(body.split()[0]) for body in bodies}
    assert pids == set(server.workers()), bodies


def test_killed_worker_is_replaced_within_a_second(serve):
    server = serve("-w", "2", wait=2)
    victim = min(server.workers())
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    replacement = server.wait_workers(2, timeout=5, exclude={victim}) - set()
    replaced_after = time.monotonic() - killed_at
    assert victim not in server.workers()
    assert replaced_after < 1.0, f"replacement took {replaced_after:.2f} s\n{server.tail()}"
    assert len(replacement) == 2 or len(server.workers()) == 2
    server.wait_log(
        rf"worker \d \(pid {victim}, generation 1\) was killed by SIGKILL \(perhaps out of memory"
    )
    assert server.get().status_code == 200


def test_term_finishes_in_flight_requests_then_exits_zero(serve):
    server = serve("-w", "2", wait=2)
    everyone = set(server.processes())
    with ThreadPoolExecutor(5) as pool:
        pending = [pool.submit(server.get, "/slow?seconds=2") for _ in range(5)]
        wait_until(lambda: server.accepted() == 5, 10, "five accepted connections", server.tail)
        server.signal(signal.SIGTERM)
        responses = [future.result(timeout=10) for future in pending]
    assert [r.status_code for r in responses] == [200] * 5
    assert server.wait_exit(10) == 0, server.tail()
    assert not [pid for pid in everyone if alive(pid)]
    assert "graceful shutdown" in server.log()


def test_new_connections_are_refused_after_stop(serve):
    server = serve("-w", "1", wait=1)
    server.signal(signal.SIGTERM)
    assert server.wait_exit(10) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=2)


def test_quit_stops_at_once_without_waiting_for_requests(serve):
    server = serve("-w", "1", "--graceful-timeout", "30", wait=1)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(lambda: server.get("/slow?seconds=20"))
        wait_until(lambda: server.accepted() == 1, 5, "the request to be accepted", server.tail)
        started = time.monotonic()
        server.signal(signal.SIGQUIT)
        assert server.wait_exit(5) == 0
        assert time.monotonic() - started < 3
        # Immediate means the in-flight request is cut off, not finished.
        with pytest.raises(httpx.HTTPError):
            pending.result(timeout=5)


def test_second_int_is_immediate(serve):
    server = serve("-w", "1", "--graceful-timeout", "30", wait=1)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: server.get("/slow?seconds=20", timeout=30))
        wait_until(lambda: server.accepted() == 1, 5, "the request to be accepted", server.tail)
        server.signal(signal.SIGINT)
        server.wait_log("graceful shutdown")
        started = time.monotonic()
        server.signal(signal.SIGINT)
        assert server.wait_exit(5) == 0
        assert time.monotonic() - started < 3


def test_master_sigkill_leaves_no_orphans(serve):
    server = serve("-w", "2", wait=2)
    family = set(server.processes())
    assert len(family) == 3
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(5)
    wait_until(lambda: not [pid for pid in family if alive(pid)], 2.0, "zygote and workers to exit")
    # The port is free again: a new server can bind it.
    again = serve("-w", "1", port=server.port, wait=1)
    assert again.get().status_code == 200


def test_hung_worker_is_detected_dumped_and_replaced(serve):
    server = serve("-w", "1", "--timeout", "2", wait=1)
    [victim] = server.workers()
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(server.url + "/block", timeout=0.5)
    server.wait_log(rf"worker 1 \(pid {victim}\) is hung", timeout=6)
    log = server.wait_log(r"in block_the_loop_forever", timeout=3)
    assert log
    server.wait_workers(1, exclude={victim}, timeout=5)
    assert server.get().status_code == 200
    assert victim not in server.workers()
    # Killed by forkserve itself: no misleading out-of-memory hint.
    server.wait_log(
        rf"\(pid {victim}, generation 1\) was killed by SIGKILL \(sent by forkserve\) after being killed as"
    )


def test_ttin_and_ttou_change_the_worker_count(serve):
    server = serve("-w", "1", wait=1)
    server.signal(signal.SIGTTIN)
    server.wait_workers(2)
    server.signal(signal.SIGTTOU)
    wait_until(lambda: len(server.workers()) == 1, 10, "one worker again", server.tail)
    assert "worker 2" in " ".join(server.workers().values()) or "worker 1" in " ".join(
        server.workers().values()
    )
    server.wait_log(r"retiring worker 2 .*scaled down")


def test_hup_replaces_every_worker_with_a_new_generation(serve):
    server = serve("-w", "2", wait=2)
    old = set(server.workers())
    server.signal(signal.SIGHUP)
    wait_until(
        lambda: len(server.workers()) == 2 and not set(server.workers()) & old,
        15,
        "two workers of generation 2",
        server.tail,
    )
    expected = [
        "forkserve: worker 1 [hello:app] gen 2",
        "forkserve: worker 2 [hello:app] gen 2",
        "forkserve: zygote [hello:app] gen 2",
    ]
    # The old zygote leaves once its last worker has gone.
    wait_until(lambda: sorted(server.processes().values()) == expected, 10, "only generation 2", server.tail)
    assert server.get().text.split()[2] == "2"


def test_master_does_not_leak_fds_across_respawns(serve, tmp_path):
    # Five workers killed four times over: 20 respawns, while each worker number's crash back-off
    # (0, 0.5, 1, 2 s) stays short. The control socket is out of the shared default directory: its
    # service loop (an epoll fd and a socket pair) starts with its first client, and a master
    # starting elsewhere on the machine probes every socket there for staleness.
    server = serve("-w", "5", "--control-socket", str(tmp_path / "ctl.sock"), wait=5)
    fd_dir = f"/proc/{server.pid}/fd"

    def open_files() -> list[str]:
        # What each fd refers to, not its number: a pidfd freed and another opened may swap numbers.
        return sorted(os.readlink(f"{fd_dir}/{fd}") for fd in os.listdir(fd_dir))

    before = open_files()
    for _ in range(4):
        victims = set(server.workers())
        for victim in victims:
            os.kill(victim, signal.SIGKILL)
        server.wait_workers(5, exclude=victims, timeout=15)
    after = open_files()
    assert server.log().count("was killed by SIGKILL") == 20
    assert after == before


def test_stopped_server_exit_code_and_final_line(serve):
    server = serve("-w", "1", wait=1)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert re.search(r"\[master\] \[INFO\] forkserve stopped$", server.log().strip())
