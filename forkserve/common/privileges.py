"""--user/--group: bind as root, serve as nobody.

Theory of operation. Ports below 1024 need root (or CAP_NET_BIND_SERVICE), but code that parses
requests from the internet should not run as root. So the master, started as root, binds every
socket, opens the log and pid files, and starts the zygote; the zygote drops to the configured
user before it imports the app, and every worker it forks inherits that identity. An app given as
an import string never runs a line as root, not even its import.

The master itself stays root, as gunicorn's does. It never imports the app and never reads a
byte from a client (the workers do), so what it keeps root for is narrow and needed: binding
again on a USR2 upgrade (a new master binds a new --bind on port 80), removing the pid file from
a root-only /run, signalling and reaping workers, and starting each new generation's zygote. A
master that dropped too could do none of the first two; one that kept CAP_NET_BIND_SERVICE only
would need libcap for little gain. Files the workers and zygotes write after the drop are handed
to the user: the log file (reopened on USR1 after a rotation) and unix socket files.

The order of the drop matters: supplementary groups first (``initgroups``; root's groups must
not leak into the workers), then the gid, then the uid: once the uid is not root, the process may
no longer change its groups. The drop is then checked, since a half-dropped process is worse
than a refusal to start.

Names are resolved once, in the master, so an unknown user is a one-line configuration error
(exit 2) before anything starts; ``resolve_identity`` is a plain function of the names and the
passwd/group databases.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass

from forkserve.errors import ConfigError


@dataclass(frozen=True)
class Identity:
    """Who the zygote and workers run as. ``name`` is set when the user is in the passwd database."""

    uid: int
    gid: int
    name: str | None

    def describe(self) -> str:
        return f"uid {self.uid} ({self.name or 'no name'}), gid {self.gid}"


def lookup_user(text: str) -> pwd.struct_passwd | None:
    """The passwd entry for a name or a numeric uid; None for a number with no entry."""
    try:
        return pwd.getpwnam(text)
    except KeyError:
        pass
    if text.isdigit():
        try:
            return pwd.getpwuid(int(text))
        except KeyError:
            return None
    raise ValueError(f"no such user {text!r}; create it (useradd --system {text}) or name another")


def lookup_group(text: str) -> int:
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        pass
    if text.isdigit():
        return int(text)
    raise ValueError(f"no such group {text!r}; create it (groupadd --system {text}) or name another")


def resolve_identity(user: str | None, group: str | None) -> Identity | None:
    """The identity --user/--group name, or None when neither is set."""
    if user is None and group is None:
        return None
    uid, gid, name = os.getuid(), os.getgid(), None
    if user is not None:
        entry = lookup_user(user)
        if entry is None:
            uid = int(user)
        else:
            uid, gid, name = entry.pw_uid, entry.pw_gid, entry.pw_name
    if group is not None:
        gid = lookup_group(group)
    return Identity(uid=uid, gid=gid, name=name)


def check_can_switch(identity: Identity | None) -> None:
    """Refuse to start when the drop is bound to fail: only root may become someone else."""
    if identity is None or os.geteuid() == 0:
        return
    if identity.uid != os.geteuid() or identity.gid != os.getegid():
        raise ConfigError(
            f"--user/--group: switching to {identity.describe()} needs root; start forkserve as root "
            "(it binds, then drops privileges) or leave out --user and --group"
        )


def drop_to(identity: Identity) -> None:
    """Become IDENTITY for good: groups, then gid, then uid; raise if any of it did not take."""
    if os.geteuid() == 0:
        if identity.name is not None:
            os.initgroups(identity.name, identity.gid)
        else:
            os.setgroups([identity.gid])
    os.setgid(identity.gid)
    os.setuid(identity.uid)
    if identity.uid != 0:
        # Regaining root must be impossible now; if it is not, the drop did not happen.
        with contextlib.suppress(PermissionError):
            os.setuid(0)
            raise RuntimeError(f"privileges were not dropped: could become root again after {identity}")
    if (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) != (
        identity.uid,
        identity.uid,
        identity.gid,
        identity.gid,
    ):
        raise RuntimeError(f"privileges were not dropped to {identity.describe()}")


def hand_over(paths: Iterable[str | None], identity: Identity | None) -> None:
    """Give files the dropped processes must write or reopen (log file, unix sockets) to IDENTITY."""
    if identity is None or os.geteuid() != 0:
        return
    for path in paths:
        if path:
            with contextlib.suppress(OSError):
                os.chown(path, identity.uid, identity.gid)


def parse_umask(raw: object) -> int | None:
    """An octal mode mask: "022", "0o022", "0022", or an int from Python; None leaves it alone."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, bool):
        raise ValueError("expected an octal mask such as 022 or 0o077")
    if isinstance(raw, int):
        value = raw
    else:
        text = str(raw).strip().lower().removeprefix("0o")
        try:
            value = int(text, 8)
        except ValueError:
            raise ValueError("expected an octal mask such as 022 or 0o077") from None
    if not 0 <= value <= 0o777:
        raise ValueError("expected an octal mask from 000 to 777")
    return value
