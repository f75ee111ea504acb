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
from collections.abc import MutableMapping, Sequence

from forkserve.sockets import Listener

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
    argv: Sequence[str], listeners: Sequence[Listener], pidfile: str | None
) -> subprocess.Popen[bytes]:
    fds = [listener.sock.fileno() for listener in listeners]
    env = dict(os.environ)
    env[INHERITED_FDS] = ",".join(str(fd) for fd in fds)
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
