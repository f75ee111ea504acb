"""The JSON log format, the worker/generation tag, event lines and access lines with latency."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from forkserve.common.logs import LOGGER_NAMES, Formatter, JsonFormatter, LogSetup
from forkserve.http.protocol import AccessLine
from forkserve.services import events
from forkserve.services.eventlines import EventLines, describe
from forkserve.services.events import FleetEvent


def record(
    msg: str = "hello %s", args: tuple[object, ...] = ("world",), **extra: object
) -> logging.LogRecord:
    made = logging.makeLogRecord(
        {"msg": msg, "args": args, "levelname": "INFO", "levelno": logging.INFO, "name": "forkserve", **extra}
    )
    return made


@pytest.mark.parametrize(
    ("role", "worker", "generation", "tag"),
    [
        ("master", None, None, "[master]"),
        ("zygote", None, 2, "[zygote gen 2]"),
        ("worker", 3, 1, "[worker 3 gen 1]"),
        ("worker 1", None, None, "[worker 1]"),
    ],
)
def test_text_lines_name_role_worker_and_generation(
    role: str, worker: int | None, generation: int | None, tag: str
) -> None:
    formatter = Formatter(role)
    formatter.worker, formatter.generation = worker, generation
    assert f"] {tag} [INFO] hello world" in formatter.format(record())


def test_a_json_line_is_one_object_with_the_same_facts() -> None:
    formatter = JsonFormatter("worker")
    formatter.worker, formatter.generation = 2, 5
    text = formatter.format(record())
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "hello world"
    assert (line["role"], line["worker"], line["generation"], line["level"]) == ("worker", 2, 5, "INFO")
    assert line["logger"] == "forkserve"
    assert isinstance(line["pid"], int)


def test_json_fields_fill_empty_keys_but_never_replace_the_writer() -> None:
    formatter = JsonFormatter("master")
    line = json.loads(formatter.format(record(fields={"event": "reload_started", "generation": 4, "pid": 1})))
    assert line["event"] == "reload_started"
    assert line["generation"] == 4  # the master has none of its own: the event's fills it
    assert line["pid"] != 1  # the writing process stays the pid


def test_json_exceptions_are_a_key_not_extra_lines() -> None:
    formatter = JsonFormatter("worker")
    try:
        raise ValueError("boom")
    except ValueError as error:
        exc_info = (type(error), error, error.__traceback__)
    line = json.loads(formatter.format(record("failed", (), exc_info=exc_info)))
    assert line["message"] == "failed"
    assert line["exception"].endswith("ValueError: boom")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    saved = {name: logging.getLogger(name).handlers[:] for name in LOGGER_NAMES}
    levels = {
        name: (logging.getLogger(name).level, logging.getLogger(name).propagate) for name in LOGGER_NAMES
    }
    out = io.StringIO()
    yield out
    for name in LOGGER_NAMES:
        target = logging.getLogger(name)
        target.handlers = saved[name]
        target.level, target.propagate = levels[name]


@pytest.mark.parametrize(
    ("log_format", "level", "shown"),
    [("json", "info", True), ("text", "info", False), ("text", "debug", True)],
)
def test_event_lines_are_info_in_json_and_debug_in_text(
    stream: io.StringIO, log_format: str, level: str, shown: bool
) -> None:
    setup = LogSetup(level, "master", None, stream=stream, log_format=log_format)
    log = events.EventLog()
    EventLines(log_format).start(_MasterStub(log))  # type: ignore[arg-type]
    log.emit(events.WORKER_EXITED, "worker 2 was killed", worker_id=2, pid=99, reason="crash")
    setup.close()
    text = stream.getvalue()
    assert bool(text) is shown
    if shown and log_format == "json":
        line = json.loads(text)
        assert (line["event"], line["worker_id"], line["worker_pid"], line["reason"]) == (
            "worker_exited", 2, 99, "crash",
        )  # fmt: skip
        assert line["message"] == "worker 2 was killed"
    elif shown:
        assert "event=worker_exited worker_id=2 pid=99 reason=crash: worker 2 was killed" in text


class _MasterStub:
    def __init__(self, log: events.EventLog) -> None:
        self.events = log


def test_describe_an_event_without_fields() -> None:
    assert describe(FleetEvent("serving", "serving", 0.0)) == "event=serving: serving"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize(
    ("complete", "suffix"),
    [(True, "200 12.50ms"), (False, "200 12.50ms (client gone before the response ended)")],
)
def test_access_line_is_written_at_the_end_with_the_latency(complete: bool, suffix: str) -> None:
    logger = logging.getLogger("test.access")
    capture = _Capture()
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    line = AccessLine(logger)
    line.started = 100.0
    line.info('%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", "/a?b=1", "1.1", 200)
    assert capture.records == []  # nothing yet: the response has only started
    line.write(100.0125, complete=complete)
    line.write(100.5)  # a second end without a new start writes nothing
    [written] = capture.records
    assert written.getMessage() == f'10.0.0.1:5000 - "GET /a?b=1 HTTP/1.1" {suffix}'
    assert written.fields["latency_ms"] == 12.5  # type: ignore[attr-defined]
    assert written.fields["complete"] is complete  # type: ignore[attr-defined]
    logger.removeHandler(capture)
