"""--static /PREFIX=DIR as data: the mounts, and the check the master makes at start.

The workers serve them (``forkserve.http.static``); the master only checks them, so this lives
apart from the serving code, which the master never imports.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from forkserve.errors import ConfigError


def mounts(static: Iterable[str]) -> list[tuple[str, str]]:
    return [(prefix, directory) for prefix, _, directory in (item.partition("=") for item in static)]


def check_mounts(static: Iterable[str]) -> None:
    """Called by the master at start (after --chdir): every DIR must be a directory."""
    for prefix, directory in mounts(static):
        if not os.path.isdir(directory):
            raise ConfigError(f"--static {prefix}={directory}: no such directory")
