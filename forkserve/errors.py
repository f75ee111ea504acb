"""Every way forkserve can refuse to run, as one tree of typed errors.

Errors are raised deep, where the facts are known, and rendered once, at the edge (the CLI prints
``str(error)`` and exits with ``error.exit_code``; the library lets them propagate). Each message is
one line that names the problem and the fix, so a user's mistake never shows a traceback.

    ForkserveError                 exit 1  anything else that stops the server
     +-- ConfigError               exit 2  a bad flag, environment variable or keyword argument
     +-- AppError                  exit 3  the app failed to import, or its lifespan startup failed
     +-- BindError                 exit 4  the address is in use
     |    +-- BindPermissionError  exit 5  the address needs privileges this process lacks
     +-- WorkerBootError           exit 3  a worker of a fresh server died before it served (or
     |                                     never finished its startup)
     +-- ResourceError             exit 1  the first workers could not be created (a process or
                                           file limit): the message names the limit to raise

``forkserve ctl`` (a client, see ``forkserve.cli.ctl``) adds: 6 no server answers, 7 this user may not
steer it, 8 the action did not complete in time.
"""

from __future__ import annotations


class ForkserveError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        # Extra lines (an app's traceback) shown after the one-line message, never instead of it.
        self.detail = detail


class ConfigError(ForkserveError):
    exit_code = 2


class AppError(ForkserveError):
    exit_code = 3


class WorkerBootError(AppError):
    pass


class ResourceError(ForkserveError):
    pass


class BindError(ForkserveError):
    exit_code = 4


class BindPermissionError(BindError):
    exit_code = 5


EXIT_OK = 0
EXIT_CONFIG = ConfigError.exit_code
EXIT_APP = AppError.exit_code
EXIT_BIND = BindError.exit_code
EXIT_BIND_PERMISSION = BindPermissionError.exit_code
