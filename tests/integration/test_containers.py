"""forkserve as a container's PID 1, for real: a new PID namespace (``unshare --pid``, as root).

PID 1 is special twice over. The kernel gives it no default signal actions, so a TERM it has no
handler for is silently dropped (a container would then wait out its whole stop timeout and be
killed), and every orphan in the namespace is re-parented to it, so whatever it does not wait for
stays a zombie. No tini or dumb-init is needed in front of forkserve if both hold.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading

import httpx
import psutil

from tests.conftest import APPS, free_port, wait_until


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _zombies(pid: int) -> list[int]:
    found = []
    for process in _descendants(pid):
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                found.append(process.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def test_pid_1_stops_gracefully_on_term_and_reaps_orphans(serve):
    assert os.geteuid() == 0 and shutil.which("unshare"), "needs root and util-linux's unshare (as CI has)"
    port = free_port()
    command = [
        "unshare", "--pid", "--fork", "--mount-proc",
        sys.executable, "-m", "forkserve", "orphans:app", "--app-dir", str(APPS),
        "-b", f"127.0.0.1:{port}", "-w", "2", "--graceful-timeout", "10",
    ]  # fmt: skip
    server = serve(command=command, port=port)
    server.wait_log(r"master pid 1\)")
    server.wait_log(r"Application startup complete", count=2, timeout=20)
    master = wait_until(lambda: psutil.Process(server.pid).children(), 5.0, "the namespace's init")[0]

    for _ in range(6):
        assert server.get("/orphan").status_code == 200
    # The orphans exit 0.2 s after their parents: then nothing but master, zygote and two workers.
    wait_until(
        lambda: not _zombies(master.pid) and len(_descendants(master.pid)) == 3,
        10.0,
        "the orphans to be reaped",
        lambda: str([(p.pid, p.status()) for p in _descendants(master.pid)]) + server.tail(),
    )

    # Slow requests in flight when TERM arrives must still complete: a graceful stop, not a kill.
    with httpx.Client(timeout=15) as client:
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda: results.append(client.get(f"{server.url}/slow").status_code))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        wait_until(lambda: server.accepted() >= 2, 10.0, "requests in flight", server.tail)
        master.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(15)
    assert results == [200, 200]
    assert server.wait_exit(20) == 0, server.tail()
    log = server.log()
    assert "received SIGTERM" in log
    assert log.count("Application shutdown complete") == 2, server.tail()
