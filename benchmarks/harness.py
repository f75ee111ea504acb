"""The process-group harness: start a server in a session of its own, wait until it serves, load it
with wrk, stop its whole group and prove nothing of it is left.

Every wait here has a deadline: a server that hangs must cost one failed run, not the benchmark.
CPU and memory sampling is in ``benchmarks.sampling``, the load client in ``benchmarks.client``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import pty
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import psutil

from benchmarks.apps import BODY
from benchmarks.sampling import process_tree

HOST = "127.0.0.1"
EXPECTED_BODY = BODY  # what benchmarks.apps answers; anything else on the port is not our server


class ServerError(RuntimeError):
    """A server did not start, did not serve, or did not go away."""


@dataclass(frozen=True)
class WrkResult:
    requests_per_sec: float
    latency_ms: dict[str, float]  # wrk --latency percentiles: "50", "75", "90", "99"
    requests: int
    socket_errors: int
    non_2xx: int


def free_port() -> int:
    """Ask the kernel for a port that is free now.

    The port is released before the server binds it, so another process could take it in
    between; on a benchmark machine that is rare, and the server then fails loudly to start.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    command: list[str], cwd: Path, env: dict[str, str], log_path: Path, tty: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``command`` with its output in ``log_path``.

    With ``tty`` its output goes through a pseudo-terminal first, because servers log differently
    (colours, line buffering) when they believe a person is watching.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if tty:
        return _start_on_pty(command, cwd, env, log_path)
    with log_path.open("wb") as log:
        return _popen(command, cwd, env, log.fileno())


def _popen(command: list[str], cwd: Path, env: dict[str, str], output: int) -> subprocess.Popen[bytes]:
    # A new session makes the server the leader of its own process group, so the whole tree
    # (master, zygote, workers) can be signalled at once and told apart from everything else.
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _start_on_pty(
    command: list[str], cwd: Path, env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    primary, secondary = pty.openpty()
    try:
        proc = _popen(command, cwd, env, secondary)
    except BaseException:
        os.close(primary)
        raise
    finally:
        os.close(secondary)
    # A terminal that is not read fills up and blocks the writer; drain it like a terminal would.
    threading.Thread(target=_drain, args=(primary, log_path), daemon=True).start()
    return proc


def _drain(fd: int, log_path: Path) -> None:
    with log_path.open("wb") as log:
        try:
            while chunk := os.read(fd, 65536):
                log.write(chunk)
        except OSError:
            pass  # EIO: every process holding the terminal has exited
        finally:
            os.close(fd)


def answers(port: int, timeout: float = 1.0, path: str = "/", body: bytes | None = EXPECTED_BODY) -> bool:
    """True if the server on ``port`` answers ``path`` with 200 (and ``body``, unless None)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        got = response.read()
        return response.status == 200 and (body is None or got == body)
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def wait_until_serving(
    proc: subprocess.Popen[bytes],
    port: int,
    timeout: float,
    path: str = "/",
    body: bytes | None = EXPECTED_BODY,
) -> None:
    """Wait until the server answers ``path`` as ``answers`` checks; raise if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"exited with status {proc.returncode} before serving")
        if answers(port, path=path, body=body):
            return
        time.sleep(0.05)
    raise ServerError(f"did not answer on port {port} within {timeout:.0f}s")


def wait_for_workers(pid: int, min_processes: int, timeout: float, settle: float = 0.5) -> None:
    """Wait until the tree has at least ``min_processes`` and has stopped changing.

    A server answers as soon as its first worker is up; a run that started then would measure one
    worker while the others are still importing the app.
    """
    deadline = time.monotonic() + timeout
    last_count = -1
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        count = len(process_tree(pid))
        now = time.monotonic()
        if count != last_count:
            last_count, stable_since = count, now
        elif count >= min_processes and now - stable_since >= settle:
            return
        time.sleep(0.1)
    raise ServerError(f"process tree had {last_count} processes, expected at least {min_processes}")


_UNIT_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_wrk(output: str) -> WrkResult:
    rps = _RPS.search(output)
    requests = _REQUESTS.search(output)
    if rps is None or requests is None:
        raise ServerError(f"could not parse wrk output:\n{output}")
    latency = {m[1]: float(m[2]) * _UNIT_TO_MS[m[3]] for m in _PERCENTILE.finditer(output)}
    if "99" not in latency:
        raise ServerError(f"wrk output has no 99th percentile (was --latency given?):\n{output}")
    errors = _SOCKET_ERRORS.search(output)
    non_2xx = _NON_2XX.search(output)
    return WrkResult(
        requests_per_sec=float(rps[1]),
        latency_ms=latency,
        requests=int(requests[1]),
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
    )


def run_wrk(port: int, threads: int, connections: int, duration: int, path: str = "/") -> WrkResult:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        f"http://{HOST}:{port}{path}",
    ]
    # wrk stops itself after -d; the timeout only catches a wrk that hangs.
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30, check=False)
    if done.returncode != 0:
        raise ServerError(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    return parse_wrk(done.stdout)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def group_members(pgid: int) -> list[psutil.Process]:
    """Every live process in the group, whoever its parent is now (orphans are reparented)."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


def _still_running(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in procs:
        try:
            # is_running() also guards against a recycled pid: it compares creation times.
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    return alive


@dataclass(frozen=True)
class StopResult:
    seconds: float  # from SIGTERM until the group was gone (or SIGKILL)
    killed: bool  # SIGTERM was not enough within the grace period
    returncode: int | None
    survivors: list[str]  # processes alive even after SIGKILL; empty when all is well


def stop_server(proc: subprocess.Popen[bytes], grace: float) -> StopResult:
    """SIGTERM the server's process group, SIGKILL it after ``grace`` seconds.

    The tree and the group are recorded before signalling because a worker whose master died first
    is reparented and would no longer show up as a child; members of the group whose master is
    already gone (orphans a fault scenario left) are waited for too.
    """
    pgid = proc.pid  # start_new_session made the leader's pid its group id
    t0 = time.monotonic()
    tree = list({p.pid: p for p in process_tree(proc.pid) + group_members(pgid)}.values())
    _signal_group(pgid, signal.SIGTERM)
    deadline = t0 + grace
    _wait_leader(proc, grace)
    psutil.wait_procs(_still_running(tree), timeout=max(0.0, deadline - time.monotonic()))
    killed = proc.poll() is None or bool(_still_running(tree) or group_members(pgid))
    seconds = time.monotonic() - t0
    if killed:
        _signal_group(pgid, signal.SIGKILL)
        for straggler in _still_running(tree):
            with contextlib.suppress(psutil.NoSuchProcess):
                straggler.kill()  # left the group (setsid) but is still ours
        _wait_leader(proc, grace)
        psutil.wait_procs(_still_running(tree), timeout=grace)
    survivors = {p.pid: p for p in _still_running(tree) + group_members(pgid)}
    return StopResult(
        seconds=seconds,
        killed=killed,
        returncode=proc.returncode,
        survivors=[f"{pid} {_describe(p)}" for pid, p in survivors.items()],
    )


def _wait_leader(proc: subprocess.Popen[bytes], timeout: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


def _describe(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())[:120]
    except psutil.Error:
        return "?"


def stop_and_check(proc: subprocess.Popen[bytes], port: int, grace: float) -> tuple[StopResult, str]:
    """Stop the server, then say what it left behind ("" when nothing): every runner's last check."""
    stopped = stop_server(proc, grace)
    problems = []
    if stopped.survivors:
        problems.append(f"processes left after SIGKILL: {'; '.join(stopped.survivors)}")
    if not port_closed(port):
        problems.append(f"port {port} still accepts connections after stop")
    return stopped, "; ".join(problems)


class StopRecord(Protocol):
    killed: bool
    error: str | None


def stop_into(record: StopRecord, proc: subprocess.Popen[bytes], port: int, grace: float) -> None:
    """Stop the server; write on RECORD whether it needed SIGKILL and what it left behind."""
    stopped, problems = stop_and_check(proc, port, grace)
    record.killed = stopped.killed
    if problems:
        record.error = "; ".join(filter(None, [record.error, problems]))


def port_closed(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((HOST, port)) != 0


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


T = TypeVar("T")


def rotated(items: Sequence[T], round_no: int) -> list[T]:
    """ITEMS in the order round ROUND_NO (from 1) runs them: rotated by one per round, so no server
    (or config) always runs first, or always right after the same other one, as the machine drifts."""
    if not items:
        return []
    shift = (round_no - 1) % len(items)
    return [*items[shift:], *items[:shift]]
