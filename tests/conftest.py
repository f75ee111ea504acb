"""Shared fixtures: a real forkserve server in its own session, and a finaliser that leaves nothing."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

APPS = Path(__file__).parent / "integration" / "apps"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, on_fail: Callable[[], str] = str
) -> Any:
    """Poll PREDICATE until it returns something truthy; fail with WHAT (and context) at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{on_fail()}")
        time.sleep(0.05)


def titles_of(pid: int) -> dict[int, str]:
    """pid -> process title of PID's descendants."""
    found = {}
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    for child in children:
        try:
            found[child.pid] = " ".join(child.cmdline()).strip()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path, port: int | None) -> None:
        self.proc = proc
        self.log_path = log_path
        self.port = port
        self.seen: set[int] = {proc.pid}

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "--- server log (tail) ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def wait_log(self, pattern: str, timeout: float = 10.0, count: int = 1) -> list[str]:
        regex = re.compile(pattern, re.M)

        def found() -> list[str]:
            matches = regex.findall(self.log())
            return matches if len(matches) >= count else []

        result: list[str] = wait_until(found, timeout, f"log /{pattern}/ x{count}", self.tail)
        return result

    def processes(self) -> dict[int, str]:
        found = titles_of(self.pid)
        self.seen.update(found)
        return found

    def workers(self) -> dict[int, str]:
        return {pid: title for pid, title in self.processes().items() if "forkserve: worker" in title}

    def ready_workers(self, workers: dict[int, str] | None = None) -> set[int]:
        """Worker pids that finished lifespan startup and are still alive (of WORKERS, if given)."""
        log = self.log()
        started = {
            int(pid)
            for pid in re.findall(
                r"\[(\d+)\] \[worker \d+ gen \d+\] \[INFO\] Application startup complete", log
            )
        }
        return {pid for pid in (self.workers() if workers is None else workers) if pid in started}

    def wait_workers(self, count: int, timeout: float = 15.0, exclude: set[int] = frozenset()) -> set[int]:  # type: ignore[assignment]
        def enough() -> set[int]:
            # One look at the process tree for both facts: a draining worker that exits between
            # two looks would otherwise be counted ready while the tree already has COUNT.
            workers = self.workers()
            ready = self.ready_workers(workers) - exclude
            return ready if len(ready) >= count and len(workers) == count else set()

        result: set[int] = wait_until(enough, timeout, f"{count} ready workers", self.tail)
        return result

    def accepted(self) -> int:
        """Connections the workers have accepted (ESTABLISHED sockets they hold on our port)."""
        count = 0
        for pid in self.workers():
            try:
                connections = psutil.Process(pid).net_connections(kind="tcp")
            except psutil.NoSuchProcess:
                continue
            count += sum(
                1
                for c in connections
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port
            )
        return count

    def get(self, path: str = "/", timeout: float = 10.0) -> httpx.Response:
        return httpx.get(self.url + path, timeout=timeout)

    def signal(self, number: int) -> None:
        os.kill(self.pid, number)

    def wait_exit(self, timeout: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server did not exit within {timeout} s\n{self.tail()}") from None


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(
        *args: str,
        app: str | None = "hello:app",
        port: int | None = None,
        bind: bool = True,
        env: dict[str, str] | None = None,
        wait: int | None = None,
        command: list[str] | None = None,
        **popen: Any,
    ) -> Server:
        port = port or free_port()
        argv = command or [sys.executable, "-m", "forkserve"]
        if command is None:
            if app is not None:
                argv += [app, "--app-dir", str(APPS)]
            if bind:
                argv += ["-b", f"127.0.0.1:{port}"]
            argv += list(args)
        log_path = tmp_path / f"server-{len(started)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=tmp_path,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                **popen,
            )
        server = Server(proc, log_path, port)
        started.append(server)
        if wait:
            server.wait_workers(wait)
        return server

    yield start

    for server in started:
        server.processes()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.proc.wait(10)
    survivors = []
    for server in started:
        for pid in server.seen:
            try:
                wait_until(lambda pid=pid: not alive(pid), 5.0, f"pid {pid} to end")
            except AssertionError:
                survivors.append(pid)
                os.kill(pid, signal.SIGKILL)
    assert not survivors, f"processes left behind: {survivors}"
