"""One log stream for every process: the same format, each line tagged with its process's role.

Every process (master, zygote, workers) writes whole lines to the same inherited stderr, or appends
to the same ``--log-file`` (``O_APPEND``), so lines interleave but never tear. Only forkserve's and
uvicorn's loggers are configured, never the root logger, so an application that embeds forkserve
keeps its own logging.

While an app boots, an exception is logged as its last frame and message (at most six lines) unless
the level is debug: a user who mistyped an import wants the one line that says so, not forty lines
of importlib.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import traceback
from types import TracebackType
from typing import TextIO

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

FORMAT = "%(asctime)s [%(process)d] [%(role)s] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
LOGGER_NAMES = ("forkserve", "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
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
        self.short_tracebacks = False

    def format(self, record: logging.LogRecord) -> str:
        record.role = self.role
        if self.short_tracebacks and isinstance(record.msg, str) and record.msg.startswith("Traceback ("):
            # A copy: other handlers of the same record keep the full text.
            record = logging.makeLogRecord(record.__dict__)
            record.msg = (
                shorten_traceback_text(record.msg) + "\n(the full traceback is shown with --log-level debug)"
            )
        return super().format(record)

    def formatException(self, ei: ExcInfo | tuple[None, None, None]) -> str:
        if self.short_tracebacks and ei[1] is not None:
            return short_traceback(ei[1]) + "\n(the full traceback is shown with --log-level debug)"
        return super().formatException(ei)


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


class LogSetup:
    def __init__(self, level: str, role: str, log_file: str | None, stream: TextIO | None = None) -> None:
        self.level = LEVELS[level]
        self.formatter = Formatter(role)
        self.formatter.short_tracebacks = self.level > logging.DEBUG
        self.handler: logging.Handler
        if log_file:
            self.handler = ReopenableFileHandler(log_file, mode="a", encoding="utf-8")
        else:
            self.handler = logging.StreamHandler(stream or sys.stderr)
        self.handler.setFormatter(self.formatter)
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

    def set_role(self, role: str) -> None:
        self.formatter.role = role

    def boot_finished(self) -> None:
        """Once the app serves, its errors get their full tracebacks again."""
        self.formatter.short_tracebacks = False

    def reopen(self) -> None:
        if isinstance(self.handler, ReopenableFileHandler):
            self.handler.reopen()

    def close(self) -> None:
        for name in ("forkserve", "uvicorn"):
            logging.getLogger(name).removeHandler(self.handler)
        self.handler.close()
