"""Short tracebacks for boot failures, and the Formatter that uses them, on real raised exceptions."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator

import pytest

from forkserve.common.logs import LOGGER_NAMES, Formatter, LogSetup, short_traceback

DEBUG_HINT = "(the full traceback is shown with --log-level debug)"


# Three frames deep, so a full traceback and a short one differ.
def _innermost() -> None:
    raise ValueError("boom: DATABASE_URL is not set")


def _middle() -> None:
    _innermost()


def _outermost() -> None:
    _middle()


def _bad_import() -> None:
    import forkserve_test_no_such_module  # noqa: F401


def _syntax_error() -> None:
    compile("def create_app(:\n    pass\n", "myapp.py", "exec")


def _chained() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        raise RuntimeError("config lookup failed") from exc


def caught(function: Callable[[], None]) -> BaseException:
    try:
        function()
    except BaseException as exc:  # any exception is the value under test
        return exc
    raise AssertionError(f"{function.__name__} did not raise")


@pytest.mark.parametrize(
    ("function", "last_line", "innermost"),
    [
        (_outermost, "ValueError: boom: DATABASE_URL is not set", "_innermost"),
        (_bad_import, "ModuleNotFoundError: No module named 'forkserve_test_no_such_module'", "_bad_import"),
        (_syntax_error, "SyntaxError: invalid syntax", "myapp.py"),
        (_chained, "RuntimeError: config lookup failed", "_chained"),
    ],
)
def test_short_traceback_is_the_innermost_frame_and_the_error(
    function: Callable[[], None], last_line: str, innermost: str
) -> None:
    text = short_traceback(caught(function))
    lines = text.splitlines()
    assert 1 < len(lines) <= 6
    assert lines[-1] == last_line
    assert innermost in text
    assert "Traceback (most recent call last)" not in text


def test_short_traceback_leaves_out_the_outer_frames() -> None:
    text = short_traceback(caught(_outermost))
    assert "in _innermost" in text
    assert "_middle" not in text
    assert "_outermost" not in text
    assert "test_logs.py" in text


def test_short_traceback_leaves_out_the_cause_of_a_chained_exception() -> None:
    text = short_traceback(caught(_chained))
    assert "KeyError" not in text
    assert "direct cause" not in text


def test_short_traceback_of_an_exception_never_raised_is_its_line() -> None:
    assert short_traceback(KeyError("x")) == "KeyError: 'x'"


@pytest.mark.parametrize("max_lines", [1, 2, 3])
def test_short_traceback_respects_max_lines_keeping_the_end(max_lines: int) -> None:
    text = short_traceback(caught(_syntax_error), max_lines=max_lines)
    lines = text.splitlines()
    assert len(lines) == max_lines
    assert lines[-1] == "SyntaxError: invalid syntax"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, Formatter, io.StringIO]]:
    """A private logger writing through forkserve's Formatter into a StringIO."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    formatter = Formatter("worker 1")
    handler.setFormatter(formatter)
    logger = logging.getLogger("tests.unit.test_logs.captured")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger, formatter, stream
    finally:
        logger.removeHandler(handler)
        handler.close()


def log_exception(logger: logging.Logger, function: Callable[[], None]) -> None:
    try:
        function()
    except Exception:
        logger.exception("the app failed to boot")


def test_formatter_with_short_tracebacks_renders_a_few_lines(
    captured: tuple[logging.Logger, Formatter, io.StringIO],
) -> None:
    logger, formatter, stream = captured
    formatter.short_tracebacks = True
    log_exception(logger, _outermost)
    lines = stream.getvalue().splitlines()
    # The message line, at most six traceback lines, and the hint.
    assert len(lines) <= 8
    assert lines[0].endswith("[worker 1] [ERROR] the app failed to boot")
    assert lines[-2] == "ValueError: boom: DATABASE_URL is not set"
    assert lines[-1] == DEBUG_HINT
    assert "Traceback (most recent call last)" not in stream.getvalue()
    assert "_outermost" not in stream.getvalue()


def test_formatter_without_short_tracebacks_renders_the_full_traceback(
    captured: tuple[logging.Logger, Formatter, io.StringIO],
) -> None:
    logger, formatter, stream = captured
    assert formatter.short_tracebacks is False  # full tracebacks unless asked
    log_exception(logger, _outermost)
    text = stream.getvalue()
    assert "Traceback (most recent call last)" in text
    for frame in ("_outermost", "_middle", "_innermost"):
        assert f"in {frame}" in text
    assert text.rstrip("\n").endswith("ValueError: boom: DATABASE_URL is not set")
    assert "--log-level debug" not in text


def test_formatter_short_tracebacks_leaves_records_without_exceptions_alone(
    captured: tuple[logging.Logger, Formatter, io.StringIO],
) -> None:
    logger, formatter, stream = captured
    formatter.short_tracebacks = True
    logger.info("listening on %s", "127.0.0.1:8000")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("[worker 1] [INFO] listening on 127.0.0.1:8000")
    assert "--log-level debug" not in stream.getvalue()


def test_formatter_tags_each_line_with_its_role() -> None:
    formatter = Formatter("master")
    record = logging.makeLogRecord({"msg": "reloading", "levelname": "INFO", "levelno": logging.INFO})
    assert "[master] [INFO] reloading" in formatter.format(record)
    formatter.role = "zygote 2"
    # The role is read at format time, so set_role() after a fork retags the next line.
    assert "[zygote 2] [INFO] reloading" in formatter.format(record)


def test_formatter_short_traceback_from_a_made_record() -> None:
    exc = caught(_outermost)
    record = logging.makeLogRecord(
        {
            "msg": "boot failed",
            "levelname": "ERROR",
            "levelno": logging.ERROR,
            "exc_info": (type(exc), exc, exc.__traceback__),
        }
    )
    formatter = Formatter("worker 2")
    formatter.short_tracebacks = True
    text = formatter.format(record)
    assert text.splitlines()[-1] == DEBUG_HINT
    assert "ValueError: boom: DATABASE_URL is not set" in text
    assert "_middle" not in text


@pytest.fixture
def restored_loggers() -> Iterator[None]:
    """LogSetup configures forkserve's and uvicorn's loggers: put them back as they were."""
    saved = {}
    for name in LOGGER_NAMES:
        target = logging.getLogger(name)
        saved[name] = (list(target.handlers), target.level, target.propagate)
    try:
        yield
    finally:
        for name, (handlers, level, propagate) in saved.items():
            target = logging.getLogger(name)
            for handler in list(target.handlers):
                target.removeHandler(handler)
            for handler in handlers:
                target.addHandler(handler)
            target.setLevel(level)
            target.propagate = propagate


@pytest.mark.parametrize(
    ("level", "short"),
    [
        ("critical", True),
        ("error", True),
        ("warning", True),
        ("info", True),
        ("debug", False),
        ("trace", False),
    ],
)
def test_log_setup_shortens_boot_tracebacks_above_debug(
    restored_loggers: None, level: str, short: bool
) -> None:
    stream = io.StringIO()
    setup = LogSetup(level, "worker 1", None, stream=stream)
    try:
        assert setup.formatter.short_tracebacks is short
        setup.boot_finished()
        # Once the app serves, its errors get full tracebacks at every level.
        assert setup.formatter.short_tracebacks is False
    finally:
        setup.close()


def test_log_setup_writes_one_line_per_record_through_uvicorn_error(restored_loggers: None) -> None:
    stream = io.StringIO()
    setup = LogSetup("info", "worker 1", None, stream=stream)
    try:
        logging.getLogger("uvicorn.error").info("started")
        logging.getLogger("forkserve").debug("below the level")
    finally:
        setup.close()
    lines = stream.getvalue().splitlines()
    # uvicorn.error propagates to the "uvicorn" handler exactly once, and debug is filtered out.
    assert len(lines) == 1
    assert lines[0].endswith("[worker 1] [INFO] started")
