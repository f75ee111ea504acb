"""One log stream for every process: the same format, each line tagged with its process's role.

Every process (master, zygote, workers) writes whole lines to the same inherited stderr, or appends
to the same ``--log-file`` (``O_APPEND``), so lines interleave but never tear: each record is one
``write()``. The app's own ``print()`` output goes to the inherited stdout, which workers make
line-buffered (``line_buffered_stdio``) for the same reason; block buffering would flush 8 KiB
chunks that cut lines in the middle, with another worker's output in between. Here only
forkserve's and uvicorn's loggers are configured, never the root logger, so an application that
embeds forkserve keeps its own logging; the zygote hands an app that configured none to this
stream (``forkserve.common.applogs``). The access log may have a handler of its own
(``--access-logfile``).

Each line names the process that wrote it: its role, pid, and for a worker its number and
generation (``[worker 2 gen 3]``). ``--log-format json`` writes the same as one JSON object per
line; a record may carry structured ``fields`` (a lifecycle event, an access line) which the JSON
form adds as keys and the text form leaves to the message.

While an app boots, an exception is logged as its last frame and message (at most six lines) unless
the level is debug: a user who mistyped an import wants the one line that says so, not forty lines
of importlib.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import sys
import time
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

from forkserve.errors import ConfigError

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

FORMAT = "%(asctime)s [%(process)d] [%(role)s] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
LOGGER_NAMES = ("forkserve", "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
# uvicorn's access lines, and forkserve's in a --access-logformat (forkserve.http.accesslog).
ACCESS_LOGGERS = ("uvicorn.access", "forkserve.access")
LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}

logger = logging.getLogger("forkserve")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def short_traceback(exc: BaseException, max_lines: int = 6) -> str:
    """The innermost frame and the error itself, the part of a traceback a user acts on."""
    lines: list[str] = []
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        lines.extend(traceback.format_list(frames[-1:])[0].rstrip("\n").splitlines())
    lines.extend("".join(traceback.format_exception_only(type(exc), exc)).rstrip("\n").splitlines())
    return "\n".join(lines[-max_lines:])


_FRAME = re.compile(r'^\s+File "')


def shorten_traceback_text(text: str, max_lines: int = 6) -> str:
    """The same cut as short_traceback, for a traceback that arrives already formatted as text
    (Starlette sends lifespan failures to the server that way)."""
    lines = text.rstrip("\n").splitlines()
    frames = [i for i, line in enumerate(lines) if _FRAME.match(line)]
    if not frames:
        return text
    last = frames[-1]
    # The frame line, its source line if shown, then the exception (everything after).
    kept = lines[last:]
    if len(kept) > max_lines:
        # Keep the frame's location and the end, where the exception's own line is.
        kept = kept[:1] + kept[-(max_lines - 1) :]
    return "\n".join(kept)


class Formatter(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__(FORMAT, DATE_FORMAT)
        self.role = role
        # A worker's number and generation, a zygote's generation; None where they do not apply.
        self.worker: int | None = None
        self.generation: int | None = None
        self.short_tracebacks = False

    @property
    def tag(self) -> str:
        parts = [self.role]
        if self.worker is not None:
            parts.append(str(self.worker))
        if self.generation is not None:
            parts.append(f"gen {self.generation}")
        return " ".join(parts)

    def _shortened(self, record: logging.LogRecord) -> logging.LogRecord:
        if self.short_tracebacks and isinstance(record.msg, str) and record.msg.startswith("Traceback ("):
            # A copy: other handlers of the same record keep the full text.
            record = logging.makeLogRecord(record.__dict__)
            record.msg = (
                shorten_traceback_text(record.msg) + "\n(the full traceback is shown with --log-level debug)"
            )
        return record

    def format(self, record: logging.LogRecord) -> str:
        record.role = self.tag
        return super().format(self._shortened(record))

    def formatException(self, ei: ExcInfo | tuple[None, None, None]) -> str:
        if self.short_tracebacks and ei[1] is not None:
            return short_traceback(ei[1]) + "\n(the full traceback is shown with --log-level debug)"
        return super().formatException(ei)


class JsonFormatter(Formatter):
    """One JSON object per line, with the same facts as the text form, as keys."""

    def format(self, record: logging.LogRecord) -> str:
        record = self._shortened(record)
        line: dict[str, object] = {
            "time": self._time(record),
            "level": record.levelname,
            "role": self.role,
            "pid": record.process,
            "worker": self.worker,
            "generation": self.generation,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                # An event's generation fills the master's empty one; the writer's pid stays.
                if line.get(key) is None:
                    line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)

    @staticmethod
    def _time(record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        zone = time.strftime("%z", time.localtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}{zone[:3]}:{zone[3:]}"


def line_buffered_stdio() -> None:
    """Make stdout and stderr write each line whole, in one write() at its newline.

    Block buffering (the default for a file or pipe) cuts lines at 8 KiB boundaries; unbuffered
    output (``PYTHONUNBUFFERED``, ``-u``) is worse: ``print()`` writes the text and its newline
    in two calls, and another process's line lands between them.
    """
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            with contextlib.suppress(Exception):
                stream.reconfigure(line_buffering=True, write_through=False)


class ReopenableFileHandler(logging.FileHandler):
    """A file handler that logrotate's ``postrotate: kill -USR1`` can point at the new file.

    A log that cannot be written (disk full, a removed directory) must never take a worker down,
    nor flood stderr with a traceback per line as logging's default does: the first failure is
    reported in one line on stderr, the rest are counted silently.
    """

    failures = 0

    def handleError(self, record: logging.LogRecord) -> None:
        self.failures += 1
        if self.failures == 1:
            error = sys.exc_info()[1]
            with contextlib.suppress(Exception):
                sys.stderr.write(
                    f"forkserve: cannot write the log file {self.baseFilename}: {error}; "
                    "serving goes on; further log lines that cannot be written are dropped\n"
                )
                sys.stderr.flush()

    def reopen(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()


FORMATS = ("text", "json")

# uvicorn's colours for level names (its DefaultFormatter), for --use-colors.
_COLORS = {
    "TRACE": "\x1b[34m",
    "DEBUG": "\x1b[36m",
    "INFO": "\x1b[32m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31m",
    "CRITICAL": "\x1b[91m",
}


class ColorFormatter(Formatter):
    def format(self, record: logging.LogRecord) -> str:
        color = _COLORS.get(record.levelname)
        if color is None:
            return super().format(record)
        record = logging.makeLogRecord(record.__dict__)
        record.levelname = f"{color}{record.levelname}\x1b[0m"
        return super().format(record)


def _handler(destination: str | None, stream: TextIO, flag: str) -> logging.Handler:
    """A file (appended, reopenable), or STREAM for None or '-'."""
    if destination and destination != "-":
        try:
            return ReopenableFileHandler(destination, mode="a", encoding="utf-8")
        except OSError as error:
            # A mistyped or unwritable path is the user's to fix before anything starts.
            raise ConfigError(
                f"{flag} {destination}: cannot open it for appending ({error.strerror or error}); "
                "create its directory, give the server's user write access, or pass - for stderr"
            ) from None
    return logging.StreamHandler(stream)


class LogSetup:
    """forkserve's and uvicorn's loggers, writing to the error log and (apart, if asked) the access log."""

    def __init__(
        self,
        level: str,
        role: str,
        log_file: str | None,
        stream: TextIO | None = None,
        log_format: str = "text",
        *,
        access_file: str | None = None,
        access_raw: bool = False,
        use_colors: bool | None = None,
    ) -> None:
        self.level = LEVELS[level]
        self.log_format = log_format
        self.handler = _handler(log_file, stream or sys.stderr, "--error-logfile")
        if use_colors is None:
            out = getattr(self.handler, "stream", None)
            use_colors = bool(getattr(out, "isatty", lambda: False)()) and log_format == "text"
        self.formatter = (
            JsonFormatter(role)
            if log_format == "json"
            else ColorFormatter(role)
            if use_colors
            else Formatter(role)
        )
        self.formatter.short_tracebacks = self.level > logging.DEBUG
        self.handler.setFormatter(self.formatter)
        # While the master dups the error log onto fds 1 and 2 (--capture-output), redone on reopen.
        self.on_reopen: list[Callable[[], None]] = []
        # Set by the zygote when it hands the app's loggers to this setup (forkserve.common.applogs).
        self.owns_root = False
        for name in LOGGER_NAMES:
            target = logging.getLogger(name)
            for old in list(target.handlers):
                target.removeHandler(old)
            target.setLevel(self.level)
            # uvicorn.error and friends propagate to "uvicorn"; one handler there would double lines.
            if name in ("forkserve", "uvicorn"):
                target.addHandler(self.handler)
                target.propagate = False
            else:
                target.propagate = True
        access_own = logging.getLogger("forkserve.access")
        for old in list(access_own.handlers):
            access_own.removeHandler(old)
        access_own.propagate = True
        self.access_handler: logging.Handler | None = None
        if access_file is not None:
            # Apart from the error log: uvicorn.access stops propagating to "uvicorn".
            self.access_handler = _handler(access_file, sys.stdout, "--access-logfile")
            self.access_handler.setFormatter(
                logging.Formatter("%(message)s") if access_raw and log_format == "text" else self.formatter
            )
            for name in ACCESS_LOGGERS:
                access = logging.getLogger(name)
                access.addHandler(self.access_handler)
                access.propagate = False
                # An access log asked for by name is written whatever --log-level says, as gunicorn
                # writes its accesslog whatever its loglevel: the level is the error log's.
                access.setLevel(min(self.level, logging.INFO))

    @classmethod
    def from_config(cls, config: Any, role: str) -> LogSetup:
        """The setup for a process of a server with these settings (a forkserve Config)."""
        access_on = config.access_log or config.access_logfile is not None
        setup = cls(
            config.log_level,
            role,
            config.error_logfile or config.log_file,
            log_format=config.log_format,
            access_file=config.access_logfile if access_on else None,
            access_raw=config.access_logformat is not None,
            use_colors=config.use_colors,
        )
        if config.log_config:
            # Only then: it loads logging.config (2 MiB with pickle and socketserver) into the master.
            from forkserve.common import applogs

            applogs.apply_log_config(config.log_config)
        return setup

    @property
    def files(self) -> list[str]:
        """The files this setup writes (handed to --user, reopened on USR1)."""
        return [
            handler.baseFilename
            for handler in (self.handler, self.access_handler)
            if isinstance(handler, ReopenableFileHandler)
        ]

    def set_role(self, role: str, *, worker: int | None = None, generation: int | None = None) -> None:
        self.formatter.role = role
        self.formatter.worker = worker
        self.formatter.generation = generation

    def boot_finished(self) -> None:
        """Once the app serves, its errors get their full tracebacks again."""
        self.formatter.short_tracebacks = False

    def reopen(self) -> None:
        for handler in (self.handler, self.access_handler):
            if isinstance(handler, ReopenableFileHandler):
                handler.reopen()
        for hook in self.on_reopen:
            hook()

    def close(self) -> None:
        for name in ("forkserve", "uvicorn"):
            logging.getLogger(name).removeHandler(self.handler)
        if self.owns_root:
            logging.getLogger().removeHandler(self.handler)
        self.handler.close()
        if self.access_handler is not None:
            for name in ACCESS_LOGGERS:
                logging.getLogger(name).removeHandler(self.access_handler)
            self.access_handler.close()
