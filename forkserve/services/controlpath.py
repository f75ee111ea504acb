"""Where the control socket lives, and how ``forkserve ctl`` finds a running master's.

The default directory is private to the user: ``$RUNTIME_DIRECTORY`` (the directory systemd
creates for a unit's ``RuntimeDirectory=``, owned by its ``User=``, and outside the unit's
``PrivateTmp=``), else ``$XDG_RUNTIME_DIR/forkserve`` (systemd makes the runtime directory per
user, mode 0700), else ``/run/forkserve`` for root, else ``/tmp/forkserve-<uid>``, created 0700
and refused if another user owns it (a directory someone else controls could hold a socket that
impersonates the master). Each master names its socket after its pid, so several servers of one
user never collide and ``forkserve ctl --pid FILE`` finds the socket from a pid file.

A master killed with SIGKILL leaves its socket behind. Such a socket is stale when connecting to
it is refused (ECONNREFUSED: nothing listens), and only then is it removed by the next master or
skipped by ``ctl``. The pid in its name decides nothing: a master in another PID namespace that
shares the directory (two containers, one ``/run``) has a pid this process cannot see, and
``kill(pid, 0)`` would call its live socket stale. A connect that fails otherwise (a full
backlog, a timeout, EACCES) proves nothing either, so the socket stays.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from pathlib import Path

from forkserve.errors import BindError, ConfigError

SUFFIX = ".sock"


class ControlSocketInUse(BindError):
    pass


def default_dir(environ: dict[str, str] | None = None, uid: int | None = None) -> Path:
    env = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    # systemd lists several RuntimeDirectory= entries separated by ':'; the first is ours.
    unit_directory = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if unit_directory:
        return Path(unit_directory)
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "forkserve"
    if uid == 0:
        return Path("/run/forkserve")
    return Path(f"/tmp/forkserve-{uid}")


def prepare_dir(directory: Path) -> None:
    """Create DIRECTORY 0700, or check that the one there is ours and private."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.lstat()
    except OSError as error:
        raise ConfigError(
            f"cannot create the control socket directory {directory}: {error.strerror}; "
            "pass --control-socket PATH, or --control-socket none"
        ) from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ConfigError(
            f"{directory} is not a directory owned by this user; refusing to put the control socket "
            "there: remove it, or pass --control-socket PATH"
        )
    if info.st_mode & 0o077:
        os.chmod(directory, 0o700)


def pid_of(path: Path) -> int | None:
    """The master pid a default socket name carries (``1234.sock`` or ``1234-2.sock``)."""
    if not path.name.endswith(SUFFIX):
        return None
    head = path.name[: -len(SUFFIX)].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def answers(path: Path) -> bool:
    """True when a process accepts connections on the unix socket PATH."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


def is_stale(path: Path) -> bool:
    """True only when nothing listens on the unix socket PATH (the connect is refused)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError as error:
            return error.errno == errno.ECONNREFUSED
        return False


def remove_stale(directory: Path) -> None:
    """Remove the sockets of dead masters (default names only) from a default directory."""
    with contextlib.suppress(OSError):
        for path in directory.iterdir():
            if pid_of(path) is not None and stat.S_ISSOCK(path.lstat().st_mode) and is_stale(path):
                with contextlib.suppress(OSError):
                    path.unlink()


def claim(path: Path) -> None:
    """Make PATH free for bind(): replace a stale socket, refuse a live one or any other file."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigError(f"--control-socket {path} exists and is not a socket; choose another path")
    if not is_stale(path):
        raise ControlSocketInUse(
            f"another forkserve is using the control socket {path}; stop it, or pass another --control-socket"
        )
    path.unlink()


def default_path(directory: Path, pid: int) -> Path:
    """This master's socket: ``<pid>.sock``, or ``<pid>-N.sock`` for a second server in one process."""
    path = directory / f"{pid}{SUFFIX}"
    number = 2
    while path.exists() and answers(path):
        path = directory / f"{pid}-{number}{SUFFIX}"
        number += 1
    return path


class NotFound(Exception):
    """No (or more than one) master to talk to; the message says what to pass."""


def find(directory: Path) -> Path:
    """The one live control socket in DIRECTORY."""
    try:
        candidates = sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))
    except FileNotFoundError:
        candidates = []
    except PermissionError:
        raise NotFound(f"cannot read {directory}; pass --control-socket PATH") from None
    live = [path for path in candidates if answers(path)]
    if not live:
        raise NotFound(
            f"no running forkserve found in {directory}; is it running as this user? "
            "pass --control-socket PATH or --pid FILE"
        )
    if len(live) > 1:
        names = ", ".join(str(p) for p in live)
        raise NotFound(f"{len(live)} forkserve servers are running ({names}); pick one with --control-socket")
    return live[0]


def from_pidfile(pidfile: Path, directory: Path) -> Path:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError) as error:
        raise NotFound(f"cannot read a pid from {pidfile}: {error}") from None
    path = directory / f"{pid}{SUFFIX}"
    if not path.exists():
        raise NotFound(
            f"forkserve pid {pid} (from {pidfile}) has no control socket at {path}; "
            "pass --control-socket PATH if it was started with one"
        )
    return path
