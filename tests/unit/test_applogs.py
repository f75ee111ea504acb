"""The app's output as records (LogStream), --log-config files, and the settings that name logs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from forkserve.common.applogs import LogStream, apply_log_config
from forkserve.config.sources import Source, resolve
from forkserve.errors import ConfigError


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def collected() -> tuple[logging.Logger, Collect]:
    target = logging.getLogger("test.applogs")
    target.propagate = False
    target.setLevel(1)  # as capture_output sets its loggers: output is never filtered
    handler = Collect()
    target.addHandler(handler)
    yield target, handler
    target.removeHandler(handler)


@pytest.mark.parametrize(
    ("writes", "lines"),
    [
        (["one\n"], ["one"]),
        (["a", "b", "\n"], ["ab"]),  # print() writes the text, then its end: one line
        (["x\ny\nz"], ["x", "y"]),  # the part line waits for its newline
        (["crlf\r\n"], ["crlf"]),
        (["\n"], [""]),
    ],
)
def test_log_stream_one_record_per_line(collected, writes, lines) -> None:
    target, handler = collected
    stream = LogStream(target, logging.INFO, 1, sys.__stdout__)
    for text in writes:
        assert stream.write(text) == len(text)
    stream.flush()
    assert handler.lines == lines


def test_log_stream_bounds_a_line_without_newline(collected) -> None:
    target, handler = collected
    stream = LogStream(target, logging.INFO, 1, sys.__stdout__)
    stream.write("x" * (LogStream.LIMIT + 1))
    assert [len(line) for line in handler.lines] == [LogStream.LIMIT + 1]


def test_log_stream_written_to_from_inside_logging_goes_to_the_fallback(collected) -> None:
    target, _ = collected
    fallback: list[str] = []

    class Writer:
        def write(self, text: str) -> None:
            fallback.append(text)

    stream = LogStream(target, logging.INFO, 2, Writer())

    class Reentrant(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stream.write("from a handler\n")  # as a failing handler reports itself on stderr

    handler = Reentrant()
    target.addHandler(handler)
    try:
        stream.write("hello\n")
    finally:
        target.removeHandler(handler)
    assert fallback == ["from a handler\n"]


def test_log_stream_takes_text_only(collected) -> None:
    stream = LogStream(collected[0], logging.INFO, 1, sys.__stdout__)
    with pytest.raises(TypeError):
        stream.write(b"bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.json", "{not json", "JSONDecodeError"),
        ("list.json", "[1, 2]", "expected a mapping"),
        (
            "bad.yaml",
            "version: 1\nhandlers: {x: {class: no.such.Handler}}\n",
            "Unable to configure handler 'x'",
        ),
        ("bad.ini", "[loggers]\nkeys=root\n", "KeyError"),
    ],
)
def test_a_bad_log_config_is_a_config_error(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        apply_log_config(str(path))
    assert str(error.value).startswith(f"--log-config {path}: ") and message in str(error.value)
    assert error.value.exit_code == 2


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"error_logfile": "a.log", "log_file": "b.log"}, "name two error logs"),
        ({"error_logfile": "a.log", "log_file": "a.log"}, None),
        ({"access_logformat": "%(s)d"}, "not a valid format"),
        ({"access_logformat": "no atoms"}, "no atom in it"),
        ({"log_config": "/nonexistent/logging.json"}, "no such file"),
        ({"ws_per_message_deflate": "false"}, None),
        ({"use_colors": None}, None),
    ],
)
def test_log_settings(values, problem) -> None:
    if problem is None:
        resolve([Source("kwargs", values)])
        return
    with pytest.raises(ConfigError, match=problem):
        resolve([Source("kwargs", values)])
