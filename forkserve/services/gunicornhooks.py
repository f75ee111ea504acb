"""The master's side of a gunicorn.conf.py's hooks: on_starting, when_ready, on_reload, child_exit,
nworkers_changed and on_exit, driven by the master's event feed (see common/gunicorn_hooks.py for
every hook, its process and its moment). A service, so the master's loop knows nothing of gunicorn.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from forkserve.common import gunicorn_hooks
from forkserve.config.settings import Config
from forkserve.services import events

if TYPE_CHECKING:
    from forkserve.services.port import MasterPort


class GunicornHooks:
    name = "gunicorn hooks"

    def __init__(self, config: Config) -> None:
        assert config.config is not None
        self.hooks, names = gunicorn_hooks.hooks_of(config.config)
        self.cfg = gunicorn_hooks.Cfg(config, names)
        self.server: gunicorn_hooks.Server | None = None
        self.stopped = False

    def _hook(self, name: str) -> Callable[..., Any] | None:
        return self.hooks.get(name)

    def start(self, master: MasterPort) -> None:
        self.server = gunicorn_hooks.Server(os.getpid(), self.cfg, lambda: master.desired)
        hook = self._hook("on_starting")
        if hook is not None:
            gunicorn_hooks.run_on_starting(hook, self.server)
        hook = self._hook("when_ready")
        if hook is not None:
            gunicorn_hooks.call("when_ready", hook, self.server)
        master.events.subscribe(self._on_event)

    def _on_event(self, event: events.FleetEvent) -> None:
        server = self.server
        assert server is not None
        fields = event.fields
        if event.kind == events.RELOAD_STARTED and (hook := self._hook("on_reload")):
            gunicorn_hooks.call("on_reload", hook, server)
        elif event.kind == events.SCALED and (hook := self._hook("nworkers_changed")):
            gunicorn_hooks.call("nworkers_changed", hook, server, fields["after"], fields["before"])
        elif event.kind == events.WORKER_EXITED and (hook := self._hook("child_exit")):
            worker = gunicorn_hooks.Worker(
                fields["pid"], server.pid, 0, fields["worker_id"], fields["generation"], self.cfg
            )
            worker.alive, worker.exit_status = False, str(fields.get("status", ""))
            gunicorn_hooks.call("child_exit", hook, server, worker)
        elif event.kind == events.STOPPED:
            self._exit()

    def _exit(self) -> None:
        if self.stopped or self.server is None:
            return
        self.stopped = True
        hook = self._hook("on_exit")
        if hook is not None:
            gunicorn_hooks.call("on_exit", hook, self.server)

    def stop(self) -> None:
        self._exit()
