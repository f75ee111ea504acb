"""Listening sockets: bound once, by the master, before any other process exists.

Binding first makes "address in use" one clear error at startup instead of N workers each failing.
The sockets are inherited by every zygote and worker; none of them ever binds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from forkserve.config.parsers import BindSpec
from forkserve.errors import BindError, BindPermissionError, ConfigError


@dataclass
class Listener:
    spec: BindSpec
    sock: socket.socket
    # Only a unix socket file we created is ours to remove on exit.
    owns_path: bool = False

    @property
    def address(self) -> str:
        if self.spec.kind == "tcp":
            host, port = self.sock.getsockname()[:2]
            return str(BindSpec("tcp", host=host, port=port))
        return str(self.spec)


def _stale_unix_socket(path: str) -> bool:
    """True when PATH is a socket file nobody listens on (left by a killed server)."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return False
    except FileNotFoundError:
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        probe.close()
    return False


def _bind_tcp(spec: BindSpec, backlog: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            # --balance reuseport: the per-worker sockets (forkserve/services/reuseport.py) join this one.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # [::]:PORT should not also claim the IPv4 port: users bind 0.0.0.0 separately if they want it.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # Accepted connections inherit it on Linux: a response written as head then body must not
        # wait for the client's delayed ACK (Nagle), whichever event loop a worker runs.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((spec.host, spec.port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_unix(spec: BindSpec, backlog: int) -> socket.socket:
    if _stale_unix_socket(spec.path):
        os.unlink(spec.path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(spec.path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _adopt_fd(spec: BindSpec) -> socket.socket:
    try:
        sock = socket.socket(fileno=spec.fd)
    except OSError as exc:
        raise ConfigError(
            f"--bind fd://{spec.fd}: not an open socket ({os.strerror(exc.errno or errno.EBADF)}); "
            "pass the number of a listening socket this process inherited"
        ) from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ConfigError(f"--bind fd://{spec.fd}: not a stream socket; pass a listening TCP or unix socket")
    return sock


_TCP_INFO_SIZE = 104


def accept_queue(sock: socket.socket) -> tuple[int, int] | None:
    """(connections waiting to be accepted, backlog) of a listening TCP socket; None elsewhere.

    On Linux, TCP_INFO on a listening socket reports the accept queue's length in tcpi_unacked and
    its limit in tcpi_sacked (eight one-byte fields, then u32 rto, ato, snd_mss, rcv_mss, unacked,
    sacked).
    """
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    if len(info) < 32:
        return None
    unacked, sacked = struct.unpack_from("II", info, 24)
    return unacked, sacked


def bind_one(spec: BindSpec, backlog: int, flag: str = "--bind", *, reuse_port: bool = False) -> Listener:
    """Bind and listen; an OSError becomes a one-line BindError naming FLAG as the thing to change."""
    try:
        if spec.kind == "fd":
            return Listener(spec, _adopt_fd(spec))
        if spec.kind == "unix":
            return Listener(spec, _bind_unix(spec, backlog), owns_path=True)
        return Listener(spec, _bind_tcp(spec, backlog, reuse_port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise BindError(
                f"{spec} is already in use; pick another {flag} or stop the other server"
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            hint = (
                "ports below 1024 need root or CAP_NET_BIND_SERVICE; use a port >= 1024 behind a proxy"
                if spec.kind == "tcp"
                else "check the directory's permissions or pick another path"
            )
            raise BindPermissionError(f"{spec}: permission denied; {hint}") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise BindError(
                f"{spec}: this machine has no such address; bind one of its own, or 0.0.0.0"
            ) from None
        if isinstance(exc, socket.gaierror):
            raise BindError(f"{spec}: cannot resolve host {spec.host!r}; use an IP address") from None
        raise BindError(f"{spec}: cannot listen ({exc.strerror or exc}); pick another {flag}") from None


def bind_all(
    specs: Sequence[BindSpec], backlog: int, inherited: Sequence[int] = (), *, reuse_port: bool = False
) -> list[Listener]:
    """Bind every address; an fd in INHERITED (a predecessor's socket, in --bind order) is adopted."""
    listeners: list[Listener] = []
    try:
        for index, spec in enumerate(specs):
            if index < len(inherited):
                # The predecessor owns a unix socket's path; it must not be removed when we exit either
                # (a successor of ours may hold it), so treat it like the predecessor did at hand-over.
                listeners.append(
                    Listener(spec, socket.socket(fileno=inherited[index]), owns_path=spec.kind == "unix")
                )
                continue
            listeners.append(bind_one(spec, backlog, reuse_port=reuse_port))
    except BaseException:
        close_all(listeners)
        raise
    return listeners


def close_all(listeners: Sequence[Listener], *, remove_paths: bool = True) -> None:
    for listener in listeners:
        with contextlib.suppress(OSError):
            listener.sock.close()
        if remove_paths and listener.owns_path:
            with contextlib.suppress(OSError):
                os.unlink(listener.spec.path)


# ---------------------------------------------------------------------------------------------
# Socket activation: systemd (or any launcher speaking LISTEN_FDS) bound the sockets for us.


def spec_of(sock: socket.socket) -> BindSpec:
    """The address an already-listening socket serves, as a BindSpec (for logs and --bind matching)."""
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        if isinstance(name, bytes):
            name = "@" + name[1:].decode(errors="replace") if name[:1] == b"\0" else name.decode()
        return BindSpec("unix", path=name or f"fd{sock.fileno()}")
    host, port = sock.getsockname()[:2]
    return BindSpec("tcp", host=host, port=port)


def binds_left(
    binds: Sequence[BindSpec], activated: Sequence[BindSpec], binds_are_default: bool
) -> list[BindSpec]:
    """Which --bind addresses still need binding when ACTIVATED sockets were passed in.

    The activated sockets always serve. The default --bind is dropped (a socket-activated unit need
    not repeat its addresses); an address given explicitly is bound unless an activated socket
    already listens on it, so a unit can add, say, a unix socket beside systemd's TCP port.
    """
    if not activated:
        return list(binds)
    if binds_are_default:
        return []
    taken = {str(spec) for spec in activated}
    return [spec for spec in binds if str(spec) not in taken]


def open_listeners(
    binds: Sequence[BindSpec],
    backlog: int,
    *,
    inherited: Sequence[int] = (),
    activated: Sequence[socket.socket] = (),
    binds_are_default: bool = False,
    reuse_port: bool = False,
) -> list[Listener]:
    """Activated sockets first (systemd's order), then whatever --bind still asks for."""
    adopted = [Listener(spec_of(sock), sock, owns_path=False) for sock in activated]
    for listener in adopted:
        if listener.spec.kind == "tcp":
            # As for sockets we bind (see _bind_tcp); a .socket unit without NoDelay=true lacks it.
            with contextlib.suppress(OSError):
                listener.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        rest = bind_all(
            binds_left(binds, [a.spec for a in adopted], binds_are_default), backlog, inherited,
            reuse_port=reuse_port,
        )  # fmt: skip
    except BaseException:
        close_all(adopted, remove_paths=False)
        raise
    return adopted + rest
