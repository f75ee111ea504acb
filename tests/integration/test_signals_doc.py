"""docs/signals.md, promise by promise, for the promises no other test checked."""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import httpx

from tests.conftest import APPS, alive, free_port, wait_until


def zygote_of(server) -> int | None:
    zygotes = [pid for pid, title in server.processes().items() if "forkserve: zygote" in title]
    return zygotes[0] if len(zygotes) == 1 else None


def test_master_ignores_chld_and_winch(serve):
    server = serve("-w", "1", wait=1)
    workers = set(server.workers())
    for number in (signal.SIGCHLD, signal.SIGWINCH):
        server.signal(number)
    # TTIN after them: once it has acted, the master has handled the signals before it.
    server.signal(signal.SIGTTIN)
    server.wait_workers(2)
    assert workers <= set(server.workers()) and server.proc.poll() is None


def test_worker_ignores_hup_ttin_ttou_winch_and_reopens_on_usr1(serve, tmp_path):
    log = tmp_path / "w.log"
    server = serve("-w", "1", "--log-file", str(log))
    wait_until(lambda: log.exists() and "Application startup complete" in log.read_text(), 15, "a worker")
    [worker] = server.workers()
    for number in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH):
        os.kill(worker, number)
    log.rename(tmp_path / "w.log.1")
    os.kill(worker, signal.SIGUSR1)  # signals are delivered in order: USR1 last
    wait_until(log.exists, 10, "the worker to reopen its log file")
    assert alive(worker) and list(server.workers()) == [worker]
    assert httpx.get(server.url, timeout=5).text.startswith(f"{worker} ")


def test_zygote_ignores_group_signals(serve):
    server = serve("-w", "1", wait=1)
    zygote = zygote_of(server)
    for number in (
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGTTIN,
        signal.SIGTTOU,
        signal.SIGWINCH,
        signal.SIGTERM,
    ):
        os.kill(zygote, number)
    # The zygote still forks on request: a TTIN to the master gets a new worker from it.
    server.signal(signal.SIGTTIN)
    server.wait_workers(2)
    assert zygote_of(server) == zygote
    assert "starting another" not in server.log()


def test_a_killed_zygote_is_replaced_and_the_workers_keep_serving(serve):
    server = serve("-w", "1", wait=1)
    zygote = zygote_of(server)
    [worker] = server.workers()
    os.kill(zygote, signal.SIGKILL)
    server.wait_log(rf"zygote of generation 1 \(pid {zygote}\) was killed by SIGKILL .*; starting another")
    wait_until(lambda: zygote_of(server) not in (None, zygote), 15, "a new zygote")
    assert list(server.workers()) == [worker] and httpx.get(server.url, timeout=5).status_code == 200


def test_worker_past_its_deadline_is_killed_and_named(serve):
    # A loop blocked for good cannot finish; --timeout 0 leaves it to the stop's deadline.
    server = serve("-w", "1", "--graceful-timeout", "1", "--timeout", "0", wait=1)
    [worker] = server.workers()
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(server.url + "/block", timeout=0.5)
    server.signal(signal.SIGTERM)
    server.wait_log(
        rf"worker 1 \(pid {worker}\) did not finish within --graceful-timeout; killing it", timeout=10
    )
    assert server.wait_exit() == 0
    assert not alive(worker)


def test_ttou_below_one_worker_is_refused_with_the_range(serve):
    server = serve("-w", "1", wait=1)
    server.signal(signal.SIGTTOU)
    server.wait_log(r"keeping 1 workers: the number must be from 1 to 32")
    assert len(server.workers()) == 1


def test_orphaned_workers_say_why_they_leave(serve, tmp_path):
    log = tmp_path / "o.log"
    server = serve("-w", "2", "--log-file", str(log))
    wait_until(lambda: log.exists() and log.read_text().count("Application startup complete") == 2, 15, "2")
    family = set(server.processes())
    os.kill(server.pid, signal.SIGKILL)
    wait_until(lambda: not [pid for pid in family if alive(pid)], 5, "every process to end")
    assert log.read_text().count("the master process is gone; finishing in-flight requests and exiting") == 2


def test_usr2_is_refused_by_a_server_started_from_python(serve):
    port = free_port()
    server = serve(command=[sys.executable, str(APPS / "embedded.py"), str(port)], port=port)
    wait_until(lambda: "Application startup complete" in server.log(), 15, "the embedded server")
    server.signal(signal.SIGUSR2)
    server.wait_log("USR2 ignored: a server started from Python cannot re-exec itself; use HUP")
    assert httpx.get(server.url, timeout=5).text == "embedded"
