"""systemd: sd_notify messages on a real notify socket, the watchdog, and socket activation.

The test plays systemd's part: it binds the AF_UNIX datagram socket named in NOTIFY_SOCKET, and
for socket activation it binds the listening sockets itself and starts forkserve with them at fd 3
onwards and LISTEN_PID naming forkserve's own pid (a two-line wrapper sets it, then execs).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import APPS, free_port, wait_until

# The launcher systemd would be: put the inherited sockets at 3.., name the pid they are for, exec.
ACTIVATE = (
    "import os, sys\n"
    "fds = [int(fd) for fd in sys.argv[1].split(',')]\n"
    "for index, fd in enumerate(fds):\n"
    "    os.dup2(fd, 3 + index)\n"
    "os.environ['LISTEN_FDS'] = str(len(fds))\n"
    "os.environ['LISTEN_PID'] = sys.argv[2] or str(os.getpid())\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


class NotifySocket:
    """What systemd listens on: every datagram is one notification of KEY=VALUE lines."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.received: list[dict[str, str]] = []

    def poll(self, timeout: float = 0.05) -> None:
        self.sock.settimeout(timeout)
        while True:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.received.append(fields)
            self.sock.settimeout(0)

    def states(self) -> list[str]:
        """The state changes in order: READY, RELOADING, STOPPING (not STATUS or WATCHDOG)."""
        return [
            key for fields in self.received for key in fields if key in ("READY", "RELOADING", "STOPPING")
        ]

    def wait_states(self, expected: list[str], timeout: float = 20.0) -> None:
        def arrived() -> bool:
            self.poll()
            return self.states()[: len(expected)] == expected and len(self.states()) >= len(expected)

        wait_until(arrived, timeout, f"notifications {expected}", lambda: f"got {self.received}")

    def wait_status(self, status: str, timeout: float = 20.0) -> None:
        def arrived() -> bool:
            self.poll()
            return any(fields.get("STATUS") == status for fields in self.received)

        wait_until(arrived, timeout, f"STATUS={status}", lambda: f"got {self.received}")

    def pings(self) -> int:
        return sum(1 for fields in self.received if fields.get("WATCHDOG") == "1")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[NotifySocket, str]]:
    path = tmp_path / "notify.sock"
    listener = NotifySocket(str(path))
    yield listener, str(path)
    listener.close()


def test_notifications_in_order_across_reload_and_stop(serve, notify_socket):
    notify, address = notify_socket
    server = serve("-w", "2", env={"NOTIFY_SOCKET": address, "SYSTEMD_EXEC_PID": ""})
    notify.wait_states(["READY"])
    # READY comes with the first worker serving; the reload waits for the second, whose STATUS the
    # test reads below (a HUP while it still booted would skip that line).
    notify.wait_status("2 workers serving, generation 1")
    server.signal(signal.SIGHUP)
    notify.wait_states(["READY", "RELOADING", "READY"])
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    notify.poll()
    assert notify.states() == ["READY", "RELOADING", "READY", "STOPPING"]

    reloading = next(fields for fields in notify.received if "RELOADING" in fields)
    # systemd (Type=notify-reload) needs the time the reload began, on CLOCK_MONOTONIC, in microseconds.
    now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert 0 < now_usec - int(reloading["MONOTONIC_USEC"]) < 120_000_000
    statuses = [fields["STATUS"] for fields in notify.received if "STATUS" in fields]
    assert "2 workers serving, generation 1" in statuses
    assert any(status.startswith("2 workers serving, generation 2") for status in statuses), statuses
    assert any("reloading to generation 2" in status for status in statuses), statuses
    assert not any("MAINPID" in fields for fields in notify.received), "forkserve is the main pid here"


def test_abstract_notify_socket_and_mainpid(serve):
    name = f"forkserve-test-{os.getpid()}-{free_port()}"
    notify = NotifySocket(b"\0" + name.encode())
    try:
        # systemd started some other pid (as after a USR2 upgrade): forkserve names itself.
        server = serve("-w", "1", env={"NOTIFY_SOCKET": "@" + name, "SYSTEMD_EXEC_PID": "1"})
        notify.wait_states(["READY"])
        ready = next(fields for fields in notify.received if "READY" in fields)
        assert ready["MAINPID"] == str(server.pid)
    finally:
        notify.close()


def test_watchdog_pings_only_while_the_master_runs(serve, notify_socket):
    notify, address = notify_socket
    server = serve(
        "-w", "1", env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000", "SYSTEMD_EXEC_PID": ""}, wait=1
    )

    def pings_beyond(count: int) -> bool:
        notify.poll()
        return notify.pings() >= count

    wait_until(lambda: pings_beyond(3), 10.0, "3 watchdog pings", lambda: str(notify.received))
    kinds = [next(iter(fields)) for fields in notify.received]
    assert kinds.index("READY") < kinds.index("WATCHDOG"), "systemd arms the watchdog at READY=1"

    server.signal(signal.SIGSTOP)
    try:
        wait_until(
            lambda: psutil.Process(server.pid).status() == psutil.STATUS_STOPPED, 5.0, "the master to stop"
        )
        notify.poll(0.3)  # whatever was already sent
        before = notify.pings()
        time.sleep(1.0)  # five ping intervals: none may come from a stopped master
        notify.poll()
        assert notify.pings() == before
    finally:
        server.signal(signal.SIGCONT)
    before = notify.pings()
    wait_until(lambda: pings_beyond(before + 2), 10.0, "pings after SIGCONT", lambda: str(notify.received))


def test_watchdog_for_another_pid_is_not_ours(serve, notify_socket):
    notify, address = notify_socket
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1", "SYSTEMD_EXEC_PID": ""}
    server = serve("-w", "1", env=env, wait=1)
    notify.wait_states(["READY"])
    time.sleep(0.5)
    notify.poll()
    assert notify.pings() == 0
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


# ------------------------------------------------------------------ socket activation


def _activated(serve, socks: list[socket.socket], *args: str, listen_pid: str = "", port: int | None = None):
    fds = [sock.fileno() for sock in socks]
    command = [
        sys.executable, "-c", ACTIVATE, ",".join(map(str, fds)), listen_pid,
        sys.executable, "-m", "forkserve", "hello:app", "--app-dir", str(APPS), *args,
    ]  # fmt: skip
    return serve(command=command, pass_fds=fds, port=port)


def _tcp_listener() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def test_socket_activation_serves_the_passed_sockets(serve, tmp_path):
    tcp = _tcp_listener()
    unix_path = tmp_path / "activated.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(unix_path))
    unix.listen(128)
    port = tcp.getsockname()[1]
    try:
        server = _activated(serve, [tcp, unix], "-w", "2", port=port)
        server.wait_workers(2)
    finally:
        # Only the server holds them now: what it serves must come from the fds it was given.
        tcp.close()
        unix.close()
    assert server.get().status_code == 200
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(unix_path))) as client:
        assert client.get("http://forkserve/").status_code == 200
    log = server.log()
    assert f"Listening at: http://127.0.0.1:{port} (socket activation)" in log
    assert "127.0.0.1:8000" not in log, "the default --bind must not be bound beside activated sockets"
    # Children must not see the variables (an app or a child process could take the fds for its own).
    for pid in server.workers():
        environment = psutil.Process(pid).environ()
        assert not {"LISTEN_FDS", "LISTEN_PID"} & set(environment), environment
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert unix_path.exists(), "systemd owns the socket file; forkserve must leave it"


def test_socket_activation_beside_an_explicit_bind(serve):
    tcp = _tcp_listener()
    extra = free_port()
    try:
        server = _activated(serve, [tcp], "-w", "1", "-b", f"127.0.0.1:{extra}", port=tcp.getsockname()[1])
        server.wait_workers(1)
    finally:
        tcp.close()
    assert server.get().status_code == 200
    assert httpx.get(f"http://127.0.0.1:{extra}/").status_code == 200


def test_sockets_for_another_pid_are_ignored(serve):
    tcp = _tcp_listener()
    port = free_port()
    try:
        server = _activated(serve, [tcp], "-w", "1", "-b", f"127.0.0.1:{port}", listen_pid="1", port=port)
        server.wait_workers(1)
        assert server.get().status_code == 200
        assert "socket activation" not in server.log()
        # Nobody serves the passed socket: connections queue there unanswered.
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"http://127.0.0.1:{tcp.getsockname()[1]}/", timeout=0.5)
    finally:
        tcp.close()


# The launcher for a master started by systemd itself: SYSTEMD_EXEC_PID and WATCHDOG_PID name it.
AS_MAIN_PID = (
    "import os, sys\n"
    "os.environ['SYSTEMD_EXEC_PID'] = os.environ['WATCHDOG_PID'] = str(os.getpid())\n"
    "os.execvp(sys.argv[1], sys.argv[1:])\n"
)


def test_usr2_successor_takes_over_notifications_and_watchdog(serve, notify_socket, tmp_path):
    notify, address = notify_socket
    pidfile = tmp_path / "app.pid"
    port = free_port()
    command = [
        sys.executable, "-c", AS_MAIN_PID,
        sys.executable, "-m", "forkserve", "hello:app", "--app-dir", str(APPS), "-b", f"127.0.0.1:{port}",
        "--pid", str(pidfile),
    ]  # fmt: skip
    server = serve(command=command, port=port, env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"})
    notify.wait_states(["READY"])
    assert not any("MAINPID" in fields for fields in notify.received), "systemd started this master"

    server.signal(signal.SIGUSR2)

    def successor() -> int:
        notify.poll()
        for fields in notify.received:
            if "READY" in fields and "MAINPID" in fields:
                return int(fields["MAINPID"])
        return 0

    new_master = wait_until(successor, 20.0, "READY=1 with MAINPID= from the new master", server.tail)
    assert new_master != server.pid
    assert int(pidfile.read_text()) == new_master
    server.signal(signal.SIGTERM)
    assert server.wait_exit(15) == 0
    # The old master is gone: the pings that keep the unit alive now come from the new one.
    mark = len(notify.received)

    def successor_pings() -> int:
        notify.poll()
        return sum(
            1
            for f in notify.received[mark:]
            if f.get("WATCHDOG") == "1" and f.get("MAINPID") == str(new_master)
        )

    wait_until(lambda: successor_pings() >= 3, 10.0, "the new master's watchdog pings")
    assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
    os.kill(new_master, signal.SIGTERM)
    wait_until(
        lambda: (
            not psutil.pid_exists(new_master) or psutil.Process(new_master).status() == psutil.STATUS_ZOMBIE
        ),
        15.0,
        "the new master to stop",
    )
