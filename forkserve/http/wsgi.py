"""WSGI apps (Flask, Django's wsgi.py): told apart from ASGI at boot, served from a thread pool.

Theory of operation. A WSGI app is a plain callable, ``app(environ, start_response)``, that blocks
for the whole request; an ASGI app is ``async app(scope, receive, send)``. ``detect`` tells them
apart in the zygote, once, from the callable's signature (pure: no call is made), and the zygote
logs the verdict. A WSGI app is then wrapped in ``WSGIApp``, an ASGI app, so everything else in
forkserve (the protocol stack, metrics, health checks, drain, recycling) sees ASGI only.

``WSGIApp`` hands each request to a2wsgi, the maintained WSGI-to-ASGI adapter: it streams the
request body to ``wsgi.input`` as the app reads it (uvicorn's flow control pauses the socket
meanwhile) and the response back through a bounded queue, so neither is held whole in memory. Its
thread pool is ours (``ThreadPool``), built on the first request, so threads only ever start in
a worker after the fork: the zygote stays single-threaded, which its forks rely on.

A thread stuck in the app does not block the worker's event loop, so the heartbeat cannot see it.
``ThreadPool`` therefore records, for each call, when the app last took control: at the start,
and each time a read of ``wsgi.input`` returns or the server asks the response for its next chunk
(``_Input``, ``_Output``). Time spent waiting on the client (a slow upload, a slow reader, a
long stream that yields now and then) is progress, not a hang. The worker samples the pool every
second (``PoolSampler``): an app that has held control longer than ``--timeout`` makes the worker
log that thread's stack and ask to be replaced (the master drains it: the other threads' requests
finish, the stuck one gets ``--graceful-timeout``). Threads cannot be killed; a process can. The
share of the pool's thread-time in use counts as the worker's busyness, for the autoscaler.

The a2wsgi names this relies on, all public: ``a2wsgi.WSGIMiddleware(app, workers=)`` and its
``executor`` attribute (a ``ThreadPoolExecutor``), in a2wsgi 1.10.1 and later (1.10.0 queued
a whole response in memory).
"""

from __future__ import annotations

import inspect
import itertools
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

logger = logging.getLogger("forkserve")

Interface = Literal["asgi", "wsgi"]
T = TypeVar("T")


@dataclass(frozen=True)
class Verdict:
    interface: Interface
    # Why, in words for the boot log: "Flask.__call__(environ, start_response) is synchronous".
    reason: str
    # True when the signature said nothing either way and ASGI is a guess.
    guessed: bool = False


def _name(app: Any) -> str:
    if inspect.isfunction(app) or inspect.isclass(app) or inspect.ismethod(app):
        return str(app.__qualname__)
    return f"{type(app).__qualname__}.__call__"


def detect(app: Any) -> Verdict:
    """WSGI or ASGI, judged from APP's signature alone."""
    name = _name(app)
    call = app if inspect.isfunction(app) or inspect.isclass(app) else getattr(app, "__call__", app)  # noqa: B004
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(call):
        return Verdict("asgi", f"{name} is a coroutine function")
    try:
        signature = inspect.signature(app)
    except (TypeError, ValueError):
        return Verdict("asgi", f"{name} has no signature to read", guessed=True)
    required: list[str] = []
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            return Verdict("asgi", f"{name} takes *{parameter.name}", guessed=True)
        positional = parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
        if positional and parameter.default is parameter.empty:
            required.append(parameter.name)
    shown = f"{name}({', '.join(required)})"
    if len(required) == 2:
        return Verdict("wsgi", f"{shown} is synchronous and takes WSGI's two arguments")
    if len(required) == 3:
        return Verdict("asgi", f"{shown} takes ASGI's three arguments")
    if len(required) == 1 and inspect.isclass(app):
        return Verdict("asgi", f"{shown} is an ASGI 2 class, built per connection")
    return Verdict("asgi", f"{shown} takes {len(required)} arguments", guessed=True)


def choose(app: Any, interface: str) -> Verdict:
    """Apply --interface: a forced value wins; 'auto' asks ``detect``."""
    if interface in ("asgi", "wsgi"):
        return Verdict(interface, f"--interface {interface}")  # type: ignore[arg-type]
    return detect(app)


def adapt(app: Any, *, interface: str, threads: int, where: str) -> Any:
    """APP as forkserve serves it: an ASGI app as it is, a WSGI app wrapped; log the verdict."""
    verdict = choose(app, interface)
    if verdict.interface == "asgi":
        if verdict.guessed:
            logger.warning(
                "%s: could not tell WSGI from ASGI (%s); serving it as ASGI. If it is a WSGI app, pass "
                "--interface wsgi",
                where, verdict.reason,
            )  # fmt: skip
        else:
            logger.debug("%s is an ASGI app (%s)", where, verdict.reason)
        return app
    logger.info(
        "%s is a WSGI app (%s): each worker runs it on %d threads (--threads)", where, verdict.reason, threads
    )
    return WSGIApp(app, threads)


class Call:
    """One request on a WSGI thread: when the app last had control back, and whether it has it now."""

    __slots__ = ("app_since", "ident", "started", "waiting")

    def __init__(self, now: float) -> None:
        self.ident = threading.get_ident()
        self.started = self.app_since = now
        self.waiting = False  # True while the thread waits on the client, not on the app

    def wait(self) -> None:
        self.waiting = True

    def resume(self) -> None:
        # In this order: a sampler on another thread never pairs "not waiting" with a stale time.
        self.app_since = time.monotonic()
        self.waiting = False


class ThreadPool(ThreadPoolExecutor):
    """A worker's WSGI threads, keeping a ``Call`` per running request and the thread-time spent."""

    def __init__(self, threads: int) -> None:
        super().__init__(max_workers=threads, thread_name_prefix="wsgi")
        self.threads = threads
        self._lock = threading.Lock()
        self._running: dict[int, Call] = {}
        self._finished = 0.0  # thread-seconds of the calls that have returned
        self._keys = itertools.count()
        self._local = threading.local()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return super().submit(self._timed, fn, *args, **kwargs)

    def current(self) -> Call | None:
        """The call running on this thread, if it is one of the pool's."""
        call: Call | None = getattr(self._local, "call", None)
        return call

    def _timed(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        key = next(self._keys)
        call = self._local.call = Call(time.monotonic())
        with self._lock:
            self._running[key] = call
        try:
            return fn(*args, **kwargs)
        finally:
            self._local.call = None
            with self._lock:
                del self._running[key]
                self._finished += time.monotonic() - call.started

    def sample(self, now: float) -> tuple[float, float, int]:
        """(thread-seconds spent so far, longest the app has held control, that thread's ident)."""
        with self._lock:
            running = list(self._running.values())
            spent = self._finished
        spent += sum(now - call.started for call in running)
        held = [(now - call.app_since, call.ident) for call in running if not call.waiting]
        return (spent, *max(held)) if held else (spent, 0.0, 0)


@dataclass(frozen=True)
class PoolReading:
    busy: float  # share of the pool's thread-time in use since the last reading, 0..1
    stuck: str | None  # why the worker must be replaced: a call has outrun --timeout


def overdue(held: float, timeout: float) -> bool:
    """An app holding a thread longer than --timeout (0: never) means its worker must go."""
    return timeout > 0 and held > timeout


class PoolSampler:
    """Read by the worker's ticker each second: busyness and the stuck-call check."""

    def __init__(self, now: float) -> None:
        self._mark: tuple[float, float] | None = None
        self._start = now

    def read(self, pool: ThreadPool, now: float, timeout: float) -> PoolReading:
        spent, held, ident = pool.sample(now)
        last_spent, last_time = self._mark if self._mark is not None else (0.0, self._start)
        self._mark = (spent, now)
        busy = min(1.0, max(0.0, (spent - last_spent) / (pool.threads * max(now - last_time, 1e-6))))
        stuck = None
        if overdue(held, timeout):
            frame = sys._current_frames().get(ident)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "(thread gone)\n"
            stuck = (
                f"a WSGI request has been in the app for {held:.0f} s without reading its body or handing "
                f"over a response chunk, longer than --timeout {timeout:g}: asking to be replaced (the other "
                f"requests finish; this one has --graceful-timeout). Its thread:\n"
                f"{stack.rstrip()}"
            )
        return PoolReading(busy, stuck)


# The worker's pool once the first request built it. One app per process, so one pool: the worker's
# ticker finds it here rather than by digging through the middleware around the app.
_pool: ThreadPool | None = None


def active_pool() -> ThreadPool | None:
    return _pool


class _Input:
    """``wsgi.input``, with the call marked as waiting on the client while a read blocks."""

    def __init__(self, stream: Any, call: Call) -> None:
        self._stream = stream
        self._call = call

    def read(self, size: int = -1) -> bytes:
        self._call.wait()
        try:
            return self._stream.read(size)  # type: ignore[no-any-return]
        finally:
            self._call.resume()

    def readline(self, limit: int = -1) -> bytes:
        self._call.wait()
        try:
            return self._stream.readline(limit)  # type: ignore[no-any-return]
        finally:
            self._call.resume()

    def readlines(self, hint: int = -1) -> list[bytes]:
        self._call.wait()
        try:
            return self._stream.readlines(hint)  # type: ignore[no-any-return]
        finally:
            self._call.resume()

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def __getattr__(self, name: str) -> Any:
        # Anything else the stream has (and nothing it lacks: Werkzeug asks hasattr(readinto)).
        return getattr(self._stream, name)


class _Output:
    """The app's response iterable; between chunks the server, not the app, holds the thread."""

    def __init__(self, iterable: Iterable[bytes], call: Call) -> None:
        self._iterable = iterable
        self._call = call

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._iterable:
            self._call.wait()  # the adapter now waits for room to send it
            yield chunk
            self._call.resume()
        self._call.wait()  # and then sends the end of the body

    def close(self) -> None:
        self._call.resume()
        close = getattr(self._iterable, "close", None)
        if close is not None:
            close()


def _served(app: Callable[..., Any], pool: ThreadPool) -> Callable[..., Any]:
    """APP with its progress visible to the pool, and wsgi.input marked as terminated.

    The body reaches the app already de-chunked and ends with the request, so reading it to EOF is
    safe, and gunicorn says so too (``wsgi.input_terminated``); without it, Werkzeug (Flask) reads a
    chunked upload, which has no Content-Length, as empty.
    """

    def call(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["wsgi.input_terminated"] = True
        current = pool.current()
        if current is None:
            return app(environ, start_response)  # type: ignore[no-any-return]
        environ["wsgi.input"] = _Input(environ["wsgi.input"], current)
        return _Output(app(environ, start_response), current)

    return call


class WSGIApp:
    """An ASGI app serving the WSGI app APP from this worker's pool of THREADS threads."""

    def __init__(self, app: Any, threads: int) -> None:
        self.app = app
        self.threads = threads
        self._adapter: Any = None

    def _build(self) -> Any:
        global _pool
        from a2wsgi import WSGIMiddleware

        pool = ThreadPool(self.threads)
        adapter = WSGIMiddleware(_served(self.app, pool), workers=self.threads)
        adapter.executor.shutdown(wait=False)  # its own never started a thread; ours replaces it
        adapter.executor = _pool = pool
        return adapter

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._adapter is None:
            # Here, in the worker, on its first request (or lifespan): never in the zygote.
            self._adapter = self._build()
        await self._adapter(scope, receive, send)
