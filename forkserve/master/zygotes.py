"""The master's side of its zygotes: starting one per generation, and talking to it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from forkserve.common import messages
from forkserve.common.zygotespec import SPEC_VARIABLE, ZygoteSpec


@dataclass
class ZygoteHandle:
    pid: int
    generation: int
    channel: socket.socket
    pidfd: int
    proc: subprocess.Popen[bytes] | None = None
    loaded: bool = False
    failed: bool = False
    # Retired zygotes have their channel closed by the master and exit on EOF.
    retiring: bool = False
    exited: bool = False
    # When it loaded or was last asked for a worker (time.monotonic()): --zygote-idle-exit's clock.
    asked_at: float = 0.0
    # Fork mode reuses one zygote for every generation (it cannot re-import an object).
    generations: set[int] = field(default_factory=set)
    # Fork mode: --env-file's variables as re-read on the last HUP, for the workers spawned since.
    environ: dict[str, str] | None = None

    def spawn(self, worker_id: int, slot: int, generation: int) -> bool:
        message: dict[str, object] = {
            "op": messages.Op.SPAWN,
            "worker_id": worker_id,
            "slot": slot,
            "generation": generation,
        }
        if self.environ is not None:
            message["environ"] = self.environ
        try:
            messages.send(self.channel, message)
        except OSError:
            return False
        return True


def _python_path_env() -> dict[str, str]:
    """The zygote must import this forkserve, even when it runs from a source checkout."""
    env = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = [package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def start_exec(spec: ZygoteSpec, zygote_end: socket.socket) -> subprocess.Popen[bytes]:
    """A fresh interpreter: new code on every generation, sharing nothing but inherited fds."""
    pass_fds = [*spec.listener_fds, spec.scoreboard_fd, zygote_end.fileno(), spec.alive_fd]
    env = _python_path_env()
    # In the environment, not argv: the spec holds --keyfile-password and --env-file's variables,
    # and any user can read a process's argv (ps), while only its owner can read its environment.
    env[SPEC_VARIABLE] = spec.to_json()
    pass_fds += [fd for fd in spec.balance_fds if fd >= 0]
    return subprocess.Popen(
        [sys.executable, "-m", "forkserve.zygote"],
        pass_fds=pass_fds,
        env=env,
        close_fds=True,
    )


def start_fork(child: Callable[[], int]) -> int:
    """Fork the zygote from this process; only safe while this process has no other thread."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = child()
        finally:
            os._exit(code)
    return pid


def new_handle(pid: int, generation: int, master_end: socket.socket, proc: Any = None) -> ZygoteHandle:
    master_end.setblocking(False)
    return ZygoteHandle(
        pid=pid,
        generation=generation,
        channel=master_end,
        pidfd=os.pidfd_open(pid),
        proc=proc,
        generations={generation},
    )


def retire(handle: ZygoteHandle) -> None:
    """Ask a zygote to leave: EOF on its channel. Its running workers are unaffected."""
    if handle.retiring:
        return
    handle.retiring = True
    with contextlib.suppress(OSError):
        # Write side only: a "spawned" it sends on its way out must still reach us.
        handle.channel.shutdown(socket.SHUT_WR)


def kill(handle: ZygoteHandle) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(handle.pid, signal.SIGKILL)
