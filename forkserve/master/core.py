"""What the master holds, in one place: the attributes its parts share, and the moves they call.

``Master`` (``master.py``: the loop, the signals, start and stop) is assembled from parts, one
module per concern, each a class over this one:

    fleet.py        FleetChanges  how many workers, of which generation: reconcile, reload, scale
    zygoteside.py   ZygoteSide    starting zygotes, their channel's messages, their exits
    reaping.py      Reaping       workers' exits: reaping, verdicts, back-off

Everything here runs on the loop's thread only. A part reaches another only through the methods
declared below (abstract here, defined by their part), so what the parts share is written down.
"""

from __future__ import annotations

import abc
import queue
import selectors
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from forkserve.common import hooks, privileges, sockets
from forkserve.common.logs import LogSetup
from forkserve.common.scoreboard import Scoreboard
from forkserve.common.zygotespec import ZygoteSpec
from forkserve.config.settings import Config
from forkserve.errors import ForkserveError
from forkserve.master import upgrade, zygotes
from forkserve.master.generations import Generations
from forkserve.master.registry import WorkerRegistry
from forkserve.policy.backoff import Backoff
from forkserve.policy.lifecycle import WorkerRecord
from forkserve.policy.masterstate import MasterState, ShutdownMode
from forkserve.services import events
from forkserve.services.autoscaler import Autoscaler, Scaling
from forkserve.services.balancer import Balancer
from forkserve.services.devreload import SourceWatcher
from forkserve.services.services import Service


@dataclass(frozen=True)
class ZygoteRetry:
    """The serving generation's zygote could not be started again: when to try next."""

    generation: int
    adopt: frozenset[int]  # the generations the dead zygote forked for
    at: float
    failures: int


class MasterCore(abc.ABC):
    # What it serves and how
    app: Any  # an import string (exec mode) or an app object (fork mode)
    app_name: str
    config: Config
    logs: LogSetup
    exec_mode: bool
    run_zygote: Callable[[ZygoteSpec, LogSetup], int] | None  # fork mode: the zygote's code
    handle_signals: bool
    owns_process: bool  # the command line's master: may reap any orphan that lands on it
    # Its state
    state: MasterState
    desired: int  # workers wanted now
    error: ForkserveError | None  # why the server stops, if it must
    started: threading.Event  # set once a worker serves (or the server has stopped)
    generations: Generations
    workers: WorkerRegistry
    backoff: Backoff
    zygote_retry: ZygoteRetry | None  # set while the serving generation has no zygote
    scaling: Scaling
    events: events.EventLog
    # What it owns
    listeners: list[sockets.Listener]
    socket_activated: bool
    identity: privileges.Identity | None
    scoreboard: Scoreboard
    selector: selectors.BaseSelector
    alive_r: int
    alive_w: int
    app_environ: dict[str, str]  # --env-file's variables for the next generation
    metrics_dir: str | None  # set by the metrics service, handed to every zygote
    handover: upgrade.Handover
    requests: queue.SimpleQueue[Callable[[], object]]
    _wake_r: socket.socket
    _wake_w: socket.socket
    # Beside the loop
    services: list[Service]
    balancer: Balancer | None
    watcher: SourceWatcher | None
    autoscaler: Autoscaler | None

    @abc.abstractmethod
    def begin_stop(self, mode: ShutdownMode) -> None: ...

    @abc.abstractmethod
    def _request(self, action: Callable[[], object]) -> None: ...

    @abc.abstractmethod
    def _server_info(self, generation: int) -> hooks.ServerInfo: ...

    @abc.abstractmethod
    def _start_zygote(self, generation: int, *, adopt: frozenset[int] = ...) -> bool: ...

    @abc.abstractmethod
    def _zygote_failed(
        self, handle: zygotes.ZygoteHandle, message: str, detail: str, exit_code: int = ...
    ) -> None: ...

    @abc.abstractmethod
    def _reload_ended(self, generation: int, aborted: str | None = None) -> None: ...

    @abc.abstractmethod
    def _abort_generation(self, generation: int, now: float, reason: str = ...) -> None: ...

    @abc.abstractmethod
    def _retry_zygote(self, now: float) -> None: ...

    @abc.abstractmethod
    def _set_desired(self, count: int, reason: str) -> bool: ...

    @abc.abstractmethod
    def _spawn_failed(self, record: WorkerRecord, error: OSError, now: float) -> None: ...

    @abc.abstractmethod
    def _forget(self, record: WorkerRecord, now: float, *, planned: bool) -> None: ...

    @abc.abstractmethod
    def _worker_exited(self, record: WorkerRecord, status: int | None) -> None: ...
