"""WSGI or ASGI, from the callable alone; and the thread pool's busyness and stuck-call readings."""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from flask import Flask
from starlette.applications import Starlette
from werkzeug.middleware.proxy_fix import ProxyFix

from forkserve.http import wsgi


async def asgi3(scope: Any, receive: Any, send: Any) -> None: ...


class AsgiClass:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...


class AsgiMiddleware:
    """Synchronous __call__ that returns the inner app's coroutine: still ASGI."""

    def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        return asgi3(scope, receive, send)


class Asgi2:
    def __init__(self, scope: Any) -> None: ...

    async def __call__(self, receive: Any, send: Any) -> None: ...


def wsgi_function(environ: Any, start_response: Any) -> list[bytes]:
    return []


def wsgi_with_option(environ: Any, start_response: Any, debug: bool = False) -> list[bytes]:
    return []


class WsgiClass:
    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        return []


def anything(*args: Any) -> Any: ...


def unbuilt(cls: type) -> Any:
    # Django's handlers load settings in __init__; only the signature of __call__ matters here.
    return cls.__new__(cls)


CASES = [
    # (what, callable, interface, guessed)
    ("ASGI 3 function", asgi3, "asgi", False),
    ("ASGI class instance", AsgiClass(), "asgi", False),
    ("ASGI middleware, sync __call__", AsgiMiddleware(), "asgi", False),
    ("ASGI 2 class", Asgi2, "asgi", False),
    ("partial of an ASGI function", functools.partial(asgi3), "asgi", False),
    ("Starlette app", Starlette(), "asgi", False),
    ("Django ASGIHandler", unbuilt(ASGIHandler), "asgi", False),
    ("Flask app", Flask("t"), "wsgi", False),
    ("Werkzeug middleware around Flask", ProxyFix(Flask("t")), "wsgi", False),
    ("Django WSGIHandler", unbuilt(WSGIHandler), "wsgi", False),
    ("plain WSGI function", wsgi_function, "wsgi", False),
    ("WSGI function with an optional argument", wsgi_with_option, "wsgi", False),
    ("class with __call__(environ, start_response)", WsgiClass(), "wsgi", False),
    ("*args: cannot tell", anything, "asgi", True),
    ("no signature: cannot tell", print, "asgi", True),
]


@pytest.mark.parametrize(("what", "app", "interface", "guessed"), CASES, ids=[c[0] for c in CASES])
def test_detect(what: str, app: Any, interface: str, guessed: bool) -> None:
    verdict = wsgi.detect(app)
    assert (verdict.interface, verdict.guessed) == (interface, guessed), verdict.reason


def test_detect_explains_itself() -> None:
    assert wsgi.detect(Flask("t")).reason == (
        "Flask.__call__(environ, start_response) is synchronous and takes WSGI's two arguments"
    )


@pytest.mark.parametrize(
    ("app", "interface", "expected"),
    [
        (asgi3, "wsgi", "wsgi"),
        (Flask("t"), "asgi", "asgi"),
        (anything, "wsgi", "wsgi"),
        (anything, "auto", "asgi"),
    ],
)
def test_a_forced_interface_wins(app: Any, interface: str, expected: str) -> None:
    assert wsgi.choose(app, interface).interface == expected


def test_adapt_wraps_only_wsgi_and_starts_no_thread() -> None:
    flask = Flask("t")
    threads_before = threading.active_count()
    wrapped = wsgi.adapt(flask, interface="auto", threads=3, where="t:app")
    assert isinstance(wrapped, wsgi.WSGIApp) and wrapped.app is flask and wrapped.threads == 3
    assert wsgi.adapt(asgi3, interface="auto", threads=3, where="t:app") is asgi3
    # The zygote adapts the app before it forks: no pool, no thread, until a request in a worker.
    assert threading.active_count() == threads_before
    assert wsgi.active_pool() is None


@pytest.mark.parametrize(
    ("oldest", "timeout", "expected"),
    [(0.0, 30.0, False), (29.9, 30.0, False), (30.1, 30.0, True), (1e6, 0.0, False)],
)
def test_overdue(oldest: float, timeout: float, expected: bool) -> None:
    assert wsgi.overdue(oldest, timeout) is expected


def stuck_in_the_app(release: threading.Event) -> None:
    release.wait(10)


def test_sampler_reads_busyness_and_names_the_stuck_thread() -> None:
    pool = wsgi.ThreadPool(2)
    release, started = threading.Event(), threading.Event()
    try:
        start = time.monotonic()
        sampler = wsgi.PoolSampler(start)
        pool.submit(lambda: (started.set(), stuck_in_the_app(release)))
        assert started.wait(5)
        # One of two threads busy for the whole (pretended) 10 s: half the pool, under --timeout 30.
        reading = sampler.read(pool, start + 10, timeout=30)
        assert reading.busy == pytest.approx(0.5, abs=0.05)
        assert reading.stuck is None
        reading = sampler.read(pool, start + 40, timeout=30)
        assert reading.stuck is not None
        assert reading.stuck.startswith(
            "a WSGI request has been in the app for 40 s without reading its body"
        )
        assert "stuck_in_the_app" in reading.stuck
    finally:
        release.set()
        pool.shutdown(wait=True)
    # Once the call returned, the pool is idle: the next second reads 0.
    now = time.monotonic()
    sampler.read(pool, now, timeout=30)
    assert sampler.read(pool, now + 1, timeout=30) == wsgi.PoolReading(0.0, None)


class Client:
    """wsgi.input whose reads block until the test lets them through."""

    def __init__(self) -> None:
        self.reading = threading.Event()
        self.release = threading.Event()

    def read(self, size: int = -1) -> bytes:
        self.reading.set()
        self.release.wait(10)
        return b""

    def readline(self, limit: int = -1) -> bytes:
        return b""


def test_time_waiting_on_the_client_is_progress_not_a_hang() -> None:
    pool = wsgi.ThreadPool(1)
    client = Client()
    handed_over, taken, resumed = threading.Event(), threading.Event(), threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        environ["wsgi.input"].read()
        start_response("200 OK", [])
        yield b"one"
        resumed.set()

    def server_side() -> list[bytes]:
        environ = {"wsgi.input": client}
        response = wsgi._served(app, pool)(environ, lambda *a: None)
        assert environ["wsgi.input_terminated"] is True
        sent = []
        for chunk in response:
            sent.append(chunk)
            handed_over.set()
            taken.wait(10)  # the client is slow to take the chunk
        response.close()
        return sent

    try:
        future = pool.submit(server_side)
        # Blocked reading the body, then handing over a chunk: not held by the app, however long.
        assert client.reading.wait(5)
        assert pool.sample(time.monotonic() + 100)[1] == 0.0
        client.release.set()
        assert handed_over.wait(5)
        assert pool.sample(time.monotonic() + 100)[1] == 0.0
        taken.set()
        assert future.result(5) == [b"one"]
        assert resumed.is_set()
    finally:
        client.release.set()
        taken.set()
        pool.shutdown(wait=True)


def test_an_app_holding_its_thread_is_measured_from_its_last_progress() -> None:
    pool = wsgi.ThreadPool(1)
    release, inside = threading.Event(), threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        inside.set()
        release.wait(10)
        return [b""]

    try:
        pool.submit(wsgi._served(app, pool), {"wsgi.input": Client()}, lambda *a: None)
        assert inside.wait(5)
        now = time.monotonic()
        spent, held, ident = pool.sample(now + 50)
        assert held == pytest.approx(50, abs=1) and spent == pytest.approx(50, abs=1)
        assert ident != threading.get_ident()
    finally:
        release.set()
        pool.shutdown(wait=True)
