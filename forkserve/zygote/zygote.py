"""The zygote: imports the app once per code generation, then only forks workers on request.

Theory of operation. The master never imports the app (a broken import must not take the master
down, and a reload must import new code) and never forks from itself once it runs threads (forking
a multi-threaded process can deadlock the child on a lock another thread held). So each generation
gets a single-threaded template process:

* For an import string the master starts it with ``exec``: ``forkserve.master.zygotes.start_exec``
  runs ``python -m forkserve.zygote``, the spec in the environment. A fresh interpreter inherits
  the listening sockets, the scoreboard, its channel and the "alive" pipe by fd number, so a
  reload sees new code.
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
import os
import selectors
import signal
import socket
from typing import Any

from forkserve.common import (
    applogs,
    faults,
    forksignals,
    gunicorn_hooks,
    hooks,
    memory,
    messages,
    privileges,
    promdir,
)
from forkserve.common.logs import LogSetup, line_buffered_stdio, short_traceback
from forkserve.common.scoreboard import Scoreboard
from forkserve.common.zygotespec import SPEC_VARIABLE, ZygoteSpec
from forkserve.config.envfile import apply_env
from forkserve.config.settings import Config
from forkserve.errors import EXIT_APP, ConfigError, ForkserveError
from forkserve.worker import info as workerinfo


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
        self.loop_factory: Any = None
        # The environment before --env-file's variables: a fork-mode worker of a later generation
        # starts from it, so a variable removed from the file is gone.
        self.base_environ: dict[str, str] = dict(os.environ)
        self.hooks = hooks.WorkerHooks()

    def load(self) -> bool:
        """Import the app and load uvicorn's config; report the outcome to the master."""
        # Imported here, not at the top: a fork-mode master imports this module (``forkserve.api``
        # hands ``run`` to it) and stays free of uvicorn and the app's stack until it forks.
        from forkserve.common import tls
        from forkserve.common.apppath import prepare_path
        from forkserve.worker import worker
        from forkserve.zygote import appwrap
        from forkserve.zygote.appload import load_app

        apply_env(self.spec.environ, os.environ)
        try:
            # Built per generation, so a HUP after renewing the certificate serves the new one; and
            # before dropping privileges, so the key file may stay readable by root alone.
            ssl_context = tls.server_context(self.spec.config)
            # Before the app's first line runs, and for good: workers inherit the identity.
            become_configured_user(self.spec.config)
            prepare_path(self.spec.config.app_dir)
            # A gunicorn.conf.py runs before the app's import, as in gunicorn; its worker hooks live here.
            gunicorn_hooks.attach(self.spec.config)
            app_logging = applogs.AppLogging(self.logs, self.spec.config.log_config)
            app_logging.before_import()
            try:
                app = load_app(self.spec.app, factory=self.spec.config.factory)
            finally:
                app_logging.after_import()
            self.uv_config = worker.uvicorn_config(
                self.spec.config, appwrap.wrap(app, self.spec.config, self.spec.app_name)
            )
            self.uv_config.load()
            self.uv_config.ssl = ssl_context
            # Before the fork: uvloop's modules are then shared by every worker, not imported in each.
            self.loop_factory = worker.loop_factory(self.uv_config)
            self.hooks = hooks.WorkerHooks.from_config(self.spec.config)
        except ForkserveError as exc:
            messages.send(
                self.channel,
                {
                    "op": messages.Op.FAILED,
                    "message": str(exc),
                    "detail": exc.detail,
                    "exit_code": exc.exit_code,
                },
            )
            return False
        except (Exception, SystemExit) as exc:
            messages.send(
                self.channel,
                {
                    "op": messages.Op.FAILED,
                    "message": f"cannot load the app: {type(exc).__name__}: {exc}",
                    "detail": short_traceback(exc) if isinstance(exc, Exception) else "",
                    "exit_code": 3,
                },
            )
            return False
        # Objects alive now are shared copy-on-write with every worker: keep the collector off them.
        gc.freeze()
        # The heap's free pages, released before they are shared: a worker's first allocations
        # there would copy them.
        memory.trim()
        messages.send(self.channel, {"op": messages.Op.LOADED, "pid": os.getpid()})
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
                if message.get("op") == messages.Op.SPAWN:
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
        gunicorn_hooks.pre_fork(worker_id, generation, self.scoreboard.header.workers or 1)
        try:
            faults.check(faults.WORKER_FORK)
            pid_r, pid_w = os.pipe()
        except OSError as error:
            self._report_failure(slot, worker_id, error)
            return
        try:
            # The master's TERM to a worker still booting waits, blocked, until the worker can act.
            intermediate = forksignals.fork()
        except OSError as error:
            # A process limit, or memory: the master hears of it and decides (back-off, then a
            # verdict). This process must live on; dying here would only be restarted, re-importing
            # the app, to fail the same way.
            os.close(pid_r)
            os.close(pid_w)
            self._report_failure(slot, worker_id, error)
            return
        if intermediate == 0:
            code = 0
            try:
                os.close(pid_r)
                try:
                    pid = os.fork()
                except OSError as error:
                    os.write(pid_w, f"E{error.errno}".encode())
                    raise
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
        if data.startswith(b"E") or not data:
            number = int(data[1:]) if data[1:].isdigit() else 0
            words = os.strerror(number) if number else "the forking process died before it gave a pid"
            self._report_failure(slot, worker_id, OSError(number, words))
            return
        with contextlib.suppress(OSError):  # the master is gone, or done with this zygote
            messages.send(
                self.channel,
                {"op": messages.Op.SPAWNED, "slot": slot, "pid": int(data), "worker_id": worker_id},
            )

    def _report_failure(self, slot: int, worker_id: int, error: OSError) -> None:
        with contextlib.suppress(OSError):
            messages.send(
                self.channel,
                {
                    "op": messages.Op.SPAWN_FAILED, "slot": slot, "worker_id": worker_id,
                    "errno": error.errno or 0, "error": error.strerror or str(error),
                },
            )  # fmt: skip

    def run_worker(self, worker_id: int, slot: int, generation: int) -> int:
        from forkserve.common import handoff
        from forkserve.worker import worker

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
            loop_factory=self.loop_factory,
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
    if spec.config.capture_output:
        applogs.capture_output(logs)
    _ignore_stray_signals(logs)
    # Nothing the import allocates should be collected and rewritten before the fork freezes it.
    gc.disable()
    if spec.metrics_dir:
        promdir.adopt(spec.metrics_dir)
    zygote = Zygote(spec, logs)
    if not zygote.load():
        return EXIT_APP
    return zygote.serve()


def main() -> int:
    """``python -m forkserve.zygote``: the spec is in the environment (``start_exec`` says why)."""
    # Popped, so neither the app nor the workers see it in os.environ.
    spec = ZygoteSpec.from_json(os.environ.pop(SPEC_VARIABLE))
    logs = LogSetup.from_config(spec.config, "zygote")
    try:
        return run(spec, logs)
    except KeyboardInterrupt:
        return 0
