"""Bad input: one clear line naming the problem and the fix, a distinct exit code, nothing left running."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import socket

import pytest


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("forkserve: error:")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-w", "many"], r"--workers 'many': expected a number of workers of at least 1, or 'auto'"),
        (["-w", "0"], r"--workers '0': expected a number of workers of at least 1, or 'auto'"),
        (
            ["-b", "nonsense:x"],
            r"--bind 'nonsense:x': port 'x' is not a number from 0 to 65535; expected HOST:PORT",
        ),
        (["--timeout", "soon"], r"--timeout 'soon': expected a number of seconds"),
        (
            ["--log-level", "loud"],
            r"--log-level 'loud': expected one of critical, error, warning, info, debug, trace",
        ),
    ],
)
def test_bad_flag_exits_2_with_one_line(serve, args, message):
    server = serve(*args, bind=False)
    assert server.wait_exit() == 2
    log = server.log()
    assert re.fullmatch(r"forkserve: error: " + message + r".*", log.strip()), log
    assert "Traceback" not in log


def test_bad_environment_variable_names_the_variable(serve):
    server = serve(bind=False, env={"FORKSERVE_WORKERS": "lots"})
    assert server.wait_exit() == 2
    assert error_lines(server.log()) == [
        "forkserve: error: FORKSERVE_WORKERS 'lots': expected a number of workers of at least 1, or 'auto'"
    ]


def test_missing_app_exits_2(serve):
    server = serve(app=None, bind=False)
    assert server.wait_exit() == 2
    assert "missing APP" in server.log()


def test_module_that_does_not_exist_exits_3(serve):
    server = serve(app="no_such_module:app")
    assert server.wait_exit() == 3
    assert error_lines(server.log()) == [
        'forkserve: error: cannot load no_such_module:app: Could not import module "no_such_module"; '
        "check the name, and --app-dir if the module is not in the current directory"
    ]


def test_attribute_that_does_not_exist_exits_3(serve):
    server = serve(app="hello:nope")
    assert server.wait_exit() == 3
    assert 'Attribute "nope" not found in module "hello"' in server.log()


def test_crash_at_import_exits_3_with_the_apps_error_and_no_respawn(serve):
    server = serve("-w", "2", app="crash_import:app")
    assert server.wait_exit() == 3
    log = server.log()
    lines = log.strip().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("forkserve: error:"))
    assert lines[first] == (
        "forkserve: error: cannot load crash_import:app: "
        "importing it raised RuntimeError: the database URL is not set"
    )
    detail = lines[first + 1 :]
    assert 1 <= len(detail) <= 6, detail
    assert detail[-1].strip() == "RuntimeError: the database URL is not set"
    assert "Booting worker" not in log
    assert "Traceback" not in log


def test_crash_at_import_shows_the_full_traceback_at_debug(serve):
    server = serve("--log-level", "debug", app="crash_import:app")
    assert server.wait_exit() == 3
    assert "RuntimeError: the database URL is not set" in server.log()


def test_lifespan_startup_failure_exits_3_without_respawning(serve):
    server = serve("-w", "2", app="lifespan_fail:app")
    assert server.wait_exit() == 3
    log = server.log()
    assert "ConnectionRefusedError: cannot reach the database at db:5432" in log
    assert len(re.findall("Booting worker", log)) <= 2, log
    assert "fix the app and start again" in error_lines(log)[0]
    # Short form while booting: the last frame and the error, not the whole chain.
    assert "Traceback (most recent call last)" not in log


def test_address_in_use_exits_4_said_once(serve):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = serve(port=port)
        assert server.wait_exit() == 4
    assert error_lines(server.log()) == [
        f"forkserve: error: 127.0.0.1:{port} is already in use; pick another --bind or stop the other server"
    ]
    assert server.log().count("already in use") == 1


def _drop_bind_capability() -> None:
    """Run the server without CAP_NET_BIND_SERVICE, as an unprivileged service would (even as root)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    pr_capbset_drop, cap_net_bind_service = 24, 10
    if os.geteuid() == 0 and libc.prctl(pr_capbset_drop, cap_net_bind_service, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_privileged_port_without_the_capability_exits_5(serve):
    server = serve(port=1, preexec_fn=_drop_bind_capability)
    assert server.wait_exit() == 5
    assert error_lines(server.log()) == [
        "forkserve: error: 127.0.0.1:1: permission denied; ports below 1024 need root or "
        "CAP_NET_BIND_SERVICE; use a port >= 1024 behind a proxy"
    ]


def test_bad_fd_bind_exits_2(serve):
    server = serve("-b", "fd://987", bind=False)
    assert server.wait_exit() == 2
    assert error_lines(server.log())[0].startswith("forkserve: error: --bind fd://987: not an open socket")
