"""--user/--group/--umask, for real: the suite runs as root (as CI does), binds a port below 1024, and
checks the uid of every process with psutil."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import APPS, wait_until

NOBODY = pwd.getpwnam("nobody")


def privileged_port() -> int:
    for port in range(600, 1024):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below 1024 on 127.0.0.1")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory nobody can read (tmp_path's parents are root-only), holding the test app."""
    directory = Path(tempfile.mkdtemp(prefix="forkserve-priv-", dir="/tmp"))
    directory.chmod(0o755)
    shutil.copy(APPS / "hello.py", directory / "hello.py")
    (directory / "hello.py").chmod(0o644)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_root_binds_port_80_range_then_workers_run_as_nobody(serve, shared_dir):
    assert os.geteuid() == 0, "this test checks a real privilege drop: run the suite as root, as CI does"
    port = privileged_port()
    logs = shared_dir / "logs"
    logs.mkdir(mode=0o755)
    log_file = logs / "forkserve.log"
    server = serve(
        "hello:app", "--app-dir", str(shared_dir), "-w", "2", "--user", "nobody",
        "--log-file", str(log_file), app=None, port=port,
    )  # fmt: skip
    server.log_path = log_file
    wait_until(lambda: log_file.exists(), 10.0, "the log file")
    workers = server.wait_workers(2)

    response = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
    assert response.status_code == 200
    assert int(response.text.split()[0]) in workers

    for pid, title in server.processes().items():
        process = psutil.Process(pid)
        assert tuple(process.uids()) == (NOBODY.pw_uid,) * 3, f"{title}: {process.uids()}"
        assert tuple(process.gids()) == (NOBODY.pw_gid,) * 3, f"{title}: {process.gids()}"
        # root's supplementary groups must not come along
        groups = next(
            line
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("Groups:")
        )
        assert set(groups.split()[1:]) <= {str(NOBODY.pw_gid)}, f"{title}: {groups}"
    assert any("zygote" in title for title in server.processes().values())
    assert psutil.Process(server.pid).uids().effective == 0, "the master stays root"
    # The workers reopen the log file on USR1 after a rotation: it must be theirs.
    assert log_file.stat().st_uid == NOBODY.pw_uid

    log_file.rename(logs / "forkserve.log.1")
    server.signal(signal.SIGUSR1)
    wait_until(lambda: log_file.exists(), 10.0, "the reopened log file")
    server.signal(signal.SIGTTIN)  # a new worker logs its boot into the new file, as nobody
    server.wait_log(r"\[worker 3 gen 1\] \[INFO\] Application startup complete", timeout=20)
    assert log_file.stat().st_uid == NOBODY.pw_uid
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_unknown_user_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "forkserve", "hello:app", "--app-dir", str(APPS), "--user", "no-such-user-x"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "forkserve: error: --user 'no-such-user-x': no such user 'no-such-user-x'; create it "
        "(useradd --system no-such-user-x) or name another"
    ]
    result = subprocess.run(
        [sys.executable, "-m", "forkserve", "hello:app", "--group", "no-such-group-x"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no such group 'no-such-group-x'" in result.stderr


def test_switching_user_without_root_is_refused():
    # Checked in a forked child that became nobody (this machine's Python may not be executable by
    # nobody, so no fresh interpreter): the master's own check, on a real unprivileged process.
    from forkserve.common.privileges import check_can_switch, resolve_identity
    from forkserve.errors import ConfigError

    daemon = resolve_identity("daemon", None)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            check_can_switch(resolve_identity("nobody", None))  # already nobody: fine
            try:
                check_can_switch(daemon)
            except ConfigError as error:
                os.write(write_end, str(error).encode())
                code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        message = reader.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "needs root" in message and "daemon" in message


def test_umask_sets_the_mode_of_socket_and_pid_files(serve, tmp_path):
    sock = tmp_path / "app.sock"
    pidfile = tmp_path / "forkserve.pid"
    server = serve("-b", f"unix:{sock}", "--pid", str(pidfile), "--umask", "027", bind=False, wait=1)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o750
    assert stat.S_IMODE(pidfile.stat().st_mode) == 0o640
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock))) as client:
        assert client.get("http://forkserve/").status_code == 200
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
