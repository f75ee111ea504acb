"""forkserve: a pre-fork ASGI server. ``forkserve.run(app, workers=4)`` or ``forkserve APP -w auto``.

Importing ``forkserve`` loads only the errors: every other public name is imported on first use
(PEP 562), because an exec'd zygote and every worker import this package too, and must not carry
the master, its services or psutil (tests/unit/test_imports.py checks both).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from forkserve.errors import (
    AppError,
    BindError,
    BindPermissionError,
    ConfigError,
    ForkserveError,
    ResourceError,
    WorkerBootError,
)
from forkserve.version import __version__

if TYPE_CHECKING:
    from forkserve.api import Server, run
    from forkserve.common.hooks import ServerInfo
    from forkserve.config.settings import Config
    from forkserve.master.master import Master
    from forkserve.worker.info import WorkerInfo, worker_info

# Each lazy name, and the module that defines it.
_LAZY = {
    "Config": "forkserve.config.settings",
    "Master": "forkserve.master.master",
    "Server": "forkserve.api",
    "ServerInfo": "forkserve.common.hooks",
    "WorkerInfo": "forkserve.worker.info",
    "run": "forkserve.api",
    "worker_info": "forkserve.worker.info",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'forkserve' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "AppError",
    "BindError",
    "BindPermissionError",
    "Config",
    "ConfigError",
    "ForkserveError",
    "Master",
    "ResourceError",
    "Server",
    "ServerInfo",
    "WorkerBootError",
    "WorkerInfo",
    "__version__",
    "run",
    "worker_info",
]
