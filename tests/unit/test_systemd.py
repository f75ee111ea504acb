"""systemd's environment read as tables; the watchdog's rule (no answer from the loop, no ping)."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from forkserve.common.sockets import binds_left
from forkserve.config.parsers import BindSpec
from forkserve.services import events
from forkserve.services.systemd import (
    Notifier,
    Watchdog,
    listen_fds,
    main_pid_field,
    messages_for,
    notify_address,
    status_line,
    watchdog_interval,
)
from tests.conftest import wait_until


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@/org/freedesktop/systemd1/notify/123", b"\0/org/freedesktop/systemd1/notify/123"),
        ("", None),
        ("vsock:2:1234", None),
        ("relative/path", None),
    ],
)
def test_notify_address(value: str, expected: Any) -> None:
    assert notify_address({"NOTIFY_SOCKET": value}) == expected


def test_no_notify_socket() -> None:
    assert notify_address({}) is None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(environ, 42) == expected


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"LISTEN_PID": "42", "LISTEN_FDS": "1"}, [(3, "unknown")]),
        (
            {"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http:admin"},
            [(3, "http"), (4, "admin")],
        ),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http"}, [(3, "http"), (4, "unknown")]),
        ({"LISTEN_PID": "41", "LISTEN_FDS": "1"}, []),  # for the process that exec'd us, not us
        ({"LISTEN_FDS": "1"}, []),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "0"}, []),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "x"}, []),
        ({}, []),
    ],
)
def test_listen_fds(environ: dict[str, str], expected: list[tuple[int, str]]) -> None:
    assert listen_fds(environ, 42) == expected


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({"SYSTEMD_EXEC_PID": "42"}, None), ({"SYSTEMD_EXEC_PID": "7"}, "MAINPID=42"), ({}, None)],
)
def test_main_pid_field(environ: dict[str, str], expected: str | None) -> None:
    assert main_pid_field(environ, 42) == expected


def _event(kind: str, **fields: Any) -> events.FleetEvent:
    return events.FleetEvent(kind, kind, 0.0, fields)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (_event(events.SERVING, generation=1), ["READY=1", "STATUS=s"]),
        (_event(events.RELOAD_STARTED, generation=2), ["RELOADING=1", "MONOTONIC_USEC=99", "STATUS=s"]),
        (_event(events.RELOAD_FINISHED, generation=2), ["READY=1", "STATUS=s"]),
        (_event(events.RELOAD_ABORTED, generation=2, reason="x"), ["READY=1", "STATUS=s"]),
        (_event(events.STOPPING, mode="immediate"), ["STOPPING=1", "STATUS=stopping (immediate)"]),
        (_event(events.WORKER_READY), ["STATUS=s"]),
        (_event(events.WORKER_EXITED), ["STATUS=s"]),
        (_event(events.SCALED), ["STATUS=s"]),
        (_event(events.RECYCLE), None),
        (_event(events.STOPPED), None),
    ],
)
def test_messages_for(event: events.FleetEvent, expected: list[str] | None) -> None:
    assert messages_for(event, "s", 99) == expected


@pytest.mark.parametrize(
    ("ready", "generation", "reloading", "expected"),
    [
        (1, 1, None, "1 worker serving, generation 1"),
        (4, 3, None, "4 workers serving, generation 3"),
        (2, 1, 2, "2 workers serving, generation 1; reloading to generation 2"),
    ],
)
def test_status_line(ready: int, generation: int, reloading: int | None, expected: str) -> None:
    assert status_line(ready, generation, reloading) == expected


TCP = BindSpec("tcp", host="127.0.0.1", port=8000)
UNIX = BindSpec("unix", path="/run/app.sock")
OTHER = BindSpec("tcp", host="0.0.0.0", port=9000)


@pytest.mark.parametrize(
    ("binds", "activated", "default", "expected"),
    [
        ([TCP], [], True, [TCP]),  # no activation: bind as asked
        ([TCP], [OTHER], True, []),  # activation replaces the default address
        ([TCP, UNIX], [TCP], False, [UNIX]),  # an explicit address systemd already holds is not bound twice
        ([UNIX], [OTHER], False, [UNIX]),  # an explicit extra address is bound beside systemd's
    ],
)
def test_binds_left(
    binds: list[BindSpec], activated: list[BindSpec], default: bool, expected: list[BindSpec]
) -> None:
    assert binds_left(binds, activated, default) == expected


def test_notifier_never_raises_without_a_listener(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens"))
    try:
        assert notifier.send("READY=1") is False
    finally:
        notifier.close()


def test_watchdog_pings_only_when_the_loop_answers(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(0.01)
    answering = threading.Event()
    answering.set()
    asked: list[Future[Any]] = []

    def call(action: Any) -> Future[Any]:
        # A stand-in for master.call: the "loop" runs the no-op only while answering is set.
        future: Future[Any] = Future()
        asked.append(future)
        if answering.is_set():
            future.set_result(action())
        return future

    pings: list[bytes] = []

    def drain() -> int:
        while True:
            try:
                pings.append(receiver.recv(100))
            except TimeoutError:
                return len(pings)

    notifier = Notifier(path)
    watchdog = Watchdog(notifier, 0.02, call)
    watchdog.start()
    try:
        wait_until(lambda: drain() >= 3, 5.0, "pings while the loop answers")
        answering.clear()
        wait_until(lambda: not asked[-1].done(), 5.0, "a probe the loop leaves unanswered")
        drain()
        count, probes = len(pings), len(asked)
        threading.Event().wait(0.2)  # ten intervals
        assert drain() == count, "no ping while the loop does not answer"
        assert len(asked) == probes, "one outstanding probe, not one per interval"
        asked[-1].set_result(None)  # the loop comes back
        wait_until(lambda: drain() > count, 5.0, "pings once the loop answers again")
    finally:
        watchdog.stop()
        notifier.close()
        receiver.close()
    assert set(pings) == {b"WATCHDOG=1"}


def test_watchdog_stops_promptly_while_a_probe_is_unanswered(tmp_path: Path) -> None:
    import time

    asked: list[Future[Any]] = []

    def call(action: Any) -> Future[Any]:
        asked.append(Future())  # a loop that never answers, as when the master has left its loop
        return asked[-1]

    notifier = Notifier(str(tmp_path / "nobody-listens"))
    watchdog = Watchdog(notifier, 30.0, call)
    watchdog.start()
    try:
        wait_until(lambda: asked, 5.0, "the first probe")
        started = time.monotonic()
        watchdog.stop()
        assert time.monotonic() - started < 1.0
        assert not watchdog._thread.is_alive()
    finally:
        notifier.close()
