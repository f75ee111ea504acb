"""The master at the end of a resource: fds, processes, a startup that never ends, injected faults.

Each test runs a real server, takes something away (an fd limit lowered under the running master,
a process limit for an unprivileged uid, an OS call made to fail by ``forkserve.common.faults``),
and checks what an operator would: requests keep succeeding, the log says once what happened and
which limit to raise, a start that cannot work exits with a clear line instead of looping.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from tests.conftest import APPS, Server

REPO = Path(__file__).resolve().parents[2]
# Uids no process on the machine runs as: RLIMIT_NPROC counts every process of the real uid.
UIDS = iter(range(61000 + os.getpid() % 1000 * 4, 65000))


def serves(server: Server, count: int = 5) -> None:
    """COUNT requests in a row, each must succeed."""
    for _ in range(count):
        response = server.get("/", timeout=5)
        assert response.status_code == 200, server.tail()


def serving_through(server: Server, until: Callable[[], Any], timeout: float, what: str) -> Any:
    """Keep requesting while waiting for UNTIL: every request must succeed."""
    deadline = time.monotonic() + timeout
    while True:
        serves(server, 1)
        value = until()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{server.tail()}")
        time.sleep(0.05)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_hup_at_the_fd_limit_keeps_serving_then_reloads_once_raised(serve):
    assert os.geteuid() == 0, (
        "lowering another process's fd limit needs root: run the suite as root, as CI does"
    )
    server = serve("-w", "2", wait=2)
    soft, hard = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (open_fds(server.pid), hard))
    server.signal(signal.SIGHUP)
    serving_through(server, lambda: "reload aborted: could not start the zygote" in server.log(), 10, "abort")
    assert len(re.findall(r"\[Errno 24\]", server.log())) == 1, server.tail()
    assert "RLIMIT_NOFILE" in server.log()
    serves(server, 20)
    resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (soft, hard))
    old = set(server.workers())
    server.signal(signal.SIGHUP)
    serving_through(server, lambda: "generation 3 loaded" in server.log(), 15, "the second HUP's reload")
    server.wait_workers(2, exclude=old)
    assert server.proc.poll() is None


def test_each_master_os_call_failing_once_is_survived(serve):
    # Each point's first call after the start fails (the start's own call counts as the first).
    faults = "channel_pair@2,zygote_start@2,zygote_pidfd@2,worker_pidfd@3"
    server = serve("-w", "2", env={"FORKSERVE_FAULTS": faults}, wait=2)
    for attempt in range(3):  # channel_pair, then zygote_start, then zygote_pidfd fail a HUP each
        server.signal(signal.SIGHUP)
        serving_through(
            server, lambda n=attempt + 1: server.log().count("reload aborted: could not start") == n, 10,
            f"reload {attempt + 2} to abort",
        )  # fmt: skip
    assert "(injected at channel_pair)" in server.log()
    assert "(injected at zygote_start)" in server.log()
    assert "(injected at zygote_pidfd)" in server.log()
    # The fourth HUP starts a zygote; its first worker cannot get a pidfd: it is polled instead.
    old = set(server.workers())
    server.signal(signal.SIGHUP)
    serving_through(server, lambda: "watching worker" in server.log(), 15, "a worker watched by polling")
    new = server.wait_workers(2, exclude=old)
    # A polled worker's exit is still seen: kill each, both are replaced.
    for pid in new:
        os.kill(pid, signal.SIGKILL)
    server.wait_workers(2, exclude=old | new)
    assert server.proc.poll() is None


def test_a_dead_zygote_that_cannot_be_replaced_at_once_is_retried_while_its_workers_serve(serve):
    server = serve("-w", "2", env={"FORKSERVE_FAULTS": "zygote_start@2:EAGAIN"}, wait=2)
    workers = set(server.workers())
    (zygote,) = [pid for pid, title in server.processes().items() if "zygote" in title]
    os.kill(zygote, signal.SIGKILL)
    serving_through(server, lambda: "started the zygote of generation 1 again" in server.log(), 10, "retry")
    assert server.log().count("could not start the zygote of generation 1") == 1, server.tail()
    assert set(server.workers()) == workers  # they served throughout, untouched
    # The new zygote forks for generation 1: a killed worker is replaced.
    os.kill(min(workers), signal.SIGKILL)
    server.wait_workers(2, exclude={min(workers)})


def test_a_worker_fork_failing_in_the_zygote_is_retried(serve):
    server = serve("-w", "1", env={"FORKSERVE_FAULTS": "worker_fork@2:EAGAIN"}, wait=1)
    zygote = [pid for pid, title in server.processes().items() if "zygote" in title]
    server.signal(signal.SIGTTIN)
    server.wait_workers(2)
    assert "could not fork worker 2: [Errno 11]" in server.log()
    assert "RLIMIT_NPROC" in server.log()
    # The zygote reported the failure and lived on: no replacement zygote, no re-import.
    assert [pid for pid, title in server.processes().items() if "zygote" in title] == zygote


def test_a_startup_that_never_ends_exits_3_with_the_apps_stack(serve):
    server = serve("-w", "2", "--startup-timeout", "2", app="startup_never_ends:app")
    started = time.monotonic()
    assert server.wait_exit(20) == 3
    assert time.monotonic() - started < 15
    log = server.log()
    assert re.search(
        r"has not finished its startup [\d.]+ s after it was started \(--startup-timeout 2\)", log
    )
    # The app's own await, from the asyncio task's stack: the place to look.
    assert "in wait_for_the_database" in log, server.tail(80)
    assert re.search(r"error: worker \d did not finish its startup within --startup-timeout 2 s", log)


def test_startup_timeout_follows_timeout_and_0_disables_it(serve):
    server = serve("-w", "1", "--timeout", "2", app="startup_never_ends:app")
    assert server.wait_exit(20) == 3
    assert "(--startup-timeout 2)" in server.log()
    server = serve("-w", "1", "--timeout", "2", "--startup-timeout", "0", app="startup_never_ends:app")
    server.wait_log("Waiting for application startup")
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        assert server.proc.poll() is None and "has not finished its startup" not in server.log()
        time.sleep(0.2)


# ---------------------------------------------------------------------------- RLIMIT_NPROC


def as_unprivileged(serve: Callable[..., Server], nproc: int, *args: str) -> Server:
    """The server as an unused uid with RLIMIT_NPROC = NPROC, run by a system interpreter (that uid
    cannot read every Python installation) importing this checkout and the test environment's packages."""
    assert os.geteuid() == 0, "a process limit needs an unprivileged uid: run the suite as root, as CI does"
    python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    assert os.access(python, os.X_OK), f"{python} is needed to run forkserve as an unprivileged uid"
    uid = next(UIDS)
    assert not any(p.uids().real == uid for p in psutil.process_iter()), f"uid {uid} is in use"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    # In /, as the test's own directory is root's alone.
    command = [
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "env", "-C", "/",
        python, "-m", "forkserve", "hello:app", "--app-dir", str(APPS), *args,
    ]  # fmt: skip
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]])}
    return serve(command=command, env=env, preexec_fn=limit)


def nproc_server(serve: Callable[..., Server], nproc: int, *args: str) -> Server:
    from tests.conftest import free_port

    port = free_port()
    server = as_unprivileged(serve, nproc, "-b", f"127.0.0.1:{port}", *args)
    server.port = port
    return server


def test_nproc_at_start_exits_with_one_line_naming_the_limit(serve):
    # The master and its control-socket thread, then the zygote: its first fork is one too many.
    server = nproc_server(serve, 3, "-w", "2")
    code = server.wait_exit(20)
    log = server.log()
    assert code == 1, server.tail()
    assert re.search(
        r"forkserve: error: could not fork worker \d: \[Errno 11\] .*RLIMIT_NPROC.* \(tried 3 times\)$",
        log,
        re.M,
    ), server.tail()
    assert len(log.splitlines()) < 20, server.tail()


def test_nproc_on_ttin_and_hup_keeps_the_old_generation_serving(serve):
    # Master (2 tasks) + zygote + worker, and one more: the double fork of a worker takes two.
    server = nproc_server(serve, 5, "-w", "1")
    server.wait_workers(1)
    before = set(server.workers())
    server.signal(signal.SIGTTIN)
    serving_through(server, lambda: "keeping the 1 workers that serve" in server.log(), 15, "TTIN's verdict")
    assert server.log().count("could not fork worker 2") == 2  # the first try, and the verdict
    server.signal(signal.SIGHUP)
    serving_through(
        server, lambda: "reload aborted: generation 2 could not fork" in server.log(), 15, "abort"
    )
    serves(server, 20)
    assert set(server.workers()) == before
    assert len(server.log().splitlines()) < 40, server.tail()
    assert server.proc.poll() is None
