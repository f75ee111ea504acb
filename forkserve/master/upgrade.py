"""USR2: start a new master from the same command line, handing it the listening sockets.

This is gunicorn's binary upgrade, as its users know it: the old master renames its pid file to
``PIDFILE.oldbin``, starts ``forkserve`` again with the same arguments and the listening sockets
inherited (their fd numbers in ``FORKSERVE_INHERITED_FDS``, in --bind order), and keeps serving.
Both generations of workers accept from the same sockets, so nothing is refused while the new
master boots. The operator then sends TERM to the old master, which drains and exits; the new
master never notices. Nothing is torn down automatically: if the new master fails to start, the
old one is still serving, and its pid file is renamed back.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping, MutableMapping, Sequence

from forkserve.common.sockets import Listener
from forkserve.policy.exits import describe_status

logger = logging.getLogger("forkserve")

INHERITED_FDS = "FORKSERVE_INHERITED_FDS"


def inherited_fds(environ: MutableMapping[str, str] | None = None) -> list[int]:
    """The fds a predecessor handed down (and forget them, so they are not handed on by accident)."""
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    text = env.pop(INHERITED_FDS, "")
    return [int(part) for part in text.split(",") if part.strip().isdigit()]


def oldbin_path(pidfile: str) -> str:
    return pidfile + ".oldbin"


def start_successor(
    argv: Sequence[str],
    listeners: Sequence[Listener],
    pidfile: str | None,
    extra_fds: Mapping[str, int] | None = None,
) -> subprocess.Popen[bytes]:
    fds = [listener.sock.fileno() for listener in listeners]
    env = dict(os.environ)
    env[INHERITED_FDS] = ",".join(str(fd) for fd in fds)
    # systemd's watchdog names this master's pid; the successor takes over the pings (and tells
    # systemd its pid with MAINPID=), so it must not read the variable as meant for someone else.
    env.pop("WATCHDOG_PID", None)
    for variable, fd in (extra_fds or {}).items():
        env[variable] = str(fd)
        fds.append(fd)
    if pidfile and os.path.exists(pidfile):
        os.replace(pidfile, oldbin_path(pidfile))
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "forkserve", *argv], pass_fds=fds, env=env, close_fds=True
        )
    except OSError:
        if pidfile and os.path.exists(oldbin_path(pidfile)):
            os.replace(oldbin_path(pidfile), pidfile)
        raise


def refusal(*, socket_activated: bool, balance: str) -> str | None:
    """Why USR2 cannot start a new master here, or None when it can."""
    if socket_activated:
        return "systemd holds the sockets; restart the unit instead (no connection is lost)"
    if balance == "reuseport":
        return "not supported with --balance reuseport (its sockets are per master); use HUP"
    return None


class Handover:
    """The old master's side of a USR2 hand-over: the successor, and where the pid file is now."""

    def __init__(self, argv: Sequence[str] | None, pidfile: str | None) -> None:
        # The command line to run again; None for a library server, which cannot re-exec itself.
        self.argv = argv
        self.configured_pidfile = pidfile
        self.pidfile = pidfile
        self.successor: subprocess.Popen[bytes] | None = None
        # Other sockets a service hands on too (the metrics server's), by the variable that names them.
        self.extra_fds: dict[str, int] = {}

    def start(self, listeners: Sequence[Listener]) -> None:
        if self.argv is None:
            logger.warning("USR2 ignored: a server started from Python cannot re-exec itself; use HUP")
            return
        if self.successor is not None and self.successor.returncode is None:
            logger.warning("USR2 ignored: a new master (pid %d) is already running", self.successor.pid)
            return
        self.successor = start_successor(self.argv, listeners, self.pidfile, self.extra_fds)
        if self.pidfile:
            self.pidfile = oldbin_path(self.pidfile)
        for listener in listeners:
            listener.owns_path = False  # the new master serves on it after we are gone
        logger.info(
            "USR2: started a new master (pid %d) on the same sockets; send TERM to this one (pid %d) "
            "once it serves", self.successor.pid, os.getpid(),
        )  # fmt: skip

    def is_successor(self, pid: int) -> bool:
        return self.successor is not None and self.successor.pid == pid

    def successor_exited(self, status: int, listeners: Sequence[Listener]) -> None:
        """A new master that ends while this one serves failed its upgrade: take the pid file back."""
        assert self.successor is not None
        self.successor.returncode = os.waitstatus_to_exitcode(status)
        logger.error(
            "the new master from USR2 %s; this master (pid %d) keeps serving",
            describe_status(status),
            os.getpid(),
        )
        if self.configured_pidfile and self.pidfile != self.configured_pidfile and self.pidfile:
            if os.path.exists(self.pidfile):
                os.replace(self.pidfile, self.configured_pidfile)
            self.pidfile = self.configured_pidfile
        for listener in listeners:
            listener.owns_path = listener.spec.kind == "unix"
