"""--env-file: the app's environment from a .env file, read by the master for every generation.

The master reads the file (at start, and again on each HUP) and hands the values to the new
generation's zygote in its spec; the zygote puts them in ``os.environ`` before it imports the app,
so they are there at import time and in every worker forked after. An app object (fork mode) has
one zygote for every generation and was imported before forkserve ran: there the values re-read
on HUP travel with each "spawn" request, and the new worker sets them before it serves.

Reading the file in the master, not in the zygote, is what lets a broken file abort a reload with
one clear line while the old generation keeps serving, instead of failing in a zygote. The
master's own environment is never changed: a variable removed from the file is gone from the next
generation.

Variables already in forkserve's environment win over the file, as with uvicorn's --env-file and
python-dotenv's default: an operator can override one value without editing the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from forkserve.errors import ConfigError


def read_env_file(path: str) -> dict[str, str]:
    """The variables PATH sets (a key without a value is skipped), or a ConfigError naming the file."""
    from dotenv import dotenv_values

    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "no such file"
        raise ConfigError(f"--env-file {path}: {what}; pass a .env file of NAME=value lines")
    try:
        values = dotenv_values(path, interpolate=True)
    except OSError as exc:
        raise ConfigError(f"--env-file {path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--env-file {path}: not UTF-8 text") from None
    return {name: value for name, value in values.items() if value is not None}


def apply_env(values: Mapping[str, str], environ: MutableMapping[str, str]) -> None:
    for name, value in values.items():
        environ.setdefault(name, value)
