"""Lifecycle hooks: the user's functions run at the moments ASGI lifespan cannot see.

    on_starting(ServerInfo)   master, once, after binding and before the first zygote
    on_reload(ServerInfo)     master, on each reload (HUP), before the new generation loads
    post_fork(WorkerInfo)     worker, right after the fork, before its event loop and lifespan
    worker_ready(WorkerInfo)  worker, after lifespan startup, just before it takes requests
    worker_exit(WorkerInfo)   worker, after it drained and ran lifespan shutdown (not on QUIT)
    worker_int(WorkerInfo)    worker, on INT (before it drains) and on QUIT (just before it exits)
    worker_abort(WorkerInfo)  worker, when the master kills it as hung or slow to start: after its
                              stack dump, before the SIGKILL that follows STACK_DUMP_GRACE later

Each setting is an import string ``"module:function"`` (the CLI and environment) or, through
``forkserve.run(...)``, a callable. The master never imports the app, but a hook module is the
user's explicit choice: it is imported in the master for the master's hooks, and in the zygote
(once per generation, after the app) for the workers' hooks. A worker's hook may be ``async``
(``worker_ready``, ``worker_exit`` run on the event loop); the others must be plain functions.

When a hook raises: ``on_starting`` stops the server (exit 3, the hook's error in one line);
``post_fork`` and ``worker_ready`` count as a failed worker boot (exit 3, as a failed lifespan
startup: a fresh server stops, a reload is aborted); ``on_reload``, ``worker_exit``,
``worker_int`` and ``worker_abort`` are logged in one line and the server goes on.

``worker_int`` on QUIT and ``worker_abort`` run inside a signal handler, as gunicorn runs them:
the handler may have interrupted anything, a log write included, so whatever they raise (a
reentrant write's RuntimeError too) is swallowed after at most one line, and the worker's fate
(exit, SIGKILL) does not wait on them beyond its usual bounds.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from forkserve.common.apppath import prepare_path
from forkserve.errors import AppError, ConfigError

if TYPE_CHECKING:
    from forkserve.config.settings import Config

logger = logging.getLogger("forkserve")

Hook = Callable[[Any], Any]
MASTER_HOOKS = ("on_starting", "on_reload")
WORKER_HOOKS = ("post_fork", "worker_ready", "worker_exit", "worker_int", "worker_abort")

_REFERENCE = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


@dataclass(frozen=True)
class ServerInfo:
    """What a master hook learns: the master's pid, the worker count, the generation, the settings."""

    pid: int
    workers: int
    generation: int
    config: Config


def parse_hook(raw: Any) -> str | Hook | None:
    """A setting's value: None, a callable, or a ``module:function`` string (checked for form only)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if callable(raw):
        return raw  # type: ignore[no-any-return]
    if not isinstance(raw, str) or not _REFERENCE.fullmatch(raw.strip()):
        raise ValueError("expected module:function, e.g. myapp.hooks:post_fork")
    return raw.strip()


def reference(setting: str, hook: str | Hook) -> str:
    """The import string that finds HOOK again in a fresh interpreter (a zygote started by exec)."""
    if isinstance(hook, str):
        return hook
    module = getattr(hook, "__module__", None)
    name = getattr(hook, "__qualname__", "") or repr(hook)
    if not module or module == "__main__" or "<" in name:
        raise ConfigError(
            f"the {setting} hook {name} is defined in __main__ or inside a function, where a new "
            "interpreter cannot find it; define it at the top level of a module, or pass 'module:function'"
        )
    return f"{module}:{name}"


def load(name: str, hook: str | Hook | None) -> Hook | None:
    """The callable behind a hook setting; AppError (one line) when it cannot be imported."""
    if hook is None or callable(hook):
        return hook
    module_name, _, attributes = hook.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for attribute in attributes.split("."):
            target = getattr(target, attribute)
    except Exception as exc:
        raise AppError(f"cannot load the {name} hook {hook!r}: {type(exc).__name__}: {exc}") from None
    if not callable(target):
        raise ConfigError(f"the {name} hook {hook!r} is not callable")
    return target  # type: ignore[no-any-return]


def describe_failure(name: str, hook: Hook, exc: BaseException) -> str:
    where = f"{getattr(hook, '__module__', '?')}:{getattr(hook, '__qualname__', '?')}"
    return f"the {name} hook {where} failed: {type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class WorkerHooks:
    post_fork: Hook | None = None
    worker_ready: Hook | None = None
    worker_exit: Hook | None = None
    worker_int: Hook | None = None
    worker_abort: Hook | None = None

    @classmethod
    def from_config(cls, config: Config) -> WorkerHooks:
        return cls(**{name: load(name, getattr(config, name)) for name in WORKER_HOOKS})


def run_master_hook(name: str, config: Config, info: ServerInfo) -> None:
    """Run a master hook; on_starting's failure stops the server (AppError), on_reload's is logged."""
    value = getattr(config, name)
    if value is None:
        return
    if isinstance(value, str):
        # A hook module usually sits beside the app; the zygote puts --app-dir on sys.path, so must we.
        prepare_path(config.app_dir)
    hook = load(name, value)
    assert hook is not None
    try:
        hook(info)
    except Exception as exc:
        message = describe_failure(name, hook, exc)
        if name == "on_starting":
            raise AppError(message) from None
        logger.error("%s", message)


async def run_worker_hook(name: str, hook: Hook | None, info: Any) -> bool:
    """Run a worker hook on the event loop; False (and one error line) when it raised."""
    if hook is None:
        return True
    try:
        result = hook(info)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        logger.error("%s (worker pid %d)", describe_failure(name, hook, exc), os.getpid())
        return False
    return True


def run_post_fork(hook: Hook | None, info: Any) -> bool:
    if hook is None:
        return True
    try:
        hook(info)
    except Exception as exc:
        logger.error("%s (worker pid %d)", describe_failure("post_fork", hook, exc), os.getpid())
        return False
    return True


def run_signal_hook(name: str, hook: Hook | None, info: Any) -> None:
    """Run worker_int or worker_abort, maybe from a signal handler: nothing it raises escapes."""
    if hook is None:
        return
    try:
        hook(info)
    except Exception as exc:
        # Logging itself may fail here (a write the signal interrupted): then say nothing.
        with contextlib.suppress(Exception):
            logger.error("%s (worker pid %d)", describe_failure(name, hook, exc), os.getpid())
