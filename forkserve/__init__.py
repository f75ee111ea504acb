"""forkserve: a pre-fork ASGI server. ``forkserve.run(app, workers=4)`` or ``forkserve APP -w auto``."""

from forkserve.api import Server, run
from forkserve.common.hooks import ServerInfo
from forkserve.config.settings import Config
from forkserve.errors import (
    AppError,
    BindError,
    BindPermissionError,
    ConfigError,
    ForkserveError,
    WorkerBootError,
)
from forkserve.master.master import Master
from forkserve.worker.info import WorkerInfo, worker_info

__version__ = "0.1.0"

__all__ = [
    "AppError",
    "BindError",
    "BindPermissionError",
    "Config",
    "ConfigError",
    "ForkserveError",
    "Master",
    "Server",
    "ServerInfo",
    "WorkerBootError",
    "WorkerInfo",
    "__version__",
    "run",
    "worker_info",
]
