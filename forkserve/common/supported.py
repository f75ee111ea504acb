"""Which uvicorn releases forkserve runs on, checked by the master before any process exists.

forkserve builds on uvicorn's protocol classes, including parts uvicorn keeps private, so only a
tested range of releases works: older ones fail to boot or answer every request with 400 (issue
15 measured both), a newer one may change a private detail. The range is written once, here;
pyproject.toml declares the same string (a unit test holds them equal), and the master turns any
other installed version into one line and exit 2 instead of a broken server. The installed
version is read from the package metadata: the master never imports uvicorn (its memory is
copied into no worker, docs/benchmarks.md). It reads the ``METADATA`` file of the ``dist-info``
beside the package Python would import, which is also the copy that will run; only when there is
none (an egg, a zip) does it ask ``importlib.metadata``, whose import (with ``email``, ``zipfile``,
``csv``) would cost every master 3.7 MiB (docs/design.md "Memory").

The comparison is on release numbers only (``0.56.0rc1`` counts as 0.56.0), which is all a
``>=A,<B`` range of final releases needs, and keeps ``packaging`` out of the dependencies.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from forkserve.errors import ConfigError

# Lowest: the oldest release forkserve's suite passes on (0.45-0.52 omit `Connection: close` on
# HTTP/1.0 responses of --http httptools; 0.44 and older answer every request with 400 or do not
# boot). Highest: below the next minor after the newest release tested.
UVICORN_LOWEST = (0, 53)
UVICORN_BELOW = (0, 56)


def _text(release: tuple[int, ...]) -> str:
    return ".".join(map(str, release))


UVICORN_RANGE = f">={_text(UVICORN_LOWEST)},<{_text(UVICORN_BELOW)}"
UVICORN_REQUIREMENT = f"uvicorn{UVICORN_RANGE}"


def release(text: str) -> tuple[int, ...] | None:
    """The release numbers a version string starts with (``0.55.0.post1`` -> (0, 55, 0))."""
    match = re.match(r"\s*v?(\d+(?:\.\d+)*)", text)
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def _pad(numbers: tuple[int, ...], width: int) -> tuple[int, ...]:
    return numbers + (0,) * (width - len(numbers))


def uvicorn_problem(installed: str | None) -> str | None:
    """Why INSTALLED (a uvicorn version, None when absent) cannot run forkserve, or None if it can."""
    fix = f"forkserve needs {UVICORN_REQUIREMENT} (pip install '{UVICORN_REQUIREMENT}')"
    if installed is None:
        return f"uvicorn is not installed: {fix}"
    numbers = release(installed)
    if numbers is not None:
        width = max(len(numbers), len(UVICORN_LOWEST), len(UVICORN_BELOW))
        if _pad(UVICORN_LOWEST, width) <= _pad(numbers, width) < _pad(UVICORN_BELOW, width):
            return None
    return f"uvicorn {installed} is not supported: {fix}"


def metadata_version(text: str) -> str | None:
    """The ``Version:`` of a METADATA (or PKG-INFO) file's header, None without one."""
    for line in text.splitlines():
        if not line.strip():
            return None  # the header ends at the first blank line; the description follows
        key, _, value = line.partition(":")
        if key.strip().lower() == "version":
            return value.strip() or None
    return None


def _beside_package(name: str) -> str | None:
    spec = importlib.util.find_spec(name)  # finds, never imports
    if spec is None or not spec.submodule_search_locations:
        return None
    site = Path(next(iter(spec.submodule_search_locations))).parent
    infos = list(site.glob(f"{name}-*.dist-info"))
    if len(infos) != 1:
        return None  # none, or a stale one left beside the real one: importlib.metadata decides
    try:
        return metadata_version((infos[0] / "METADATA").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def installed_uvicorn() -> str | None:
    found = _beside_package("uvicorn")
    if found is not None:
        return found
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("uvicorn")
    except PackageNotFoundError:
        return None


def check_uvicorn() -> None:
    problem = uvicorn_problem(installed_uvicorn())
    if problem:
        raise ConfigError(problem)
