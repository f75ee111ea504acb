"""Settings from a TOML file: ``-c FILE``, or the ``[tool.forkserve]`` table of ./pyproject.toml.

The file is one more ``Source`` for ``config.resolve``: defaults < file < environment < command
line. This module only finds and reads the file; what a key means, and whether its value is good,
is the settings table's business, so a bad value in a file gets the same parser and the same kind
of message (``forkserve.toml: workers = 'many': expected ...``) as a bad flag.

Discovery is deliberately narrow: only ./pyproject.toml, only when no ``-c`` is given, and only
from the command line (a library caller passes ``config=`` itself). Walking up parent directories,
as linters do, would let a stray pyproject.toml several levels up reconfigure a production server.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from forkserve.config.sources import Source
from forkserve.errors import ConfigError

PYPROJECT = "pyproject.toml"
PYPROJECT_TABLE = ("tool", "forkserve")


def _load(path: Path, shown: str) -> dict[str, Any]:
    # Imported when a file is read: the master keeps no TOML parser when none is (docs/design.md "Memory").
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"-c {shown}: no such file; pass the path of a TOML config file") from None
    except IsADirectoryError:
        raise ConfigError(f"-c {shown}: is a directory; pass the path of a TOML config file") from None
    except OSError as exc:
        raise ConfigError(f"-c {shown}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not UTF-8 text; a TOML file must be UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: not valid TOML: {exc}") from None


def _table(data: Mapping[str, Any], keys: tuple[str, ...]) -> Mapping[str, Any] | None:
    node: Any = data
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, Mapping) else None


def file_source(path: str) -> Source:
    """The settings in the TOML file at PATH (its [tool.forkserve] table if it is a pyproject.toml)."""
    data = _load(Path(path), path)
    if Path(path).name == PYPROJECT:
        table = _table(data, PYPROJECT_TABLE)
        if table is None:
            raise ConfigError(f"{path}: has no [tool.forkserve] table; add one, or pass a forkserve.toml")
        return Source("file", dict(table), label=f"{path} [tool.forkserve]")
    return Source("file", data, label=path)


def discovered_source(directory: Path) -> Source | None:
    """The [tool.forkserve] table of DIRECTORY/pyproject.toml, or None when there is none."""
    path = directory / PYPROJECT
    if not path.is_file():
        return None
    table = _table(_load(path, PYPROJECT), PYPROJECT_TABLE)
    if table is None:
        return None
    return Source("file", dict(table), label=f"{PYPROJECT} [tool.forkserve]")
