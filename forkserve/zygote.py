"""The zygote: imports the app once per code generation, then only forks workers on request.

Theory of operation. The master never imports the app (a broken import must not take the master
down, and a reload must import new code) and never forks from itself once it runs threads (forking
a multi-threaded process can deadlock the child on a lock another thread held). So each generation
gets a single-threaded template process:

* For an import string the master starts it with ``exec`` (``python -m forkserve.zygote``), a fresh
  interpreter that inherits the listening sockets, the scoreboard, its channel and the "alive"
  pipe by fd number. A reload therefore sees new code.
* For an app object passed to ``forkserve.run(app)`` the master forks it once, before any thread.

The zygote imports the app, loads uvicorn's config (protocol classes, middleware), freezes the GC
heap so copy-on-write pages stay shared, tells the master ``loaded``, and then waits for ``spawn``
requests. Each worker is double-forked: the intermediate child exits at once, so the worker is
re-parented to the master (a child subreaper) and the master reaps every worker itself, reading
its real exit status, even after this zygote is gone. The zygote exits when its channel or the
alive pipe reaches EOF: it can never outlive the master.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import selectors
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

from forkserve import hooks, messages, privileges, promdir, workerinfo
from forkserve.config import Config, Source, resolve
from forkserve.envfile import apply_env
from forkserve.errors import ConfigError, ForkserveError
from forkserve.logs import LogSetup, line_buffered_stdio, short_traceback
from forkserve.scoreboard import Scoreboard

SPEC_VARIABLE = "FORKSERVE_ZYGOTE_SPEC"


@dataclass
class ZygoteSpec:
    """What a zygote needs, as plain data that survives exec (fd numbers, not objects)."""

    app: Any  # an import string, or (fork mode only) the app object
    app_name: str
    generation: int
    config: Config
    listener_fds: list[int]
    scoreboard_fd: int
    scoreboard_capacity: int
    channel_fd: int
    alive_fd: int
    # --env-file's variables, read by the master for this generation; set before the app is imported.
    environ: dict[str, str] = field(default_factory=dict)
    # The private prometheus-client directory (--metrics-bind), exported before the app's import.
    metrics_dir: str | None = None
    # --balance: each slot's hand-off channel, or the per-worker reuseport sockets (forkserve/handoff.py).
    balance_fds: list[int] = field(default_factory=list)

    def to_json(self) -> str:
        assert isinstance(self.app, str), "only an import string can cross exec"
        settings = {name: getattr(self.config, name) for name in self.config.__dataclass_fields__}
        settings["bind"] = [str(spec) for spec in self.config.bind]
        # The master's hooks run in the master only; the workers' must be found again after exec.
        for name in hooks.MASTER_HOOKS:
            settings[name] = None
        for name in hooks.WORKER_HOOKS:
            if settings[name] is not None:
                settings[name] = hooks.reference(name, settings[name])
        data = {
            "app": self.app,
            "app_name": self.app_name,
            "generation": self.generation,
            "settings": settings,
            "listener_fds": self.listener_fds,
            "scoreboard_fd": self.scoreboard_fd,
            "scoreboard_capacity": self.scoreboard_capacity,
            "channel_fd": self.channel_fd,
            "alive_fd": self.alive_fd,
            "environ": self.environ,
            "metrics_dir": self.metrics_dir,
            "balance_fds": self.balance_fds,
        }
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ZygoteSpec:
        data = json.loads(text)
        settings = data.pop("settings")
        bind = settings.pop("bind")
        settings["bind"] = bind
        config, _ = resolve([Source("kwargs", settings)])
        return cls(config=config, **data)


def become_configured_user(config: Config) -> None:
    try:
        identity = privileges.resolve_identity(config.user, config.group)
        if identity is not None:
            privileges.drop_to(identity)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot run as --user/--group: {exc}") from None


def _ignore_stray_signals(logs: LogSetup) -> None:
    """A Ctrl-C or a signal sent to the whole process group is the master's to act on."""
    # TERM too: systemd (KillMode=control-group) and `kill -TERM -PGID` send it to every process at
    # once, and a zygote that died of it would look like a crash to replace. It leaves when the
    # master closes its channel or dies.
    for number in (
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGTTIN,
        signal.SIGTTOU,
        signal.SIGWINCH,
        signal.SIGTERM,
    ):
        signal.signal(number, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # The master forwards USR1 after a log rotation: workers forked later inherit the new file.
    signal.signal(signal.SIGUSR1, lambda _number, _frame: logs.reopen())


class Zygote:
    def __init__(self, spec: ZygoteSpec, logs: LogSetup) -> None:
        self.spec = spec
        self.logs = logs
        self.channel = socket.socket(fileno=spec.channel_fd)
        self.listeners = [socket.socket(fileno=fd) for fd in spec.listener_fds]
        self.scoreboard = Scoreboard(spec.scoreboard_fd, spec.scoreboard_capacity)
        self.uv_config: Any = None
        # The environment before --env-file's variables: a fork-mode worker of a later generation
        # starts from it, so a variable removed from the file is gone.
        self.base_environ: dict[str, str] = dict(os.environ)
        self.hooks = hooks.WorkerHooks()

    def load(self) -> bool:
        """Import the app and load uvicorn's config; report the outcome to the master."""
        # Imported here, not at the top: the master imports this module for ZygoteSpec and must stay
        # free of uvicorn and the app's stack (it never serves; every MB there is per server).
        from forkserve import appwrap, tls, worker
        from forkserve.appload import load_app, prepare_path

        apply_env(self.spec.environ, os.environ)
        try:
            # Built per generation, so a HUP after renewing the certificate serves the new one; and
            # before dropping privileges, so the key file may stay readable by root alone.
            ssl_context = tls.server_context(self.spec.config)
            # Before the app's first line runs, and for good: workers inherit the identity.
            become_configured_user(self.spec.config)
            prepare_path(self.spec.config.app_dir)
            app = load_app(self.spec.app, factory=self.spec.config.factory)
            self.uv_config = worker.uvicorn_config(
                self.spec.config, appwrap.wrap(app, self.spec.config, self.spec.app_name)
            )
            self.uv_config.load()
            self.uv_config.ssl = ssl_context
            self.hooks = hooks.WorkerHooks.from_config(self.spec.config)
        except ForkserveError as exc:
            messages.send(
                self.channel,
                {"op": "failed", "message": str(exc), "detail": exc.detail, "exit_code": exc.exit_code},
            )
            return False
        except (Exception, SystemExit) as exc:
            messages.send(
                self.channel,
                {
                    "op": "failed",
                    "message": f"cannot load the app: {type(exc).__name__}: {exc}",
                    "detail": short_traceback(exc) if isinstance(exc, Exception) else "",
                    "exit_code": 3,
                },
            )
            return False
        # Objects alive now are shared copy-on-write with every worker: keep the collector off them.
        gc.freeze()
        messages.send(self.channel, {"op": "loaded", "pid": os.getpid()})
        return True

    def serve(self) -> int:
        selector = selectors.DefaultSelector()
        selector.register(self.channel, selectors.EVENT_READ)
        selector.register(self.spec.alive_fd, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fileobj == self.spec.alive_fd:
                    return 0
                try:
                    message = messages.receive(self.channel)
                except OSError:
                    return 0
                if message is None:
                    return 0
                if message.get("op") == "spawn":
                    self.spawn(
                        selector,
                        int(message["worker_id"]),
                        int(message["slot"]),
                        int(message["generation"]),
                        message.get("environ"),
                    )

    def spawn(
        self,
        selector: selectors.BaseSelector,
        worker_id: int,
        slot: int,
        generation: int,
        environ: dict[str, str] | None = None,
    ) -> None:
        pid_r, pid_w = os.pipe()
        intermediate = os.fork()
        if intermediate == 0:
            code = 0
            try:
                os.close(pid_r)
                pid = os.fork()
                if pid == 0:
                    os.close(pid_w)
                    selector.close()
                    if environ is not None:
                        os.environ.clear()
                        os.environ.update(self.base_environ)
                        apply_env(environ, os.environ)
                    code = self.run_worker(worker_id, slot, generation)
                else:
                    os.write(pid_w, str(pid).encode())
            except BaseException:
                code = 1
            finally:
                # Never return into the zygote's loop from a child: os._exit, always.
                os._exit(code)
        os.close(pid_w)
        with os.fdopen(pid_r, "rb") as reader:
            data = reader.read()
        os.waitpid(intermediate, 0)
        with contextlib.suppress(OSError):  # the master is gone, or done with this zygote
            self._report(slot, worker_id, int(data) if data else 0)

    def _report(self, slot: int, worker_id: int, pid: int) -> None:
        if pid:
            messages.send(self.channel, {"op": "spawned", "slot": slot, "pid": pid, "worker_id": worker_id})
        else:
            messages.send(self.channel, {"op": "spawn_failed", "slot": slot, "worker_id": worker_id})

    def run_worker(self, worker_id: int, slot: int, generation: int) -> int:
        from forkserve import handoff, worker

        gc.enable()
        # The app can size per-worker resources (a pool of budget // workers) from these.
        workerinfo.bind(self.scoreboard, slot, worker_id, generation)
        title = f"forkserve: worker {worker_id} [{self.spec.app_name}] gen {generation}"
        listeners, channel = handoff.worker_sockets(
            self.spec.config.balance, self.listeners, self.spec.balance_fds, worker_id=worker_id, slot=slot
        )
        ctx = worker.WorkerContext(
            worker_id=worker_id,
            slot=slot,
            generation=generation,
            title=title,
            uv_config=self.uv_config,
            listeners=listeners,
            handoff=channel,
            scoreboard=self.scoreboard,
            channel=self.channel,
            alive_fd=self.spec.alive_fd,
            logs=self.logs,
            config=self.spec.config,
            hooks=self.hooks,
        )
        try:
            return worker.run(ctx)
        except Exception:
            worker.logger.exception("worker %d crashed", worker_id)
            return 1


def run(spec: ZygoteSpec, logs: LogSetup) -> int:
    from setproctitle import setproctitle

    setproctitle(f"forkserve: zygote [{spec.app_name}] gen {spec.generation}")
    logs.set_role("zygote", generation=spec.generation)
    line_buffered_stdio()
    _ignore_stray_signals(logs)
    # Nothing the import allocates should be collected and rewritten before the fork freezes it.
    gc.disable()
    if spec.metrics_dir:
        promdir.adopt(spec.metrics_dir)
    zygote = Zygote(spec, logs)
    if not zygote.load():
        return 3
    return zygote.serve()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # Popped, so neither the app nor the workers see it in os.environ.
    spec = ZygoteSpec.from_json(args[0] if args else os.environ.pop(SPEC_VARIABLE))
    logs = LogSetup(spec.config.log_level, "zygote", spec.config.log_file, log_format=spec.config.log_format)
    try:
        return run(spec, logs)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
