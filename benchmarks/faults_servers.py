"""The servers of the fault-injection benchmark: command lines, their settings, their processes.

Each server gets the closest equivalent of a forkserve setting where it has one, and says "n/a" with
the reason where it has none, so that the page can tell "failed the test" from "has no such thing".
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks import harness, sampling
from benchmarks.harness import HOST
from benchmarks.run import REPO_ROOT, module_argv, server_env

APP = "benchmarks.apps_faults:app"
CRASH_APP = "benchmarks.apps_faults:crash_app"
WORKERS = 2


@dataclass(frozen=True)
class Knobs:
    """What a scenario asks of the server, in forkserve's terms."""

    app: str = APP
    hung_timeout: bool = False  # a 5 s hung-worker check (forkserve/gunicorn --timeout 5)
    max_memory_mb: int = 0  # recycle a worker above this much memory
    backlog: int = 0  # listen backlog; 0: the server's default
    log_file: str | None = None  # error (and access) log to this file
    access_log: bool = False


@dataclass
class Command:
    argv: list[str]
    applied: list[str] = field(default_factory=list)  # settings given, in words
    missing: dict[str, str] = field(default_factory=dict)  # knob -> why the server has none


Builder = Callable[[str, int, Knobs], Command]


@dataclass(frozen=True)
class FaultServer:
    name: str
    package: str
    build: Builder
    is_worker: Callable[[str], bool]  # from a process's command line (after setproctitle)
    expected_processes: int  # the whole tree with 2 workers, when all is well
    note: str
    forkserve_python: bool = False
    hup: str = "reload"  # what SIGHUP is to this server, in words


def _forkserve(python: str, port: int, knobs: Knobs) -> Command:
    line = f"forkserve {knobs.app} -w {WORKERS} -b {HOST}:{port}"
    cmd = Command([])
    if knobs.hung_timeout:
        line += " --timeout 5"
        cmd.applied.append("`--timeout 5`")
    if knobs.max_memory_mb:
        line += f" --max-worker-memory {knobs.max_memory_mb}"
        cmd.applied.append(f"`--max-worker-memory {knobs.max_memory_mb}`")
    if knobs.backlog:
        line += f" --backlog {knobs.backlog}"
        cmd.applied.append(f"`--backlog {knobs.backlog}`")
    if knobs.log_file:
        line += f" --log-file {knobs.log_file}"
        cmd.applied.append("`--log-file FILE`")
    line += " --access-log" if knobs.access_log else " --no-access-log"
    cmd.argv = module_argv(python, line)
    return cmd


def _gunicorn(python: str, port: int, knobs: Knobs) -> Command:
    line = f"gunicorn -k uvicorn.workers.UvicornWorker -w {WORKERS} -b {HOST}:{port} --no-control-socket"
    cmd = Command([])
    if knobs.hung_timeout:
        line += " --timeout 5"
        cmd.applied.append("`--timeout 5`")
    if knobs.max_memory_mb:
        cmd.missing["memory"] = "no memory limit (only `--max-requests`, a request count)"
    if knobs.backlog:
        line += f" --backlog {knobs.backlog}"
        cmd.applied.append(f"`--backlog {knobs.backlog}`")
    if knobs.log_file:
        line += f" --error-logfile {knobs.log_file}"
        cmd.applied.append("`--error-logfile FILE`")
        if knobs.access_log:
            line += f" --access-logfile {knobs.log_file}"
            cmd.applied.append("`--access-logfile FILE`")
    cmd.argv = module_argv(python, f"{line} {knobs.app}")
    return cmd


def _uvicorn(python: str, port: int, knobs: Knobs) -> Command:
    line = f"uvicorn {knobs.app} --workers {WORKERS} --host {HOST} --port {port}"
    cmd = Command([])
    if knobs.hung_timeout:
        # The supervisor pings each worker over a pipe; one that does not answer within
        # --timeout-worker-healthcheck (default 5 s) is killed and replaced.
        line += " --timeout-worker-healthcheck 5"
        cmd.applied.append("`--timeout-worker-healthcheck 5` (its default)")
    if knobs.max_memory_mb:
        cmd.missing["memory"] = "no memory limit (only `--limit-max-requests`, a request count)"
    if knobs.backlog:
        line += f" --backlog {knobs.backlog}"
        cmd.applied.append(f"`--backlog {knobs.backlog}`")
    if knobs.log_file:
        cmd.missing["log file"] = "no log-file option (only `--log-config`), and no USR1 reopen"
    line += " --access-log" if knobs.access_log else " --no-access-log"
    cmd.argv = module_argv(python, line)
    return cmd


GRANIAN_MIN_BACKLOG = 128


def _granian(python: str, port: int, knobs: Knobs) -> Command:
    # granian does not replace a dead worker unless told to; forkserve, gunicorn and uvicorn do
    # by default, so granian gets --respawn-failed-workers everywhere (its default interval, 3.5 s).
    line = (
        f"granian --interface asgi --workers {WORKERS} --host {HOST} --port {port} --respawn-failed-workers"
    )
    cmd = Command([])
    if knobs.hung_timeout:
        cmd.missing["hung check"] = "no hung-worker check"
    if knobs.max_memory_mb:
        line += f" --workers-max-rss {knobs.max_memory_mb} --rss-sample-interval 1"
        cmd.applied.append(f"`--workers-max-rss {knobs.max_memory_mb} --rss-sample-interval 1` (RSS)")
    if knobs.backlog:
        backlog = max(knobs.backlog, GRANIAN_MIN_BACKLOG)
        line += f" --backlog {backlog}"
        note = " (its minimum)" if backlog != knobs.backlog else ""
        cmd.applied.append(f"`--backlog {backlog}`{note}")
    if knobs.log_file:
        cmd.missing["log file"] = "no log-file option (only `--log-config`)"
    line += " --access-log" if knobs.access_log else " --no-access-log"
    cmd.argv = module_argv(python, f"{line} {knobs.app}")
    return cmd


def _hypercorn(python: str, port: int, knobs: Knobs) -> Command:
    line = f"hypercorn -k uvloop -w {WORKERS} -b {HOST}:{port}"
    cmd = Command([])
    if knobs.hung_timeout:
        cmd.missing["hung check"] = "no hung-worker check"
    if knobs.max_memory_mb:
        cmd.missing["memory"] = "no memory limit (only `--max-requests`, a request count)"
    if knobs.backlog:
        line += f" --backlog {knobs.backlog}"
        cmd.applied.append(f"`--backlog {knobs.backlog}`")
    if knobs.log_file:
        line += f" --error-logfile {knobs.log_file}"
        cmd.applied.append("`--error-logfile FILE`")
        if knobs.access_log:
            line += f" --access-logfile {knobs.log_file}"
            cmd.applied.append("`--access-logfile FILE`")
    cmd.argv = module_argv(python, f"{line} {knobs.app}")
    return cmd


def _title_starts(prefix: str) -> Callable[[str], bool]:
    return lambda cmdline: cmdline.startswith(prefix)


def _spawned(cmdline: str) -> bool:
    return "multiprocessing.spawn" in cmdline


def _granian_worker(cmdline: str) -> bool:
    return cmdline.startswith("granian ") and " worker-" in cmdline


SERVERS: dict[str, FaultServer] = {
    s.name: s
    for s in (
        FaultServer(
            "forkserve",
            "forkserve",
            _forkserve,
            _title_starts("forkserve: worker"),
            4,
            "master, zygote and 2 workers",
            forkserve_python=True,
        ),
        FaultServer(
            "gunicorn-uvicorn",
            "gunicorn",
            _gunicorn,
            _title_starts("gunicorn: worker"),
            3,
            "gunicorn arbiter and 2 `uvicorn.workers.UvicornWorker` workers",
        ),
        FaultServer(
            "uvicorn",
            "uvicorn",
            _uvicorn,
            _spawned,
            4,
            "supervisor, multiprocessing's resource tracker and 2 spawned workers",
            hup="restart all workers",
        ),
        FaultServer(
            "granian",
            "granian",
            _granian,
            _granian_worker,
            3,
            "main process and 2 workers",
        ),
        FaultServer(
            "hypercorn",
            "hypercorn",
            _hypercorn,
            _spawned,
            4,
            "main process, multiprocessing's resource tracker and 2 spawned workers",
        ),
    )
}
DEFAULT_SERVERS = ("forkserve", "gunicorn-uvicorn", "uvicorn", "granian")


# --- processes --------------------------------------------------------------------------------


def cmdline_of(proc: psutil.Process) -> str:
    try:
        # setproctitle pads the title with spaces or NULs; collapse them.
        return " ".join(" ".join(proc.cmdline()).split())
    except psutil.Error:
        return ""


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def live_tree(pid: int) -> list[psutil.Process]:
    return [p for p in sampling.process_tree(pid) if alive(p)]


group_members = harness.group_members


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def uss_mb(proc: psutil.Process) -> float | None:
    try:
        return float(proc.memory_full_info().uss) / 2**20
    except psutil.Error:
        return None


def port_bindable(port: int) -> bool:
    """Could a new server listen on ``port`` now? (SO_REUSEADDR, as every server sets it.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
            sock.listen(1)
        except OSError:
            return False
        return True


def signal_pid(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Seen:
    pid: int
    cmdline: str
    worker: bool
    first: float
    last: float
    gone: float | None = None


class TreeWatcher:
    """Polls the server's process tree every ``interval`` s in a thread and records every process:
    when it appeared, whether it is a worker, when it went (died, or became a zombie)."""

    def __init__(self, server: FaultServer, leader: int, interval: float = 0.02) -> None:
        self.server = server
        self.leader = leader
        self.interval = interval
        self.seen: dict[int, Seen] = {}
        self.memory: dict[int, float] = {}  # pid -> highest USS in MB, when sampled
        self.sample_memory_every = 0.0
        self.no_worker_seconds = 0.0  # total time no worker process was alive
        self._last_poll: float | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeWatcher:
        self.poll()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        last_memory = 0.0
        while not self._stop.wait(self.interval):
            self.poll()
            if self.sample_memory_every and time.monotonic() - last_memory >= self.sample_memory_every:
                last_memory = time.monotonic()
                self._sample_memory()

    def poll(self) -> None:
        now = time.monotonic()
        procs = live_tree(self.leader)
        current = {p.pid for p in procs}
        with self._lock:
            for proc in procs:
                if proc.pid == self.leader:
                    continue
                entry = self.seen.get(proc.pid)
                if entry is None or entry.gone is not None:
                    cmdline = cmdline_of(proc)
                    self.seen[proc.pid] = Seen(proc.pid, cmdline, self.server.is_worker(cmdline), now, now)
                else:
                    entry.last = now
                    if now - entry.first < 1.0:
                        # A spawned child shows its parent's command line until it has exec'd.
                        entry.cmdline = cmdline_of(proc) or entry.cmdline
                        entry.worker = self.server.is_worker(entry.cmdline)
            for pid, entry in self.seen.items():
                if entry.gone is None and pid not in current:
                    entry.gone = now
            if self._last_poll is not None and not any(
                e.worker and e.gone is None for e in self.seen.values()
            ):
                self.no_worker_seconds += now - self._last_poll
            self._last_poll = now

    def _sample_memory(self) -> None:
        for proc in live_tree(self.leader):
            if proc.pid == self.leader:
                continue
            value = uss_mb(proc)
            if value is not None:
                with self._lock:
                    self.memory[proc.pid] = max(self.memory.get(proc.pid, 0.0), value)

    def workers(self, live_only: bool = True) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen.values() if s.worker and (s.gone is None or not live_only)]

    def last_change(self) -> float:
        """When a process last appeared or went."""
        with self._lock:
            return max((max(s.first, s.gone or 0.0) for s in self.seen.values()), default=0.0)

    def started_after(self, when: float) -> list[Seen]:
        with self._lock:
            return sorted(
                (s for s in self.seen.values() if s.worker and s.first > when), key=lambda s: s.first
            )


# --- starting and stopping ----------------------------------------------------------------------


@dataclass
class Running:
    server: FaultServer
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    command: Command


def interpreter(server: FaultServer, python: str, forkserve_python: str) -> str:
    return forkserve_python if server.forkserve_python else python


def start(
    server: FaultServer,
    knobs: Knobs,
    python: str,
    log_path: Path,
    port: int | None = None,
) -> Running:
    port = port or harness.free_port()
    command = server.build(python, port, knobs)
    proc = harness.start_server(command.argv, REPO_ROOT, server_env(), log_path)
    return Running(server, proc, port, log_path, command)


def wait_ready(running: Running, timeout: float = 30.0) -> None:
    """Serving, with the whole expected tree up and settled."""
    deadline = time.monotonic() + timeout
    harness.wait_until_serving(running.proc, running.port, timeout)
    harness.wait_for_workers(
        running.proc.pid,
        running.server.expected_processes,
        max(1.0, deadline - time.monotonic()),
        settle=0.3,
    )
    # Every worker must answer: a server that answers from one worker while the other still
    # imports would start the scenario with one worker.
    workers = {p.pid for p in live_tree(running.proc.pid) if running.server.is_worker(cmdline_of(p))}
    seen: set[int] = set()
    while workers - seen and time.monotonic() < deadline:
        pid = probe_pid(running.port)
        if pid is not None:
            seen.add(pid)
        else:
            time.sleep(0.02)


def probe_pid(port: int, timeout: float = 1.0) -> int | None:
    """One request to /pid on a new connection: the pid of the worker that answered, or None."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or not body.strip().isdigit():
        return None
    return int(body.strip())


@dataclass
class Stopped:
    stop_seconds: float
    returncode: int | None
    killed: bool  # TERM was not enough within the grace period
    survivors: list[str]  # alive even after SIGKILL
    port_open: bool


def stop(running: Running, grace: float = 10.0) -> Stopped:
    """TERM the group, KILL it after ``grace``, and make sure nothing of it is left at all."""
    stopped = harness.stop_server(running.proc, grace)
    return Stopped(
        stop_seconds=stopped.seconds,
        returncode=stopped.returncode,
        killed=stopped.killed,
        survivors=stopped.survivors,
        port_open=not harness.port_closed(running.port),
    )
