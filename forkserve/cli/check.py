"""``--check-config``: load the settings, import the app in a child process, say whether it boots.

For CI and Docker builds: a typo in the config or an import error fails the build, not the first
deploy. The app is imported in a fresh interpreter, as the zygote imports it (after --chdir,
--app-dir and --env-file), so the check neither imports the app into this process (which would
leave its import-time side effects behind) nor binds a socket or starts a worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from forkserve.config.settings import Config
from forkserve.errors import AppError

# An app whose import hangs must not hang the build for ever.
IMPORT_LIMIT = 120.0


def check(app: str, config: Config) -> None:
    """Return when APP imports under CONFIG; an AppError (one line) when it does not."""
    spec = {
        "app": app,
        "factory": config.factory,
        "chdir": config.chdir,
        "app_dir": config.app_dir,
        "env_file": config.env_file,
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "forkserve.cli.check", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=IMPORT_LIMIT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AppError(f"importing {app} took longer than {IMPORT_LIMIT:.0f} s; it hangs at import") from None
    if done.returncode != 0:
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        raise AppError(lines[-1] if lines else f"importing {app} failed (exit {done.returncode})")


def _child(spec: dict[str, object]) -> int:
    from forkserve.common.apppath import prepare_chdir, prepare_path
    from forkserve.config.envfile import apply_env, read_env_file
    from forkserve.errors import ForkserveError
    from forkserve.zygote.appload import load_app

    try:
        if spec["chdir"]:
            prepare_chdir(str(spec["chdir"]))
        if spec["env_file"]:
            apply_env(read_env_file(str(spec["env_file"])), os.environ)
        prepare_path(str(spec["app_dir"]))
        load_app(spec["app"], factory=bool(spec["factory"]))
    except ForkserveError as error:
        print(error, flush=True)
        return error.exit_code
    except BaseException as exc:  # an app's import may raise anything, SystemExit included
        print(f"cannot load {spec['app']}: {type(exc).__name__}: {exc}", flush=True)
        return AppError.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(_child(json.loads(sys.argv[1])))
