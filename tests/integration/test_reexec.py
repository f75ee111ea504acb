"""The command line's master re-executes itself without the parser: same process, same outcomes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import APPS, free_port
from tests.integration.test_bad_input import error_lines

SPEC_VARIABLE = "FORKSERVE_MASTER_SPEC"


def test_the_master_keeps_the_pid_it_was_started_with_and_hands_nobody_its_settings(serve, tmp_path):
    pidfile = tmp_path / "forkserve.pid"
    server = serve("-w", "2", "--pid", str(pidfile), "--keyfile-password", "s3cret", wait=2)
    assert server.get("/").status_code == 200
    # What a shell, systemd or a container runtime started is the master: its pid, its title.
    assert pidfile.read_text().strip() == str(server.pid)
    assert psutil.Process(server.pid).cmdline()[0].startswith("forkserve: master [hello:app]")
    children = server.processes()
    assert len(children) == 3, children  # the zygote and two workers, all the master's children
    assert {psutil.Process(pid).ppid() for pid in children} == {server.pid}
    # The settings (a password among them) crossed the exec in the master's environment, which it
    # emptied before starting anyone.
    for pid in children:
        assert SPEC_VARIABLE not in psutil.Process(pid).environ(), children[pid]
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not pidfile.exists()


# Replaces os.execve with one that fails as a too large environment would, then runs the command line.
FAILING_EXEC = """
import errno, os, sys
def execve(path, argv, environ):
    raise OSError(errno.E2BIG, os.strerror(errno.E2BIG))
os.execve = execve
from forkserve.cli.main import main
main()
"""


def test_an_exec_that_fails_leaves_the_master_in_the_first_process_after_one_warning(serve):
    port = free_port()
    command = [sys.executable, "-c", FAILING_EXEC, "hello:app", "--app-dir", str(APPS)]
    server = serve(command=[*command, "-b", f"127.0.0.1:{port}", "-w", "1"], port=port, wait=1)
    assert server.get("/").status_code == 200
    [warning] = server.wait_log(r"\[WARNING\] could not start the master without the command line's parser.*")
    assert "Argument list too long" in warning and "running it in this process" in warning
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert server.log().count("could not start the master") == 1


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        # Found by the parser, before the exec.
        (["--timeout", "soon"], 2, "--timeout 'soon': expected a number of seconds"),
        # Found by the master, after it: the same one line and exit code as before there was an exec.
        (["--chdir", "/no/such/dir"], 2, "--chdir '/no/such/dir': No such file or directory"),
        (["--certfile", "/no/such/cert.pem"], 2, "--certfile"),
        # A log file that cannot be opened: the fix, not logging's traceback.
        (["--error-logfile", "/no/such/dir/error.log"], 2, "--error-logfile /no/such/dir/error.log: cannot"),
        (["--access-logfile", "/no/such/dir/access.log"], 2, "--access-logfile /no/such/dir/access.log"),
    ],
)
def test_errors_on_either_side_of_the_exec_are_one_line_and_their_exit_code(serve, args, code, message):
    server = serve(*args)
    assert server.wait_exit() == code
    [line] = error_lines(server.log())
    assert message in line, server.log()
    assert "Traceback" not in server.log()


def test_the_master_module_run_by_hand_says_how_to_start_forkserve(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "forkserve.cli.runmaster"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"forkserve: error: forkserve.cli.runmaster is started by `forkserve APP` itself, with "
        f"{SPEC_VARIABLE} set; run forkserve APP"
    ]
