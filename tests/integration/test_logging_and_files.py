"""One log stream, log file reopening, the pid file, the access log switch."""

from __future__ import annotations

import os
import re
import signal

from tests.conftest import APPS, wait_until


def test_every_process_logs_one_tagged_stream(serve):
    server = serve("-w", "2", wait=2)
    roles = set(re.findall(r"^\S+ \S+ \S+ \[\d+\] \[([a-z0-9 ]+)\] \[[A-Z]+\] ", server.log(), re.M))
    assert {"master", "worker 1 gen 1", "worker 2 gen 1"} <= roles, server.tail()


def test_log_file_is_reopened_on_usr1(serve, tmp_path):
    log_file = tmp_path / "forkserve.log"
    server = serve("-w", "1", "--log-file", str(log_file), "--access-log")
    wait_until(
        lambda: log_file.exists() and "Application startup complete" in log_file.read_text(), 15, "boot"
    )
    rotated = tmp_path / "forkserve.log.1"
    os.rename(log_file, rotated)
    server.signal(signal.SIGUSR1)
    wait_until(log_file.exists, 5, "a new log file")
    # Keep asking until the worker has reopened too: its access line lands in the new file.
    wait_until(
        lambda: (
            server.get("/after-rotation").status_code == 200 and "/after-rotation" in log_file.read_text()
        ),
        5,
        "the access line in the new file",
    )
    assert "received SIGUSR1" in rotated.read_text()
    assert "/after-rotation" not in rotated.read_text()


def test_access_log_is_off_by_default_and_on_when_asked(serve):
    quiet = serve("-w", "1", wait=1)
    quiet.get("/quiet")
    loud = serve("-w", "1", "--access-log", wait=1)
    loud.get("/loud")
    loud.wait_log(r'"GET /loud HTTP/1.1" 200')
    assert "/quiet" not in quiet.log()


def test_pid_file_holds_the_master_pid_and_is_removed(serve, tmp_path):
    pid_file = tmp_path / "forkserve.pid"
    server = serve("-w", "1", "--pid", str(pid_file), wait=1)
    assert pid_file.read_text().strip() == str(server.pid)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not pid_file.exists()


def test_workers_forked_after_a_rotation_write_to_the_new_file(serve, tmp_path):
    log_file = tmp_path / "forkserve.log"
    server = serve("-w", "1", "--log-file", str(log_file))
    wait_until(
        lambda: log_file.exists() and "Application startup complete" in log_file.read_text(), 15, "boot"
    )
    os.rename(log_file, tmp_path / "forkserve.log.1")
    server.signal(signal.SIGUSR1)
    wait_until(log_file.exists, 5, "a new log file")
    [victim] = server.workers()
    os.kill(victim, signal.SIGKILL)
    # The replacement is forked from the zygote, which reopened the file too.
    wait_until(
        lambda: "[worker 1 gen 1] [INFO] Application startup complete" in log_file.read_text(),
        10,
        "new worker",
    )


def test_relative_chdir_is_applied_once(serve, tmp_path):
    app_home = tmp_path / "srv"
    app_home.mkdir()
    (app_home / "here.py").write_text((APPS / "hello.py").read_text())
    server = serve("--chdir", "srv", "--app-dir", ".", "-w", "1", app="here:app", wait=1)
    assert server.get().status_code == 200


def test_missing_chdir_exits_2_with_one_line(serve):
    server = serve("--chdir", "no/such/dir", "-w", "1")
    assert server.wait_exit() == 2
    assert server.log().strip().splitlines()[-1] == (
        "forkserve: error: --chdir 'no/such/dir': No such file or directory; pass an existing directory"
    )
