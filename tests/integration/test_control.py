"""forkserve ctl against a real master: status, scale, reload, stop, top, and who may use the socket."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import APPS, wait_until

NOBODY = 65534


def ctl(
    sock: Path | None, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    where = ["--control-socket", str(sock)] if sock is not None else []
    return subprocess.run(
        [sys.executable, "-m", "forkserve", "ctl", *where, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def status(sock: Path) -> dict:
    done = ctl(sock, "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_status_json_lists_exactly_the_live_workers(serve, tmp_path):
    sock = tmp_path / "ctl.sock"
    server = serve("-w", "2", "--control-socket", str(sock), wait=2)
    server.wait_log(re.escape(f"Control socket: {sock}"))
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    snapshot = status(sock)
    assert snapshot["master_pid"] == server.pid
    assert {w["pid"] for w in snapshot["workers"]} == set(server.workers())
    assert [(w["worker_id"], w["state"], w["generation"]) for w in snapshot["workers"]] == [
        (1, "ready", 1),
        (2, "ready", 1),
    ]
    assert snapshot["totals"]["ready"] == 2
    assert snapshot["listeners"][0]["address"] == f"127.0.0.1:{server.port}"
    for _ in range(3):
        assert server.get("/").status_code == 200
    # Counters come from the scoreboard, which workers tick four times a second.
    wait_until(lambda: status(sock)["totals"]["requests"] >= 3, 5, "request counters")
    table = ctl(sock, "status")
    assert table.returncode == 0
    assert re.search(r"^\s+1\s+\d+\s+1\s+ready\s", table.stdout, re.M), table.stdout
    assert f"listening: 127.0.0.1:{server.port}" in table.stdout


def test_scale_returns_once_the_workers_are_ready_or_gone(serve, tmp_path):
    sock = tmp_path / "ctl.sock"
    server = serve("-w", "1", "--control-socket", str(sock), wait=1)
    done = ctl(sock, "scale", "+1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "workers: 1 -> 2, all ready"
    # Returned after the worker was ready: no waiting needed here.
    snapshot = status(sock)
    assert [w["state"] for w in snapshot["workers"]] == ["ready", "ready"]
    assert {w["pid"] for w in snapshot["workers"]} == set(server.workers())
    assert "scaled" in [e["kind"] for e in snapshot["events"]]
    assert snapshot["events"][-1]["reason"] == "control"

    done = ctl(sock, "scale", "-1")
    assert done.returncode == 0, done.stderr
    # Returned after the retired worker exited.
    assert len(server.workers()) == 1
    assert len(status(sock)["workers"]) == 1

    done = ctl(sock, "scale", "3")
    assert done.returncode == 0, done.stderr
    assert len(server.workers()) == 3


def test_scale_out_of_range_is_refused_with_the_range(serve, tmp_path):
    sock = tmp_path / "ctl.sock"
    serve("-w", "1", "--control-socket", str(sock), wait=1)
    done = ctl(sock, "scale", "1000")
    assert done.returncode == 1
    assert re.fullmatch(
        r"forkserve ctl: error: cannot run 1000 workers: the number must be from 1 to \d+\n", done.stderr
    )
    assert ctl(sock, "scale", "-5").returncode == 1
    bad = ctl(sock, "scale", "many")
    assert bad.returncode == 2
    assert "'many' is not N, +K or -K" in bad.stderr


def test_reload_returns_when_the_new_generation_serves(serve, tmp_path):
    sock = tmp_path / "ctl.sock"
    server = serve("-w", "2", "--control-socket", str(sock), wait=2)
    old = set(server.workers())
    done = ctl(sock, "reload")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"reloaded: generation 2 serves \([\d.]+ s\)\n", done.stdout)
    snapshot = status(sock)
    assert snapshot["generation"] == 2
    assert [(w["generation"], w["state"]) for w in snapshot["workers"]] == [(2, "ready"), (2, "ready")]
    assert not old & {w["pid"] for w in snapshot["workers"]}
    kinds = [e["kind"] for e in snapshot["events"]]
    assert kinds.index("reload_started") < kinds.index("reload_finished")


def test_stop_returns_once_stopped_and_removes_the_socket(serve, tmp_path):
    sock = tmp_path / "ctl.sock"
    server = serve("-w", "2", "--control-socket", str(sock), wait=2)
    done = ctl(sock, "stop")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "stopped (exit code 0)\n"
    assert server.wait_exit() == 0
    assert not sock.exists()


def test_no_server_is_one_line_and_exit_6(tmp_path):
    done = ctl(tmp_path / "nothing.sock", "status")
    assert done.returncode == 6
    assert re.fullmatch(
        r"forkserve ctl: error: no forkserve answers at \S+ \(.+\); is it running\?\n", done.stderr
    )
    empty = tmp_path / "runtime"
    empty.mkdir()
    done = ctl(None, "status", env={"XDG_RUNTIME_DIR": str(empty)})
    assert done.returncode == 6
    assert "no running forkserve found in" in done.stderr
    # Help needs no server.
    helped = ctl(None, "scale", "--help", env={"XDG_RUNTIME_DIR": str(empty)})
    assert helped.returncode == 0
    assert "N|+K|-K" in helped.stdout or "TARGET" in helped.stdout


def test_default_socket_is_found_without_flags_and_by_pid_file(serve, tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    # A socket left by a master that was SIGKILLed (pid 999999 does not exist) is swept away.
    stale = runtime / "forkserve" / "999999.sock"
    stale.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as old:
        old.bind(str(stale))
    pid_file = tmp_path / "fs.pid"
    server = serve("-w", "1", "--pid", str(pid_file), env=env, wait=1)
    expected = runtime / "forkserve" / f"{server.pid}.sock"
    server.wait_log(re.escape(f"Control socket: {expected}"))
    assert not stale.exists()
    assert stat.S_IMODE(expected.parent.stat().st_mode) == 0o700
    found = ctl(None, "status", "--json", env=env)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["master_pid"] == server.pid
    by_pid = ctl(None, "--pid", str(pid_file), "status", "--json", env={"XDG_RUNTIME_DIR": str(runtime)})
    assert by_pid.returncode == 0, by_pid.stderr
    # Two servers: ctl will not guess.
    second = serve("-w", "1", env=env, wait=1)
    second.wait_log("Control socket")
    ambiguous = ctl(None, "status", env=env)
    assert ambiguous.returncode == 6
    assert "2 forkserve servers are running" in ambiguous.stderr


def test_a_live_socket_is_not_taken_over_but_a_stale_one_is(serve, tmp_path):
    sock = tmp_path / "ctl.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(sock))  # bound, never listening: what a killed master leaves
    first = serve("-w", "1", "--control-socket", str(sock), wait=1)
    assert status(sock)["master_pid"] == first.pid
    second = serve("-w", "1", "--control-socket", str(sock))
    assert second.wait_exit() == 4
    assert re.search(
        rf"^forkserve: error: another forkserve is using the control socket {re.escape(str(sock))}; ",
        second.log(),
        re.M,
    ), second.tail()
    assert status(sock)["master_pid"] == first.pid


def test_a_live_master_whose_pid_is_not_visible_keeps_its_socket(serve, tmp_path):
    # A master in another PID namespace sharing the directory: its socket carries a pid that does
    # not exist here (999998), yet it listens. The next master must not sweep it away.
    runtime = tmp_path / "runtime"
    directory = runtime / "forkserve"
    directory.mkdir(parents=True, mode=0o700)
    foreign = directory / "999998.sock"
    first = serve("-w", "1", "--control-socket", str(foreign), wait=1)
    first.wait_log(re.escape(f"Control socket: {foreign}"))
    # A socket nothing listens on is stale whatever its pid: ours, which is alive.
    dead = directory / f"{os.getpid()}.sock"
    with socket.socket(socket.AF_UNIX) as old:
        old.bind(str(dead))
    second = serve("-w", "1", env={"XDG_RUNTIME_DIR": str(runtime)}, wait=1)
    second.wait_log(re.escape(f"Control socket: {directory / f'{second.pid}.sock'}"))
    assert foreign.exists() and not dead.exists()
    assert status(foreign)["master_pid"] == first.pid


def test_the_unit_runtime_directory_holds_the_socket_and_ctl_finds_it(serve, tmp_path):
    # systemd's RuntimeDirectory=: the master and an operator's `forkserve ctl` meet there, whatever
    # the master's /tmp (PrivateTmp=) and the operator's XDG_RUNTIME_DIR.
    unit_dir = tmp_path / "run-forkserve"
    unit_dir.mkdir(mode=0o700)
    env = {"RUNTIME_DIRECTORY": str(unit_dir), "XDG_RUNTIME_DIR": str(tmp_path / "elsewhere")}
    server = serve("-w", "1", env=env, wait=1)
    server.wait_log(re.escape(f"Control socket: {unit_dir / f'{server.pid}.sock'}"))
    found = ctl(None, "status", "--json", env={"RUNTIME_DIRECTORY": str(unit_dir)})
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["master_pid"] == server.pid


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="forkserve-ctl-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _ask_as(uid: int, sock: Path, request: bytes) -> bytes:
    """Connect to SOCK from a child process running as UID; what the server answered."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(reader)
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as conn:
                conn.settimeout(10)
                conn.connect(str(sock))
                conn.sendall(request)
                answer = conn.makefile("rb").readline()
            os.write(writer, answer)
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    try:
        chunks = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ready, _, _ = select.select([reader], [], [], 0.5)
            if ready:
                chunk = os.read(reader, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        _, wait_status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(wait_status) == 0
        return b"".join(chunks)
    finally:
        os.close(reader)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_the_socket_refuses_another_uid_and_serves_ours(serve, shared_dir):
    sock = shared_dir / "ctl.sock"
    server = serve("-w", "1", "--control-socket", str(sock), wait=1)
    server.wait_log("Control socket")
    # The file mode alone keeps nobody out; open it so the uid check is what gets tested.
    sock.chmod(0o666)
    refused = json.loads(_ask_as(NOBODY, sock, b'{"op": "scale", "delta": 1}\n'))
    assert refused["ok"] is False
    assert refused["code"] == "forbidden"
    assert refused["error"] == f"uid {NOBODY} may not control this server (only uid 0 or root)"
    server.wait_log(rf"control socket: refused pid \d+ of uid {NOBODY}")
    ours = json.loads(_ask_as(0, sock, b'{"op": "status"}\n'))
    assert ours["ok"] is True
    assert len(ours["status"]["workers"]) == 1  # the refused scale did nothing


def test_top_draws_the_workers_and_quits_on_q(serve, tmp_path):
    sock = tmp_path / "ctl.sock"
    server = serve("-w", "2", "--control-socket", str(sock), wait=2)
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.execv(
                sys.executable,
                [
                    sys.executable,
                    "-m",
                    "forkserve",
                    "ctl",
                    "--control-socket",
                    str(sock),
                    "top",
                    "--interval",
                    "0.2",
                ],
            )
        finally:
            os._exit(127)
    output = b""
    try:
        deadline = time.monotonic() + 20
        worker_pids = [str(p).encode() for p in server.workers()]
        while time.monotonic() < deadline and not (
            b"q or Ctrl-C quits" in output and all(p in output for p in worker_pids)
        ):
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                output += os.read(fd, 65536)
        assert all(p in output for p in worker_pids), output[-2000:]
        os.write(fd, b"q")
        deadline = time.monotonic() + 10
        exited = 0
        while time.monotonic() < deadline:
            exited, wait_status = os.waitpid(pid, os.WNOHANG)
            if exited:
                break
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                with contextlib.suppress(OSError):
                    output += os.read(fd, 65536)
        assert exited == pid, "top did not quit on q"
        assert os.waitstatus_to_exitcode(wait_status) == 0
        # The terminal is restored: cursor shown, normal screen back.
        assert output.rstrip().endswith(b"\x1b[?25h\x1b[?1049l"), output[-200:]
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def test_reload_of_broken_code_says_it_was_aborted(serve, tmp_path):
    sock = tmp_path / "ctl.sock"
    home = tmp_path / "srv"
    home.mkdir()
    (home / "mutable.py").write_text((APPS / "hello.py").read_text())
    server = serve(
        "-w", "1", "--app-dir", str(home), "--control-socket", str(sock), app="mutable:app", wait=1
    )
    (home / "mutable.py").write_text("def broken(:\n")
    done = ctl(sock, "reload")
    assert done.returncode == 1
    assert re.match(r"forkserve ctl: error: reload to generation 2 aborted: failed to load: ", done.stderr)
    snapshot = status(sock)
    assert [(w["generation"], w["state"]) for w in snapshot["workers"]] == [(1, "ready")]
    assert server.get("/").status_code == 200


def test_an_unusable_default_directory_only_costs_the_control_socket(serve, tmp_path):
    not_a_dir = tmp_path / "runtime"
    not_a_dir.write_text("")
    server = serve("-w", "1", env={"XDG_RUNTIME_DIR": str(not_a_dir)}, wait=1)
    server.wait_log(
        r"\[WARNING\] serving without a control socket: cannot create the control socket directory "
    )
    assert server.get("/").status_code == 200
    assert "Control socket:" not in server.log()


def test_control_socket_none_turns_it_off(serve, tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    server = serve("-w", "1", "--control-socket", "none", env={"XDG_RUNTIME_DIR": str(runtime)}, wait=1)
    assert "Control socket" not in server.log()
    assert not (runtime / "forkserve").exists()
