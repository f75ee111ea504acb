"""systemd integration: readiness notification, the watchdog, and socket activation.

Theory of operation. systemd tells a service how to talk back through its environment:

* ``NOTIFY_SOCKET``: an AF_UNIX datagram socket (a path, or ``@name`` in the abstract namespace).
  Each datagram is newline-separated ``KEY=VALUE`` lines: ``READY=1`` once the service serves,
  ``RELOADING=1`` (with ``MONOTONIC_USEC``) then ``READY=1`` around a reload, ``STOPPING=1``,
  ``STATUS=`` free text for ``systemctl status``, ``WATCHDOG=1`` keep-alives. The protocol is a
  dozen lines of socket code, so forkserve speaks it itself instead of depending on a package.
* ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``): systemd kills the service unless ``WATCHDOG=1`` arrives
  at least this often. A ping from a thread that merely exists would prove nothing, so each ping
  is earned: the watchdog thread asks the master's loop to run a no-op (``master.call``) and pings
  only when that returns. A master whose loop is stuck stops pinging, and systemd restarts it.
* ``LISTEN_FDS``/``LISTEN_PID``(/``LISTEN_FDNAMES``): socket activation. systemd binds the sockets
  (a ``.socket`` unit), starts the service with them open from fd 3 on, and names the pid they are
  meant for, so a child that inherited the environment by accident does not take them too.

The master reads and removes these variables once at start (``take_listen_fds``), so no zygote,
worker or app ever mistakes them for its own. ``NOTIFY_SOCKET`` stays: with the unit's default
``NotifyAccess=main`` systemd ignores anything but the main pid anyway, and a new master started
by USR2 needs it to announce itself with ``MAINPID=``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, MutableMapping
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from typing import TYPE_CHECKING, Any

from forkserve.common import faults
from forkserve.errors import ConfigError
from forkserve.services import events
from forkserve.services.resilience import Pacer

if TYPE_CHECKING:
    from forkserve.services.port import MasterPort

logger = logging.getLogger("forkserve")

LISTEN_FDS_START = 3
_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


# ---------------------------------------------------------------------------------------------
# Pure: what the environment says.


def notify_address(environ: Mapping[str, str]) -> str | bytes | None:
    """Where to send notifications: a path, an abstract address (bytes, leading NUL), or None."""
    address = environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    if address.startswith("/"):
        return address
    # Empty, or a form this client does not speak (vsock:...): no notifications, never an error.
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when no watchdog is asked."""
    text = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    try:
        usec = int(text)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


def listen_fds(environ: Mapping[str, str], pid: int) -> list[tuple[int, str]]:
    """(fd, name) of each socket systemd passed to PID; empty when none were, or not for PID."""
    if environ.get("LISTEN_PID", "") != str(pid):
        return []
    try:
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    if count <= 0:
        return []
    names = environ.get("LISTEN_FDNAMES", "").split(":") if environ.get("LISTEN_FDNAMES") else []
    return [
        (fd, names[index] if index < len(names) else "unknown")
        for index, fd in enumerate(range(LISTEN_FDS_START, LISTEN_FDS_START + count))
    ]


def main_pid_field(environ: Mapping[str, str], pid: int) -> str | None:
    """``MAINPID=pid`` when systemd started some other process (a USR2 successor sends it), else None."""
    exec_pid = environ.get("SYSTEMD_EXEC_PID", "")
    if exec_pid and exec_pid != str(pid):
        return f"MAINPID={pid}"
    return None


def status_line(ready_workers: int, generation: int, reloading: int | None = None) -> str:
    words = f"{ready_workers} worker{'' if ready_workers == 1 else 's'} serving, generation {generation}"
    return f"{words}; reloading to generation {reloading}" if reloading else words


def messages_for(event: events.FleetEvent, status: str, monotonic_usec: int) -> list[str] | None:
    """The notification a fleet event calls for (its fields, in order), or None for none."""
    if event.kind == events.SERVING:
        return ["READY=1", f"STATUS={status}"]
    if event.kind == events.RELOAD_STARTED:
        return ["RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", f"STATUS={status}"]
    if event.kind in (events.RELOAD_FINISHED, events.RELOAD_ABORTED):
        return ["READY=1", f"STATUS={status}"]
    if event.kind == events.STOPPING:
        return ["STOPPING=1", f"STATUS=stopping ({event.fields.get('mode', 'graceful')})"]
    if event.kind in (events.WORKER_READY, events.WORKER_EXITED, events.SCALED):
        return [f"STATUS={status}"]
    return None


# ---------------------------------------------------------------------------------------------
# Effects.


class Notifier:
    """Sends sd_notify datagrams; never blocks and never raises (systemd may be gone or busy)."""

    def __init__(self, address: str | bytes, main_pid: str | None = None) -> None:
        self.address = address
        self.main_pid = main_pid
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        env = os.environ if environ is None else environ
        address = notify_address(env)
        return None if address is None else cls(address, main_pid_field(env, os.getpid()))

    def send(self, *fields: str) -> bool:
        lines = [*fields, self.main_pid] if self.main_pid else list(fields)
        try:
            self.sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            # A full queue (systemd busy) or a vanished socket must cost the master nothing.
            if not self._warned:
                logger.warning("cannot notify systemd at %r: %s", self.address, exc.strerror or exc)
                self._warned = True
            return False
        return True

    def close(self) -> None:
        self.sock.close()


class Watchdog:
    """Pings WATCHDOG=1 each interval, but only after the master's loop proved it runs."""

    def __init__(self, notifier: Notifier, interval: float, call: Any) -> None:
        self.notifier = notifier
        self.interval = interval
        # master.call: runs a function on the master's thread and returns a Future of its result.
        self.call = call
        self.errors = Pacer("systemd watchdog: probing the master's loop")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forkserve-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        pending: Future[Any] | None = None
        late = False
        while not self._stop.is_set():
            started = time.monotonic()
            # One outstanding probe at a time: a stuck loop must not pile up no-ops to run later.
            if pending is None:
                try:
                    faults.check(faults.WATCHDOG_PING)
                    pending = self.call(lambda: None)
                except Exception as error:
                    # Out of memory or fds for the wake-up: no ping this time, and never the end
                    # of the watchdog (systemd restarts the service if it keeps failing).
                    self._stop.wait(max(self.errors.failed(error), min(self.interval, 1.0)))
                    continue
                self.errors.worked()
            if not self._answered(pending, self.interval):
                if not late and not self._stop.is_set():
                    logger.warning(
                        "the master's loop has not answered for %.1f s; not pinging systemd's watchdog",
                        self.interval,
                    )
                    late = True
                continue
            pending, late = None, False
            self.notifier.send("WATCHDOG=1")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def _answered(self, probe: Future[Any], timeout: float) -> bool:
        """Whether the loop ran PROBE within TIMEOUT; gives up early when stopping (the loop is gone)."""
        deadline = time.monotonic() + timeout
        while not probe.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                return False
            wait_futures([probe], timeout=min(remaining, 0.1))
        return True


class SystemdService:
    """The master-side service: fleet events -> sd_notify messages, plus the watchdog."""

    name = "systemd"

    def __init__(self, notifier: Notifier, watchdog_every: float | None) -> None:
        self.notifier = notifier
        self.watchdog_every = watchdog_every
        self.watchdog: Watchdog | None = None
        self.master: MasterPort | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SystemdService | None:
        env = os.environ if environ is None else environ
        notifier = Notifier.from_environ(env)
        if notifier is None:
            return None
        return cls(notifier, watchdog_interval(env, os.getpid()))

    def start(self, master: MasterPort) -> None:
        self.master = master
        master.events.subscribe(self.on_event)

    def _start_watchdog(self) -> None:
        # Once serving, not at start: systemd arms the watchdog when the service reports ready, and
        # a thread started earlier would be running when the master forks the first zygote of an app
        # object (forking beside a thread can deadlock the child on a lock the thread held).
        if self.watchdog_every is None or self.watchdog is not None or self.master is None:
            return
        self.watchdog = Watchdog(self.notifier, self.watchdog_every, self.master.call)
        self.watchdog.start()
        logger.info(
            "systemd watchdog: pinging every %.1f s while the master's loop runs", self.watchdog_every
        )

    def stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        self.notifier.close()

    def on_event(self, event: events.FleetEvent) -> None:
        # Runs on the master's thread (events are emitted there), so reading its records is safe.
        fields = messages_for(event, self._status(), time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)
        if fields is not None:
            self.notifier.send(*fields)
        if event.kind == events.SERVING:
            self._start_watchdog()

    def _status(self) -> str:
        master = self.master
        if master is None or not hasattr(master, "workers"):
            return "starting"
        from forkserve.policy.lifecycle import State

        ready = sum(1 for record in master.live_workers() if record.state is State.READY)
        reloading = master.state.reloading
        return status_line(ready, master.generation, reloading)


def take_listen_fds(environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The sockets systemd passed to this process; the LISTEN_* variables are removed either way."""
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    passed = listen_fds(env, os.getpid())
    for name in _LISTEN_VARS:
        env.pop(name, None)
    socks: list[socket.socket] = []
    for fd, name in passed:
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            for done in socks:
                done.detach()
            raise ConfigError(
                f"socket activation: fd {fd} ({name}) is not an open socket; check the .socket unit"
            ) from None
        if sock.type != socket.SOCK_STREAM:
            sock.detach()
            for done in socks:
                done.detach()
            raise ConfigError(
                f"socket activation: fd {fd} ({name}) is not a stream socket; use ListenStream= in the "
                ".socket unit"
            )
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, False)
        socks.append(sock)
    return socks
