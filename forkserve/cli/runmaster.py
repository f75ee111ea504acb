"""The command line's master, run in a fresh interpreter that never loaded the parser.

``forkserve APP ...`` parses and checks its settings with click and the settings' sources (a bad
one is one line and exit 2 from there), then replaces itself with ``os.execve`` by
``python -m forkserve.cli.runmaster``, which receives the parsed settings as plain data and runs
the master. An exec keeps the pid, the standard streams, the environment, the working directory
and the inheritable fds (a USR2 predecessor's listening sockets, systemd's LISTEN_FDS), and the
exit status is the master's: a shell, systemd, a container runtime or a pid file see one process.
What the long-running master no longer holds is click and what only parsing needed, about 1.9 MiB
(docs/design.md, "Memory"); dropping the modules in place gave back 0.5, the rest stays in
pymalloc's arenas.

The settings travel in the environment, as the zygote's spec does (``FORKSERVE_MASTER_SPEC``):
they may hold --keyfile-password, and any user can read a process's argv. The new master takes
the variable out of its environment first, so no child inherits it.

When the exec itself fails, the master runs in the first process, after one warning.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from forkserve.common.logs import LogSetup
from forkserve.config.plain import from_plain, to_plain
from forkserve.config.settings import Config
from forkserve.errors import ConfigError, ForkserveError
from forkserve.master.master import Master

SPEC_VARIABLE = "FORKSERVE_MASTER_SPEC"
MODULE = "forkserve.cli.runmaster"


def fail(error: ForkserveError) -> NoReturn:
    """A user's mistake: one line (and the error's detail lines, indented), the error's exit code."""
    print(f"forkserve: error: {error}", file=sys.stderr)
    for line in error.detail.splitlines():
        print(f"  {line}", file=sys.stderr)
    sys.stderr.flush()
    sys.exit(error.exit_code)


def spec_text(app: str, config: Config, notes: Sequence[str], argv: Sequence[str]) -> str:
    """What the new master needs: the app, the parsed settings, the parser's info lines (logged
    once the master's logs are set up) and the user's arguments (run again on USR2)."""
    data = {
        "app": app,
        "settings": to_plain(config, master_hooks=True),
        "notes": list(notes),
        "argv": list(argv),
    }
    return json.dumps(data)


def exec_argv(executable: str, interpreter_flags: Sequence[str]) -> list[str]:
    """The new master's command line: this interpreter, with the options it was started with
    (-X, -W, -O, -I...), running this module."""
    return [executable, *interpreter_flags, "-m", MODULE]


def _interpreter_flags() -> list[str]:
    # The helper multiprocessing and the test suite use; private, so absent means "none".
    flags: Callable[[], list[str]] | None = getattr(subprocess, "_args_from_interpreter_flags", None)
    return list(flags()) if flags is not None else []


def reexec(app: str, config: Config, notes: Sequence[str], argv: Sequence[str]) -> str:
    """Replace this process with a master that has no parser loaded. Returns only when that could
    not be done, with the reason (the caller then runs the master here)."""
    if not sys.executable:
        return "the path of the Python interpreter is unknown (sys.executable is empty)"
    try:
        text = spec_text(app, config, notes, argv)
    except (ForkserveError, TypeError, ValueError) as exc:
        return f"the settings cannot be passed on: {exc}"
    environ = dict(os.environ)
    environ[SPEC_VARIABLE] = text
    # What this process has buffered would be lost with its image.
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    try:
        os.execve(sys.executable, exec_argv(sys.executable, _interpreter_flags()), environ)
    except OSError as exc:
        return f"exec {sys.executable}: {exc.strerror or exc}"
    return "exec returned"  # only a stand-in for os.execve (the tests') gets here


def serve(app: str, config: Config, notes: Sequence[str], argv: Sequence[str]) -> NoReturn:
    """Run the master for the command line: in a fresh interpreter, else (exec failed) here."""
    why = reexec(app, config, notes, argv)
    warning = (
        f"could not start the master without the command line's parser ({why}); "
        "running it in this process, which holds about 2 MiB more"
    )
    run(app, config, notes, argv, warning=warning)


def run(
    app: str, config: Config, notes: Sequence[str], argv: Sequence[str], *, warning: str | None = None
) -> NoReturn:
    try:
        logs = LogSetup.from_config(config, "master")
        logger = logging.getLogger("forkserve")
        for note in notes:
            logger.info("%s", note)
        if warning is not None:
            logger.warning("%s", warning)
        master = Master(app, config, logs=logs, owns_process=True, argv=list(argv))
        from setproctitle import setproctitle

        setproctitle(f"forkserve: master [{app}]")
        sys.exit(master.run())
    except ForkserveError as error:
        fail(error)


def read_spec(text: str | None) -> tuple[str, Config, list[str], list[str]]:
    if text is None:
        raise ConfigError(
            f"{MODULE} is started by `forkserve APP` itself, with {SPEC_VARIABLE} set; run forkserve APP"
        )
    data = json.loads(text)
    return data["app"], from_plain(data["settings"]), data["notes"], data["argv"]


def main() -> NoReturn:
    try:
        app, config, notes, argv = read_spec(os.environ.pop(SPEC_VARIABLE, None))
    except ForkserveError as error:
        fail(error)
    run(app, config, notes, argv)


if __name__ == "__main__":
    main()
