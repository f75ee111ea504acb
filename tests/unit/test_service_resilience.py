"""Service loops: the pacing of errors, the checks of a control request, and each loop going on after
injected faults (the autoscaler, the systemd watchdog, the reload watcher, event lines, observers)."""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from forkserve.common import faults
from forkserve.services import controlrequest, httpserve
from forkserve.services.autoscaler import Autoscaler, Measurement
from forkserve.services.controlrequest import BadRequest, Request
from forkserve.services.devreload import SourceWatcher
from forkserve.services.eventlines import EventLines
from forkserve.services.events import EventLog
from forkserve.services.resilience import Pacer
from forkserve.services.systemd import Watchdog
from tests.conftest import wait_until

EMFILE = OSError(errno.EMFILE, "Too many open files")


@pytest.fixture(autouse=True)
def no_faults(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.INFO, logger="forkserve")
    faults.disarm()
    yield
    faults.disarm()


# ------------------------------------------------------------------ Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# (seconds since start, "fail" or "ok") -> (pause, line pattern or None)
PACING = [
    (0.0, "fail", 0.05, r"^accept failed: Too many open files; pausing and retrying until it works$"),
    (0.1, "fail", 0.1, None),
    (0.3, "fail", 0.2, None),
    (0.6, "fail", 0.4, None),
    (5.0, "fail", 0.8, None),
    (9.0, "fail", 1.6, None),
    (20.0, "fail", 2.0, None),  # capped
    (61.0, "fail", 2.0, r"^accept still failing: 7 more times since the last line \(Too many open files\)$"),
    (62.0, "ok", 0.0, r"^accept works again after 8 failures$"),
    (63.0, "fail", 0.05, None),  # within a minute of the last line: counted, not logged
    (63.1, "ok", 0.0, None),  # and its recovery was not announced either
    (130.0, "fail", 0.05, r"^accept failed: Too many open files; pausing"),
    (130.5, "ok", 0.0, r"^accept works again after 1 failure$"),
]


def test_a_pacer_logs_a_run_of_failures_once_with_growing_pauses_and_a_summary() -> None:
    import re

    pacer = Pacer("accept")
    for now, outcome, pause, line in PACING:
        if outcome == "fail":
            step = pacer.decide(EMFILE, now)
            assert step.pause == pytest.approx(pause), now
            said = step.log
        else:
            said = pacer.decide_recovered()
        assert (said is None) == (line is None), (now, said)
        if line is not None:
            assert said is not None and re.search(line, said), (now, said)


# ------------------------------------------------------------------ control requests


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"op": "status"}\n', Request("status")),
        (b'{"op": "reload", "timeout": 5}\n', Request("reload", 5.0)),
        (b'{"op": "reload", "timeout": null}\n', Request("reload", 60.0)),
        (b'{"op": "scale", "to": 3, "timeout": 2.5}\n', Request("scale", 2.5, to=3)),
        (b'{"op": "scale", "delta": -1}\n', Request("scale", delta=-1)),
        (b'{"op": "stop", "graceful": false}\n', Request("stop", graceful=False)),
        (b'{"op": "status", "note": "[{not nesting}]"}\n', Request("status")),
    ],
)
def test_good_control_requests(line: bytes, expected: Request) -> None:
    assert controlrequest.parse(line) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"[" * 100_000, "a request is one line of at most 65536 bytes"),
        (b"[" * 9 + b"]" * 9, "a request nests at most 8 levels deep"),
        (b'{"op": "reload", "timeout": "nan"}', '"timeout" is a number of seconds, not "nan"'),
        (b'{"op": "reload", "timeout": NaN}', '"timeout" must be above 0 and at most 86400 seconds, not nan'),
        (b'{"op": "reload", "timeout": Infinity}', '"timeout" must be above 0 and at most 86400 seconds'),
        (b'{"op": "reload", "timeout": 0}', '"timeout" must be above 0'),
        (b'{"op": "reload", "timeout": -1}', '"timeout" must be above 0'),
        (b'{"op": "reload", "timeout": true}', '"timeout" is a number of seconds, not true'),
        (b'{"op": "scale"}', 'scale takes "to": N or "delta": K (whole numbers)'),
        (b'{"op": "scale", "to": 1, "delta": 1}', 'scale takes "to": N or "delta": K (whole numbers)'),
        (b'{"op": "scale", "to": 1.5}', "not to=1.5"),
        (b'{"op": "scale", "delta": "1"}', 'not delta="1"'),
        (b'{"op": "stop", "graceful": 1}', '"graceful" is true or false'),
        (b'{"op": ["status"]}', "unknown op ['status']"),
        (b"{}", "unknown op None"),
        (b'"status"', "a request is a JSON object"),
        (b"{", "unreadable request: "),
    ],
)
def test_bad_control_requests(line: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as raised:
        controlrequest.parse(line)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("data", "deepest"),
    [(b"{}", 1), (b'{"a": [[1]]}', 3), (b'"[[[["', 0), (b'["\\"[", [{}]]', 3), (b"]]]", 0)],
)
def test_depth_counts_brackets_outside_strings(data: bytes, deepest: int) -> None:
    assert controlrequest.depth(data) == deepest


# ------------------------------------------------------------------ the seam and the HTTP answers


def test_fault_specs_parse_and_bad_ones_name_the_points() -> None:
    assert faults.parse("control.accept=3, metrics.sweep=1:ENOMEM, worker_fork@2:EAGAIN") == {
        "control.accept": (1, 3, errno.EMFILE),
        "metrics.sweep": (1, 1, errno.ENOMEM),
        "worker_fork": (2, 1, errno.EAGAIN),
    }
    with pytest.raises(ValueError, match="POINT=N"):
        faults.parse("nowhere=1")
    with pytest.raises(ValueError, match="not an errno name"):
        faults.parse("control.accept=1:EWHAT")


def test_an_armed_point_fails_that_many_times() -> None:
    faults.arm(faults.METRICS_SWEEP, 2, errno.ENFILE)
    for _ in range(2):
        with pytest.raises(OSError) as raised:
            faults.check(faults.METRICS_SWEEP)
        assert raised.value.errno == errno.ENFILE
    faults.check(faults.METRICS_SWEEP)


def test_an_http_answer_names_forkserve_and_closes() -> None:
    assert httpserve.response(503, b"busy\n", head=True) == (
        b"HTTP/1.1 503 Service Unavailable\r\nServer: forkserve\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n"
        b"Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )


# ------------------------------------------------------------------ each loop goes on


def failures_logged(caplog: pytest.LogCaptureFixture, what: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(what + " failed")]


def test_the_autoscaler_keeps_sampling_after_errors(caplog: pytest.LogCaptureFixture) -> None:
    faults.arm(faults.AUTOSCALER_SAMPLE, 3)
    delivered: list[Measurement] = []
    scaler = Autoscaler(0.01, lambda: Measurement(0, [], 1.0, 2.0), delivered.append)
    scaler.start()
    try:
        wait_until(lambda: len(delivered) >= 3, 10, "three samples after the failures")
    finally:
        scaler.stop()
    assert len(failures_logged(caplog, "autoscaler: sampling the load")) == 1
    assert "autoscaler: sampling the load works again after 3 failures" in caplog.messages


class Notes:
    def __init__(self) -> None:
        self.sent: list[tuple[str, ...]] = []

    def send(self, *fields: str) -> bool:
        self.sent.append(fields)
        return True


def test_the_watchdog_keeps_pinging_after_errors(caplog: pytest.LogCaptureFixture) -> None:
    faults.arm(faults.WATCHDOG_PING, 3)

    def call(action: Any) -> Future[Any]:
        done: Future[Any] = Future()
        done.set_result(action())
        return done

    notes = Notes()
    watchdog = Watchdog(notes, 0.01, call)  # type: ignore[arg-type]
    watchdog.start()
    try:
        wait_until(lambda: len(notes.sent) >= 3, 10, "pings after the failures")
    finally:
        watchdog.stop()
    assert set(notes.sent) == {("WATCHDOG=1",)}
    assert len(failures_logged(caplog, "systemd watchdog: probing the master's loop")) == 1


def test_the_reload_watcher_watches_again_after_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    faults.arm(faults.DEVRELOAD_WATCH, 2)
    changed = threading.Event()
    watcher = SourceWatcher([str(tmp_path)], changed.set)
    watcher.start()
    try:
        # Saved again and again: the watch starts only after its two failures and their pauses.
        wait_until(lambda: _save(tmp_path / "app.py", changed), 20, "a saved file to be seen")
    finally:
        watcher.stop()
    assert len(failures_logged(caplog, "--reload: watching for changes")) == 1
    assert "--reload: watching for changes works again after 2 failures" in caplog.messages


def _save(path: Path, changed: threading.Event) -> bool:
    path.write_text(f"x = {time.monotonic()}\n")
    return changed.wait(0.5)


def test_event_lines_and_observers_outlive_their_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="forkserve")
    log = EventLog()
    lines = EventLines("text")
    lines.start(type("Master", (), {"events": log})())
    seen: list[str] = []
    flaky = iter([RuntimeError("can't start new thread"), None, None])

    def observer(event: Any) -> None:
        error = next(flaky)
        if error:
            raise error
        seen.append(event.kind)

    log.subscribe(observer)
    faults.arm(faults.EVENT_LINES, 1)
    for kind in ("scaled", "scaled", "stopping"):
        log.emit(kind, f"{kind} now")
    # The failing observer was kept: it saw the events after its failure.
    assert seen == ["scaled", "stopping"]
    assert [m for m in caplog.messages if m.startswith("event=")] == [
        "event=scaled: scaled now",
        "event=stopping: stopping now",
    ]
    assert len(failures_logged(caplog, "writing event lines")) == 1
