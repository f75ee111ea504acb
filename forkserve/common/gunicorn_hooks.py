"""A gunicorn.conf.py's server hooks, called at gunicorn's moments in gunicorn's processes.

    hook                         process   when
    on_starting(server)          master    after binding, before the first zygote (gunicorn: before
                                           binding); raising stops the server (exit 3), as in gunicorn
    when_ready(server)           master    right after on_starting, before any worker exists
    on_reload(server)            master    on HUP, before the new generation loads
    pre_fork(server, worker)     zygote    just before each fork (the zygote is what forks here);
                                           worker.pid is None, as in gunicorn
    post_fork(server, worker)    worker    right after the fork; raising fails the worker's boot
    post_worker_init(worker)     worker    after lifespan startup, before it serves; raising fails
                                           the worker's boot
    worker_exit(server, worker)  worker    after it drained and ran lifespan shutdown
    child_exit(server, worker)   master    after a worker exited (worker.exit_status: words)
    nworkers_changed(server, new, old)  master  when the wanted number of workers changes
    on_exit(server)              master    once, as forkserve stops

The objects carry what such hooks commonly use:
``server``: ``pid`` (the master's), ``num_workers``, ``cfg``, ``log``, ``proc_name``;
``worker``: ``pid``, ``ppid`` (the master's), ``age`` (the order in which this generation's
zygote forked it, from 1), ``worker_id``, ``generation``, ``log``, ``cfg``, ``booted``, ``alive``.
``cfg`` answers gunicorn's names from the config file (``cfg.bind`` as written there) and
forkserve's settings by their own names (``cfg.graceful_timeout``).

Except on_starting, post_fork and post_worker_init (whose failure gunicorn treats as fatal too),
a hook that raises is logged in one line with its name and the server goes on; in gunicorn, a
raising when_ready, pre_fork, child_exit or nworkers_changed stops the arbiter.

The worker hooks are reached through forkserve's own hook settings (post_fork, worker_ready,
worker_exit name the functions below), so they survive the zygote's exec: ``attach`` reads the
file again there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from forkserve.errors import AppError

logger = logging.getLogger("forkserve")

# gunicorn names whose forkserve setting is spelled differently, for ``cfg``.
_ALIASES = {"keepalive": "keep_alive", "pidfile": "pid", "loglevel": "log_level", "proc_name": "app_name"}


class Cfg:
    """gunicorn's ``cfg``: the config file's names first, then forkserve's settings."""

    def __init__(self, config: Any, names: Mapping[str, Any]) -> None:
        self._config = config
        self._names = dict(names)

    def __getattr__(self, name: str) -> Any:
        if name in self._names:
            return self._names[name]
        try:
            return getattr(self._config, _ALIASES.get(name, name))
        except AttributeError:
            raise AttributeError(f"cfg has no setting {name!r}") from None


class Server:
    def __init__(self, pid: int, cfg: Cfg, num_workers: Callable[[], int]) -> None:
        self.pid = pid
        self.cfg = cfg
        self.log = logger
        self._num_workers = num_workers
        self.proc_name = "forkserve"

    @property
    def num_workers(self) -> int:
        return self._num_workers()


class Worker:
    def __init__(
        self, pid: int | None, ppid: int, age: int, worker_id: int, generation: int, cfg: Cfg
    ) -> None:
        self.pid = pid
        self.ppid = ppid
        self.age = age
        self.worker_id = worker_id
        self.generation = generation
        self.cfg = cfg
        self.log = logger
        self.booted = False
        self.alive = True
        self.exit_status = ""


class _Attached:
    def __init__(self, config: Any, hooks: dict[str, Callable[..., Any]], names: Mapping[str, Any]) -> None:
        self.cfg = Cfg(config, names)
        self.hooks = hooks
        self.master_pid = os.getppid()
        self.age = 0


_attached: _Attached | None = None


def hooks_of(path: str) -> tuple[dict[str, Callable[..., Any]], Mapping[str, Any]]:
    from forkserve.config import gunicorn

    names = gunicorn.read(path)
    return gunicorn.translate(names, lambda name, value: path).hooks, names


def attach(config: Any) -> None:
    """In the zygote, before the app loads: find the file's hooks (run it again, after the exec)."""
    global _attached
    path = getattr(config, "config", None)
    if not path or not str(path).endswith(".py"):
        return
    hooks, names = hooks_of(str(path))
    _attached = _Attached(config, hooks, names)


def call(name: str, hook: Callable[..., Any], *args: Any) -> None:
    """Run HOOK; log one line naming it when it raises, and go on."""
    try:
        hook(*args)
    except Exception as exc:
        where = f"{getattr(hook, '__module__', '?')}:{getattr(hook, '__qualname__', '?')}"
        logger.error(
            "the gunicorn %s hook %s failed: %s: %s (pid %d)",
            name,
            where,
            type(exc).__name__,
            exc,
            os.getpid(),
        )


def _server(attached: _Attached, workers: int) -> Server:
    return Server(attached.master_pid, attached.cfg, lambda: workers)


def pre_fork(worker_id: int, generation: int, workers: int) -> None:
    """In the zygote, before it forks worker WORKER_ID; counts the age every later worker sees."""
    attached = _attached
    if attached is None:
        return
    attached.age += 1
    hook = attached.hooks.get("pre_fork")
    if hook is not None:
        worker = Worker(None, attached.master_pid, attached.age, worker_id, generation, attached.cfg)
        call("pre_fork", hook, _server(attached, workers), worker)


def _this_worker(info: Any) -> tuple[_Attached, Worker] | None:
    attached = _attached
    if attached is None:
        return None
    worker = Worker(
        info.pid, attached.master_pid, attached.age, info.worker_id, info.generation, attached.cfg
    )
    return attached, worker


# The three below are named by forkserve's post_fork, worker_ready and worker_exit settings.


def post_fork(info: Any) -> None:
    found = _this_worker(info)
    if found is not None and "post_fork" in found[0].hooks:
        found[0].hooks["post_fork"](_server(found[0], info.workers), found[1])


def post_worker_init(info: Any) -> None:
    found = _this_worker(info)
    if found is not None and "post_worker_init" in found[0].hooks:
        found[1].booted = True
        found[0].hooks["post_worker_init"](found[1])


def worker_exit(info: Any) -> None:
    found = _this_worker(info)
    if found is not None and "worker_exit" in found[0].hooks:
        found[1].booted, found[1].alive = True, False
        call("worker_exit", found[0].hooks["worker_exit"], _server(found[0], info.workers), found[1])


def run_on_starting(hook: Callable[..., Any], server: Server) -> None:
    """on_starting stops the server when it raises, as in gunicorn (and forkserve's own)."""
    try:
        hook(server)
    except Exception as exc:
        where = f"{getattr(hook, '__module__', '?')}:{getattr(hook, '__qualname__', '?')}"
        raise AppError(f"the gunicorn on_starting hook {where} failed: {type(exc).__name__}: {exc}") from None
