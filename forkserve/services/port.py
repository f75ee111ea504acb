"""What a service may see and do of the master: a ``Protocol`` (a port), not the ``Master`` class.

A service runs beside the master's loop, mostly on threads of its own. The rule from
``forkserve.services.services``: it reads what is safe to read from any thread (the scoreboard, the
event log, the state) and acts only through ``call`` (run a function on the loop's thread) or the
thread-safe requests (``stop``, ``set_workers``). Everything it needs is named here, so a service can
be tested against a small fake, and the master's internals can change without a service noticing.
``forkserve.master.master.Master`` satisfies it (mypy checks, where the master starts its services).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from forkserve.common.scoreboard import Scoreboard
from forkserve.common.sockets import Listener
from forkserve.policy.lifecycle import WorkerRecord
from forkserve.policy.masterstate import MasterState
from forkserve.services.events import EventLog


class MasterPort(Protocol):
    app_name: str
    exec_mode: bool  # the app is an import string (a reload imports new code)
    events: EventLog
    scoreboard: Scoreboard
    listeners: list[Listener]
    desired: int  # the number of workers the master wants now
    state: MasterState
    metrics_dir: str | None  # set by the metrics service before the first zygote; handed to each

    @property
    def generation(self) -> int:
        """The generation new workers are started from."""
        ...

    @property
    def worker_limit(self) -> int: ...

    @property
    def zygote_state(self) -> str:
        """The current generation's zygote: a ``policy.zygoteidle.ZygoteState`` value."""
        ...

    def live_workers(self) -> list[WorkerRecord]:
        """Every worker not yet reaped (on the master's thread only: use it inside ``call``)."""
        ...

    def call(self, action: Callable[[], Any]) -> Future[Any]: ...

    def stop(self, graceful: bool = True) -> None: ...

    def begin_reload(self) -> None:
        """Start a reload now (on the master's thread only: use it inside ``call``)."""
        ...

    def set_workers(
        self, count: int | None = None, *, delta: int = 0, reason: str = "api"
    ) -> Future[bool]: ...

    def pass_on_upgrade(self, variable: str, fd: int) -> None:
        """Hand FD to a USR2 successor, its number in the environment VARIABLE."""
        ...
