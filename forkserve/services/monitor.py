"""The master's HTTP side door (--metrics-bind): /metrics, /health, /ready, /dashboard, /api/status.

Theory of operation. A service (see ``forkserve.services.services``): ``start`` creates the private
prometheus-client directory (``forkserve.common.promdir``) and hands its path to the master for every
zygote, binds the address (so a taken port is the same one-line exit 4 as --bind), and asks the
master's thread to start the server thread. That request runs on the master's first loop turn,
after the first zygote exists: a zygote forked from the master (an app object) is then forked
before this thread exists, never from a process whose other thread may hold a lock.

Each request is answered on its own short thread (stdlib ``ThreadingHTTPServer``), so a slow
scraper cannot hold up another. Fleet facts come from ``master.call`` (the registry and event
counts, read on the master's thread) or, for /health and /ready, straight from the scoreboard, so
a health check never waits on the master's loop. The server's idle turns (every half second)
sweep the multiprocess directory, folding the files of ended workers into the archives.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import TYPE_CHECKING, Any

from forkserve.common import sockets
from forkserve.common.promdir import MultiprocDir
from forkserve.config.parsers import parse_bind_one
from forkserve.config.settings import Config
from forkserve.services import events, fleetmetrics
from forkserve.services.status import FleetStatus, ready_workers, scoreboard_snapshot
from forkserve.services.status import snapshot as fleet_snapshot

if TYPE_CHECKING:
    from forkserve.services.port import MasterPort

logger = logging.getLogger("forkserve")

INHERITED_FD = "FORKSERVE_INHERITED_METRICS_FD"
SNAPSHOT_TIMEOUT = 2.0
RECENT_EVENTS = 50
CLIENT_TIMEOUT = 3.0


class _Server(ThreadingHTTPServer):
    # stop() waits for the handler threads (non-daemon, so they are tracked): none may still read
    # the scoreboard when the master unmaps it. One request per connection (HTTP/1.0) and a short
    # socket timeout keep that wait short: no handler idles on a kept-alive connection.
    daemon_threads = False
    block_on_close = True
    monitor: MonitorService

    def service_actions(self) -> None:
        self.monitor.sweep()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = CLIENT_TIMEOUT

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, *, head: bool) -> None:
        path = self.path.partition("?")[0]
        try:
            status, content_type, body = self.server.monitor.route(path, self.headers.get("Accept", ""))
        except Exception:
            logger.exception("the metrics server failed to answer %s", path)
            status, content_type, body = 500, "text/plain; charset=utf-8", b"internal error\n"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("metrics server: " + format, *args)


class MonitorService:
    name = "metrics"

    def __init__(self, config: Config) -> None:
        assert config.metrics_bind is not None
        self.address = config.metrics_bind
        self.master: MasterPort | None = None
        self.directory: MultiprocDir | None = None
        self.server: _Server | None = None
        self.thread: threading.Thread | None = None
        self.stopping = False

    # ------------------------------------------------------------------ service

    def start(self, master: MasterPort) -> None:
        self.master = master
        self.directory = MultiprocDir.create()
        master.metrics_dir = self.directory.path
        listener = self._listen(master)
        server = _Server(listener.sock.getsockname()[:2], _Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = listener.sock
        server.monitor = self
        self.server = server
        master.events.subscribe(self._on_event)
        master.call(self._start_thread)
        logger.info("Metrics at: http://%s/metrics (dashboard: /dashboard)", listener.address)

    def _listen(self, master: MasterPort) -> sockets.Listener:
        """Bind the address, or adopt the socket a predecessor handed down (USR2).

        The old master still holds the port while its successor starts, so binding anew would
        fail: the socket is handed over like the --bind ones, and both masters answer on it until
        the old one is told to stop.
        """
        spec = parse_bind_one(self.address)
        inherited = os.environ.pop(INHERITED_FD, "")
        listener = None
        if inherited.isdigit():
            sock = socket.socket(fileno=int(inherited))
            if sock.getsockname()[:2] == (spec.host, spec.port):
                listener = sockets.Listener(spec, sock)
            else:
                sock.close()  # --metrics-bind changed between the two command lines
        if listener is None:
            listener = sockets.bind_one(spec, 64, flag="--metrics-bind")
        master.pass_on_upgrade(INHERITED_FD, listener.sock.fileno())
        return listener

    def _start_thread(self) -> None:
        if self.server is None or self.thread is not None:
            return
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="forkserve-metrics",
            daemon=True,
        )
        self.thread.start()

    def _on_event(self, event: events.FleetEvent) -> None:
        if event.kind == events.STOPPING:
            self.stopping = True

    def stop(self) -> None:
        if self.server is not None:
            if self.thread is not None:
                self.server.shutdown()
                self.thread.join(5)
            self.server.server_close()
            self.server = None
        if self.directory is not None:
            self.directory.remove()
            self.directory = None

    # ------------------------------------------------------------------ answers

    def sweep(self) -> None:
        directory = self.directory
        if directory is not None:
            directory.sweep()

    def health(self) -> bool:
        assert self.master is not None
        return ready_workers(self.master.scoreboard) > 0

    def snapshot(self) -> FleetStatus:
        master = self.master
        assert master is not None
        try:
            result: FleetStatus = master.call(lambda: fleet_snapshot(master)).result(SNAPSHOT_TIMEOUT)
        except (FutureTimeout, RuntimeError):
            # The loop is busy (or has ended): the scoreboard still tells most of it.
            return scoreboard_snapshot(master.scoreboard, master.app_name)
        return result

    def merged(self) -> list[Any]:
        return list(self.directory.collect()) if self.directory is not None else []

    def route(self, path: str, accept: str) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        if path == "/health":
            ok = self.health()
            return (200, text, b"ok\n") if ok else (503, text, b"no worker is ready\n")
        if path == "/ready":
            if self.stopping:
                return 503, text, b"shutting down\n"
            return (200, text, b"ready\n") if self.health() else (503, text, b"no worker is ready\n")
        if path == "/metrics":
            return self._metrics(accept)
        if path == "/api/status":
            return 200, "application/json", json.dumps(self.status()).encode()
        if path in ("/dashboard", "/"):
            page = resources.files("forkserve.services").joinpath("dashboard.html").read_bytes()
            return 200, "text/html; charset=utf-8", page
        return 404, text, b"not found: try /metrics, /health, /ready, /dashboard or /api/status\n"

    def status(self) -> dict[str, Any]:
        assert self.master is not None
        totals = fleetmetrics.request_totals(self.merged())
        recent = [event.as_dict() for event in self.master.events.recent(RECENT_EVENTS)]
        health = self.health()
        document = fleetmetrics.status_document(
            self.snapshot(), totals, recent, health=health, ready=health and not self.stopping, at=time.time()
        )
        document["multiprocess_dir"] = self.directory.path if self.directory else None
        return document

    def _metrics(self, accept: str) -> tuple[int, str, bytes]:
        from prometheus_client.exposition import choose_encoder

        families = [*fleetmetrics.to_prometheus(fleetmetrics.fleet_families(self.snapshot())), *self.merged()]

        class Families:
            def collect(self) -> list[Any]:
                return families

        encoder, content_type = choose_encoder(accept)
        return 200, content_type, encoder(Families())
