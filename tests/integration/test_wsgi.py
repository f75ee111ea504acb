"""WSGI apps (Flask, Django) served for real: detection, threads, streamed uploads, HUPs under load."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, wait_until
from tests.integration.load import background_load
from tests.integration.test_metrics import scrape, total

UPLOAD = 128 * 1024 * 1024
CHUNK = 1024 * 1024


def zygote_threads(server) -> int:
    [zygote] = [pid for pid, title in server.processes().items() if "zygote" in title]
    status = Path(f"/proc/{zygote}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.M)[1])


def peak_rss(pid: int) -> int:
    """VmHWM: the most resident memory the process ever had, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)[1]) * 1024


def body() -> Iterator[bytes]:
    block = bytes(range(256)) * (CHUNK // 256)
    for _ in range(UPLOAD // CHUNK):
        yield block


def expected_digest() -> str:
    digest = hashlib.sha256()
    for chunk in body():
        digest.update(chunk)
    return digest.hexdigest()


def test_flask_is_detected_and_served_from_threads_started_after_the_fork(serve):
    server = serve("-w", "2", "--threads", "3", app="flask_site:app", wait=2)
    server.wait_log(
        r"flask_site:app is a WSGI app \(Flask.__call__\(environ, start_response\) is synchronous and takes "
        r"WSGI's two arguments\): each worker runs it on 3 threads \(--threads\)"
    )
    # Six slow requests at once: two workers x three threads serve them together, not one by one.
    with ThreadPoolExecutor(6) as pool:
        started = time.monotonic()
        slow = list(pool.map(lambda _: httpx.get(server.url + "/sleep?s=1", timeout=20), range(6)))
        elapsed = time.monotonic() - started
    assert [r.text for r in slow] == ["slept"] * 6
    assert elapsed < 5.5, f"six 1 s requests on 6 threads took {elapsed:.1f} s"
    answers = {httpx.get(server.url + "/", timeout=10).text for _ in range(40)}
    assert all(re.fullmatch(r"flask \d+ wsgi_\d", answer) for answer in answers), answers
    # The zygote forks; it must never have started a thread.
    assert zygote_threads(server) == 1


def test_a_large_upload_streams_through_with_bounded_worker_memory(serve):
    server = serve("-w", "1", app="flask_site:app", wait=1)
    [worker] = server.workers()
    before = peak_rss(worker)
    # Chunked (no Content-Length): Flask must still read it whole (wsgi.input_terminated).
    response = httpx.post(server.url + "/upload", content=body(), timeout=120)
    assert response.status_code == 200, response.text
    assert response.json() == {"bytes": UPLOAD, "sha256": expected_digest()}
    growth = peak_rss(worker) - before
    assert growth < 32 * 1024 * 1024, f"a 128 MB upload grew the worker's peak RSS by {growth >> 20} MB"
    # A streamed download arrives whole.
    assert len(httpx.get(server.url + "/download?chunks=64", timeout=30).content) == 64 * 65536


def test_django_serves_from_several_workers_and_reads_an_upload(serve):
    server = serve("-w", "2", app="django_site:application", wait=2)
    server.wait_log(r"django_site:application is a WSGI app \(WSGIHandler.__call__")
    pids = {int(httpx.get(server.url + "/", timeout=10).text.split()[1]) for _ in range(60)}
    assert pids <= set(server.workers()) and pids
    [worker] = list(server.workers())[:1]
    before = peak_rss(worker)
    size = 32 * 1024 * 1024
    content = os.urandom(size)
    answers = []
    for _ in range(2):  # one of the two workers, twice, so both may be checked below
        response = httpx.post(server.url + "/upload", content=content, timeout=60)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    assert answers == [{"bytes": size, "sha256": hashlib.sha256(content).hexdigest()}] * 2
    assert peak_rss(worker) - before < 24 * 1024 * 1024


FLASK_VERSIONED = """
    from flask import Flask

    app = Flask(__name__)

    @app.get("/")
    def index():
        return {version!r}
"""

DJANGO_VERSIONED = """
    from django.conf import settings

    settings.configure(ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="tests", MIDDLEWARE=[])

    from django.core.wsgi import get_wsgi_application
    from django.http import HttpResponse
    from django.urls import path

    urlpatterns = [path("", lambda request: HttpResponse({version!r}))]
    app = get_wsgi_application()
"""


# The same test on a plain ASGI app: the control, so a failure shows whether WSGI is to blame.
ASGI_VERSIONED = """
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({{"type": "lifespan.startup.complete"}})
            await send({{"type": "lifespan.shutdown.complete"}})
            return
        await send({{"type": "http.response.start", "status": 200, "headers": []}})
        await send({{"type": "http.response.body", "body": {version!r}.encode()}})
"""


@pytest.mark.parametrize(
    "source", [FLASK_VERSIONED, DJANGO_VERSIONED, ASGI_VERSIONED], ids=["flask", "django", "asgi"]
)
def test_hups_under_load_fail_nothing_and_serve_new_code(serve, tmp_path, source):
    def write(version: str) -> None:
        (tmp_path / "site_versioned.py").write_text(textwrap.dedent(source.format(version=version)))

    def only(version: str) -> bool:
        return server.get().text == version and len(server.workers()) == 2

    write("v1")
    server = serve("--app-dir", str(tmp_path), "-w", "2", app="site_versioned:app", wait=2)
    with background_load(server.url, keep_alive=8, fresh=4) as load:
        for version in ("v2", "v3", "v4"):
            mark = load.ok
            wait_until(lambda mark=mark: load.ok > mark + 100, 20, "requests before the HUP", server.tail)
            write(version)
            server.signal(signal.SIGHUP)
            # Each reload rolls through completely, under load, before the next one.
            wait_until(lambda version=version: only(version), 20, f"{version} alone", server.tail)
        mark = load.ok
        wait_until(lambda: load.ok > mark + 100, 20, "requests on the last generation", server.tail)
    assert load.failed == 0, f"{load}\n{server.tail()}"
    assert {b"v1", b"v2", b"v3", b"v4"} <= load.bodies(), load.bodies()


def test_max_requests_recycles_a_wsgi_worker_without_failures(serve):
    server = serve("-w", "2", "--max-requests", "150", app="flask_site:app", wait=2)
    original = set(server.workers())
    with background_load(server.url, keep_alive=6, fresh=2) as load:
        server.wait_log(r"retiring worker \d \(pid \d+\): replaced \(recycled\)", count=2, timeout=30)
    assert load.failed == 0, f"{load}\n{server.tail()}"
    assert set(server.workers()) != original


def test_timeout_replaces_the_worker_of_a_stuck_request_not_of_a_slow_client_or_a_long_stream(serve):
    server = serve(
        "-w", "1", "--threads", "3", "--timeout", "2", "--graceful-timeout", "3",
        app="flask_site:app", wait=1,
    )  # fmt: skip
    [first] = server.workers()

    def slow_upload() -> Iterator[bytes]:
        for _ in range(8):
            time.sleep(0.5)
            yield b"x" * 1000

    # Twice --timeout long, but each makes progress: the client sends, the app yields.
    with ThreadPoolExecutor(2) as pool:
        upload = pool.submit(httpx.post, server.url + "/upload", content=slow_upload(), timeout=30)
        stream = pool.submit(httpx.get, server.url + "/ticks?n=8&every=0.5", timeout=30)
        assert upload.result().json()["bytes"] == 8000
        assert stream.result().text == "".join(f"tick {n}\n" for n in range(8))
    assert "asking to be replaced" not in server.log()
    assert set(server.workers()) == {first}

    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(httpx.get, server.url + "/sleep?s=60", timeout=30)
        server.wait_log(
            r"a WSGI request has been in the app for \d+ s without reading its body or handing over a "
            r"response chunk, longer than --timeout 2: asking to be replaced"
        )
        # The other threads keep serving meanwhile, and the replacement takes over.
        assert server.get().status_code == 200
        wait_until(lambda: first not in server.workers() and len(server.workers()) == 1, 15, "a new worker")
        # The stuck request is cut off with its worker, at --graceful-timeout.
        with pytest.raises(httpx.HTTPError):
            stuck.result(timeout=30).raise_for_status()
    assert 'in sleep\n    time.sleep(float(request.args.get("s", "1")))' in server.log(), server.tail()
    assert server.get().status_code == 200


def test_metrics_count_wsgi_requests_and_busyness_follows_the_pool(serve):
    metrics = f"127.0.0.1:{free_port()}"
    server = serve("-w", "1", "--threads", "2", "--metrics-bind", metrics, app="flask_site:app", wait=1)
    server.metrics_url = f"http://{metrics}"
    for _ in range(10):
        assert server.get().status_code == 200
    wait_until(lambda: total(scrape(server), "forkserve_requests_total") >= 10, 5, "10 requests counted")
    # Both threads held in the app: the worker is fully busy though its event loop idles.
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(httpx.get, server.url + "/sleep?s=4", timeout=20) for _ in range(2)]
        wait_until(lambda: total(scrape(server), "forkserve_in_flight") == 2, 5, "2 in flight", server.tail)
        wait_until(
            lambda: total(scrape(server), "forkserve_worker_busy_ratio") > 0.9,
            4,
            "a busy worker",
            server.tail,
        )
        assert [f.result().text for f in held] == ["slept", "slept"]


def test_an_undecidable_callable_is_served_as_asgi_with_a_warning_and_wsgi_when_forced(serve, tmp_path):
    (tmp_path / "wrapped.py").write_text(
        textwrap.dedent(
            """
            def wsgi(environ, start_response):
                start_response("200 OK", [("content-type", "text/plain")])
                return [b"wsgi"]

            def app(*args):  # a decorator that hides the signature
                return wsgi(*args)
            """
        )
    )
    auto = serve("--app-dir", str(tmp_path), app="wrapped:app", wait=1)
    auto.wait_log(r"could not tell WSGI from ASGI \(app takes \*args\); serving it as ASGI. If it is a "
                  r"WSGI app, pass --interface wsgi")  # fmt: skip
    forced = serve("--app-dir", str(tmp_path), "--interface", "wsgi", app="wrapped:app", wait=1)
    forced.wait_log(r"wrapped:app is a WSGI app \(--interface wsgi\)")
    assert forced.get().text == "wsgi"
