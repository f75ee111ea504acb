"""Where the user's code is found: --chdir and --app-dir, applied by the master and by each zygote.

The master needs them for the hook modules it imports (``forkserve.common.hooks``) and the files
the settings name; the zygote, for the app (``forkserve.zygote.appload``).
"""

from __future__ import annotations

import os
import sys

from forkserve.errors import ConfigError


def prepare_chdir(chdir: str) -> None:
    try:
        os.chdir(chdir)
    except OSError as exc:
        raise ConfigError(f"--chdir {chdir!r}: {exc.strerror}; pass an existing directory") from None


def prepare_path(app_dir: str) -> None:
    """Put APP_DIR first on sys.path (the master has already applied --chdir)."""
    path = os.path.abspath(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
