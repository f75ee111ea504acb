"""forkserve: a pre-fork ASGI server. ``forkserve.run(app, workers=4)`` or ``forkserve APP -w auto``."""

from forkserve.api import Server, run
from forkserve.config import Config
from forkserve.errors import (
    AppError,
    BindError,
    BindPermissionError,
    ConfigError,
    ForkserveError,
    WorkerBootError,
)
from forkserve.master import Master

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
    "WorkerBootError",
    "__version__",
    "run",
]
