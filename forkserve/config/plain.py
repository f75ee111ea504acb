"""A ``Config`` as plain data that survives an exec (JSON), and back.

Two processes start from such data: a zygote (``forkserve.common.zygotespec``) and the command
line's master after it re-executes itself without the parser (``forkserve.cli.runmaster``). The
values are the parsed ones, so parsing them again gives the same ``Config``; a hook given as a
callable becomes the import string that finds it again.
"""

from __future__ import annotations

from typing import Any

from forkserve.common import hooks
from forkserve.config.settings import Config
from forkserve.config.sources import Source, resolve


def to_plain(config: Config, *, master_hooks: bool) -> dict[str, Any]:
    """CONFIG's settings as JSON-able data; without MASTER_HOOKS (a zygote never runs them)."""
    settings = {name: getattr(config, name) for name in config.__dataclass_fields__}
    settings["bind"] = [str(spec) for spec in config.bind]
    for name in hooks.MASTER_HOOKS:
        if not master_hooks:
            settings[name] = None
        elif settings[name] is not None:
            settings[name] = hooks.reference(name, settings[name])
    for name in hooks.WORKER_HOOKS:
        if settings[name] is not None:
            settings[name] = hooks.reference(name, settings[name])
    return settings


def from_plain(settings: dict[str, Any]) -> Config:
    config, _ = resolve([Source("kwargs", settings)])
    return config
