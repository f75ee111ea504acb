"""The library API: ``forkserve.run(app, workers=4)`` from any script or service."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from forkserve.common.logs import LogSetup
from forkserve.config import gunicorn
from forkserve.config.file import discovered_source, file_source
from forkserve.config.settings import Config
from forkserve.config.sources import Source, env_source, resolve
from forkserve.master.master import Master

# gunicorn's flags from the environment (gunicorn reads them below its command line).
ENV_ARGS = "GUNICORN_CMD_ARGS"


def build_config(
    settings: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    cli: bool = False,
    cwd: Path | None = None,
    gunicorn_flags: Mapping[str, Any] | None = None,
    env_args: Mapping[str, Any] | None = None,
    env_gunicorn_flags: Mapping[str, Any] | None = None,
    notes: list[str] | None = None,
) -> tuple[Config, dict[str, str]]:
    """defaults < config file < FORKSERVE_* environment < the caller's settings (kwargs or flags).

    The file is ``config`` (``-c``, ``FORKSERVE_CONFIG``, ``config=``): TOML, or a gunicorn.conf.py
    (Python) when its name ends in .py. Without one, the command line (``cli=True``) reads the
    [tool.forkserve] table of CWD/pyproject.toml if there is one, else CWD/gunicorn.conf.py, as
    gunicorn does. GUNICORN_FLAGS are gunicorn's own flags (``-k``, ``--preload``...), ranked as
    flags. ENV_ARGS and ENV_GUNICORN_FLAGS are the flags of ``GUNICORN_CMD_ARGS``, read as gunicorn
    reads them: above the file, below the command line (and below ``FORKSERVE_*``). The info lines
    about gunicorn settings forkserve does not need go to NOTES (logged now when it is None).
    """
    environ = os.environ if environ is None else environ
    env = env_source(environ)
    caller = Source("cli" if cli else "kwargs", settings)
    named = settings.get("config") or environ.get("FORKSERVE_CONFIG") or (env_args or {}).get("config")
    if isinstance(named, os.PathLike):
        named = os.fspath(named)
    sources = [env, caller]
    translations: list[gunicorn.Translation] = []
    if env_args:
        sources.insert(0, Source("cli", env_args, label=ENV_ARGS, where=ENV_ARGS))
    if env_gunicorn_flags:
        flags, translation = gunicorn.flag_source(env_gunicorn_flags, where=ENV_ARGS)
        sources.insert(0, flags)
        translations.append(translation)
    if gunicorn_flags:
        flags, translation = gunicorn.flag_source(gunicorn_flags)
        sources.insert(sources.index(caller), flags)
        translations.append(translation)
    if isinstance(named, str) and named:
        if gunicorn.is_python_config(named):
            found, translation = gunicorn.python_file_source(named)
            translations.insert(0, translation)
            sources.insert(0, found)
        else:
            sources.insert(0, file_source(named))
    elif cli and not named:
        directory = cwd or Path.cwd()
        found_toml = discovered_source(directory)
        if found_toml is not None:
            sources.insert(0, found_toml)
        elif (directory / gunicorn.CONFIG_NAME).is_file():
            path = str(directory / gunicorn.CONFIG_NAME)
            found, translation = gunicorn.python_file_source(path)
            translation.notes.insert(0, f"reading {path} (found in the working directory, as gunicorn does)")
            translations.insert(0, translation)
            sources[:0] = [found, Source("kwargs", {"config": path}, label="found in the working directory")]
    config, origins = resolve(sources)
    if gunicorn.trusted_proxies(translations, config, origins):
        config, origins = resolve(sources)
    if config.config and gunicorn.is_python_config(config.config):
        # The zygote reads the file again for the workers' hooks, after the master's --chdir.
        config = dataclasses.replace(config, config=os.path.abspath(config.config))
    for translation in translations:
        gunicorn.apply_environ(translation)
        for note in translation.notes:
            if notes is None:
                logging.getLogger("forkserve").info("%s", note)
            else:
                notes.append(note)
    return config, origins


class Server:
    """A forkserve server you start and stop yourself (``run()`` in a thread, ``stop()`` from another).

    ``handle_signals=False`` leaves the host's signal handlers alone: the host calls ``stop()``,
    ``reload()`` or ``scale()``. ``run()`` blocks until the server stops and raises a
    ``ForkserveError`` subclass (carrying ``exit_code``) when it could not start or had to stop.
    """

    def __init__(self, app: Any, *, handle_signals: bool = True, **settings: Any) -> None:
        self.config, self.origins = build_config(settings)
        # An app object is served by a zygote forked from this process: the master is handed its code.
        # Imported here, not at the top: the command line's master (an import string) never runs it.
        from forkserve.zygote.zygote import run as run_zygote

        self.master = Master(app, self.config, handle_signals=handle_signals, run_zygote=run_zygote)

    def run(self) -> int:
        return self.master.run()

    def stop(self, graceful: bool = True) -> None:
        self.master.stop(graceful)

    def reload(self) -> None:
        self.master.reload()

    def scale(self, delta: int) -> None:
        self.master.scale(delta)

    def wait_started(self, timeout: float | None = None) -> bool:
        """True once a worker serves (or the server has already stopped); False on timeout."""
        return self.master.started.wait(timeout)


def run(app: Any, *, handle_signals: bool = True, **settings: Any) -> int:
    """Serve ``app`` (an ASGI app object, or an import string ``"module:attr"``) until stopped.

    Settings are the keyword forms of the command-line flags (``workers=4``, ``bind="0.0.0.0:8000"``,
    ``graceful_timeout=10``, see docs/configuration.md). Signal handlers are installed only when
    called on the main thread, and the previous ones are restored on return. An app object is
    served by forking (no re-import on HUP); an import string gets a fresh interpreter per
    generation, so HUP loads new code.
    """
    on_main_thread = threading.current_thread() is threading.main_thread()
    server = Server(app, handle_signals=handle_signals and on_main_thread, **settings)
    return server.run()


__all__ = ["LogSetup", "Server", "build_config", "run"]
