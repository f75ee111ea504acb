"""The app's own logging and output, in forkserve's one stream.

Theory of operation. forkserve configures only its own and uvicorn's loggers (``LogSetup``), so
an app's records would otherwise meet Python's defaults: the root logger at WARNING (INFO
dropped) with no handler, and ``logging.lastResort`` writing the bare message to stderr, untagged,
never JSON and never into ``--log-file``. The zygote, which imports the app, therefore:

* before the import (``AppLogging.before_import``): sets the root logger to ``--log-level`` and
  makes forkserve's handler the last resort, so records logged *while* the app imports come out
  formatted, without putting a handler on the root logger (that would turn the app's own
  ``logging.basicConfig()`` into a no-op);
* after it (``after_import``): if the root logger still has no handler, forkserve's handler goes
  on it, and every logger of the app (named or root) that does not stop propagation writes
  through it; if the app configured the root logger itself (``basicConfig``, ``dictConfig``, a
  handler of its own), its configuration is left as it is, and the root level is given back.

``--log-config`` configures logging from a file instead (``apply_log_config``), in every process;
forkserve then leaves the app's loggers alone. ``--capture-output`` replaces ``sys.stdout`` and
``sys.stderr`` with ``LogStream``s, one record per line, and points fds 1 and 2 at the error log
file so what C code or a subprocess writes lands there too (gunicorn's ``dup2``).

Workers are forked from the zygote and inherit all of it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import logging.config
import os
import sys
import threading
from typing import Any

from forkserve.common.logs import LogSetup, ReopenableFileHandler
from forkserve.errors import ConfigError

logger = logging.getLogger("forkserve")


def apply_log_config(path: str) -> None:
    """dictConfig from .json/.yaml/.yml, fileConfig (ini) otherwise; a bad file is a ConfigError."""
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as file:
                _dict_config(json.load(file))
        elif path.endswith((".yaml", ".yml")):
            try:
                import yaml  # type: ignore[import-untyped]  # optional; no stubs needed for one call
            except ImportError:
                raise ConfigError(
                    f"--log-config {path}: a YAML file needs PyYAML: pip install pyyaml, or write it as JSON"
                ) from None
            with open(path, encoding="utf-8") as file:
                _dict_config(yaml.safe_load(file))
        else:
            # forkserve's own loggers exist already; the file configures what it names.
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except ConfigError:
        raise
    except Exception as exc:  # json, yaml, configparser and logging.config each raise their own
        # dictConfig says which entry failed and keeps why in the cause ("No module named ...").
        why = f" ({exc.__cause__})" if exc.__cause__ else ""
        raise ConfigError(f"--log-config {path}: {type(exc).__name__}: {exc}{why}") from None


def _dict_config(data: Any) -> None:
    if not isinstance(data, dict):
        raise ValueError("expected a mapping at the top (logging's dictConfig schema)")
    # As for fileConfig: a file that does not name forkserve's loggers must not silence them.
    data.setdefault("disable_existing_loggers", False)
    data.setdefault("version", 1)
    logging.config.dictConfig(data)


class AppLogging:
    """Hands the app's loggers to forkserve's handler around the app's import (module docstring)."""

    def __init__(self, logs: LogSetup, log_config: str | None) -> None:
        self.logs = logs
        self.active = log_config is None
        self._root_level = logging.WARNING
        self._last_resort: logging.Handler | None = None
        self._marker = max(1, logs.level - 1)

    def before_import(self) -> None:
        if not self.active:
            return
        root = logging.getLogger()
        self._root_level = root.level
        # One below the configured level: the same records pass, and a level the app sets itself
        # (basicConfig(level=INFO) under --log-level info) can be told apart from this one.
        root.setLevel(self._marker)
        self._last_resort = logging.lastResort
        logging.lastResort = self.logs.handler

    def after_import(self) -> None:
        if not self.active:
            return
        logging.lastResort = self._last_resort
        root = logging.getLogger()
        app_set_level = root.level != self._marker
        if root.handlers:
            if not app_set_level:
                root.setLevel(self._root_level)
            logger.debug("the app configured the root logger itself; its records keep its handlers")
            return
        if not app_set_level:
            root.setLevel(self.logs.level)
        root.addHandler(self.logs.handler)
        self.logs.owns_root = True


class LogStream(io.TextIOBase):
    """A text stream whose every line becomes one log record (print() in, records out).

    A part line waits for its newline (up to ``LIMIT`` characters). Logging from inside logging
    (a handler that reports its own failure on stderr) would recurse: such a write goes to the
    original stream instead.
    """

    LIMIT = 64 * 1024

    def __init__(self, target: logging.Logger, level: int, fd: int, fallback: Any) -> None:
        self.target = target
        self.level = level
        self.fd = fd
        self.fallback = fallback
        self._pending = ""
        self._lock = threading.Lock()
        self._busy = threading.local()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.fd

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if getattr(self._busy, "on", False):
            with contextlib.suppress(Exception):
                self.fallback.write(text)
            return len(text)
        with self._lock:
            pending = self._pending + text
            *lines, self._pending = pending.split("\n")
            if len(self._pending) > self.LIMIT:
                lines.append(self._pending)
                self._pending = ""
        self._busy.on = True
        try:
            for line in lines:
                self.target.log(self.level, "%s", line.rstrip("\r"))
        finally:
            self._busy.on = False
        return len(text)

    def flush(self) -> None:
        pass  # a part line is written when its newline comes: a line is never split


def capture_output(logs: LogSetup) -> None:
    """--capture-output: the app's stdout and stderr into the error log, a record per line."""
    handler = logs.handler
    if isinstance(handler, ReopenableFileHandler):

        def point_fds_at_log() -> None:
            stream = handler.stream
            if stream is not None:
                for fd in (1, 2):
                    with contextlib.suppress(OSError):
                        os.dup2(stream.fileno(), fd)

        point_fds_at_log()
        logs.on_reopen.append(point_fds_at_log)
    for name, level, fd, original in (
        ("forkserve.stdout", logging.INFO, 1, sys.__stdout__),
        ("forkserve.stderr", logging.ERROR, 2, sys.__stderr__),
    ):
        target = logging.getLogger(name)
        # Output is written whatever --log-level says, as gunicorn writes it.
        target.setLevel(1)
        stream = LogStream(target, level, fd, original)
        if fd == 1:
            sys.stdout = stream
        else:
            sys.stderr = stream
