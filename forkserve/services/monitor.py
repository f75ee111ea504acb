"""The master's HTTP side door (--metrics-bind): /metrics, /health, /ready, /dashboard, /api/status.

Theory of operation. A service (see ``forkserve.services.services``): ``start`` creates the private
prometheus-client directory (``forkserve.common.promdir``) and hands its path to the master for every
zygote, binds the address (so a taken port is the same one-line exit 4 as --bind), and asks the
master's thread to start the server thread. That request runs on the master's first loop turn,
after the first zygote exists: a zygote forked from the master (an app object) is then forked
before this thread exists, never from a process whose other thread may hold a lock.

Connections are served on the master's service loop (``forkserve.services.serviceloop``: one
thread, at most ``MAX_CONNECTIONS`` connections, a deadline for each request head, HTTP parsed by
h11 in ``forkserve.services.httpserve``); each answer is computed on a pool of ``POOL_SIZE``
threads, so a slow scrape holds up no other client. Fleet facts come from ``master.call`` (the
registry and event counts, read on the master's thread) or, for /health and /ready, straight from
the scoreboard, so a health check never waits on the master's loop. Every half second the loop
sweeps the multiprocess directory, folding the files of ended workers into the archives; an
error there (EMFILE from ``listdir``) is logged once and retried, never the end of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from importlib import resources
from typing import TYPE_CHECKING, Any

from forkserve.common import faults, sockets
from forkserve.common.promdir import MultiprocDir
from forkserve.config.parsers import parse_bind_one
from forkserve.config.settings import Config
from forkserve.services import events, fleetmetrics, httpserve
from forkserve.services.resilience import Pacer
from forkserve.services.serviceloop import Connection, Pool, ServiceLoop, StreamServer, hang_up, send
from forkserve.services.status import FleetStatus, ready_workers, scoreboard_snapshot
from forkserve.services.status import snapshot as fleet_snapshot

if TYPE_CHECKING:
    from forkserve.services.port import MasterPort

logger = logging.getLogger("forkserve")

INHERITED_FD = "FORKSERVE_INHERITED_METRICS_FD"
SNAPSHOT_TIMEOUT = 2.0
RECENT_EVENTS = 50
MAX_CONNECTIONS = 64
POOL_SIZE = 2
SWEEP_EVERY = 0.5
STOP_GRACE = 2.0
BUSY = httpserve.response(503, b"too many connections to the metrics server; try again\n")


class MonitorService:
    name = "metrics"

    def __init__(self, config: Config, loop: ServiceLoop | None = None) -> None:
        assert config.metrics_bind is not None
        self.address = config.metrics_bind
        self.master: MasterPort | None = None
        self.directory: MultiprocDir | None = None
        self.loop = loop or ServiceLoop()
        self.server: StreamServer | None = None
        self.pool = Pool("metrics", POOL_SIZE)
        self.serving = False
        self._sweeper: Future[None] | None = None
        self.may_serve = False  # after the master's first loop turn: no fork from a threaded process
        self.stopping = False
        self.sweeps = Pacer("sweeping the metrics directory")
        self.answers = Pacer("answering on --metrics-bind")

    # ------------------------------------------------------------------ service

    def start(self, master: MasterPort) -> None:
        self.master = master
        self.directory = MultiprocDir.create()
        master.metrics_dir = self.directory.path
        listener = self._listen(master)
        self.server = StreamServer(
            listener.sock, what="--metrics-bind", fault_point=faults.METRICS_ACCEPT,
            limit=MAX_CONNECTIONS, handle=self._handle, refusal=BUSY,
        )  # fmt: skip
        master.events.subscribe(self._on_event)
        master.call(self._start_serving)
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

    def _start_serving(self) -> None:
        self.may_serve = True
        if self.server is None or self.serving:
            return
        try:
            self.loop.acquire()
        except (OSError, RuntimeError) as error:
            # No thread to be had now (out of memory or tasks): the next fleet event tries again.
            self.answers.failed(error)
            return
        self.answers.worked()
        self.serving = True
        self.loop.submit(self.server.serve())
        self._sweeper = self.loop.submit(self._sweep_forever())

    def _on_event(self, event: events.FleetEvent) -> None:
        if event.kind == events.STOPPING:
            self.stopping = True
        if self.may_serve and not self.serving:
            self._start_serving()

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            if self.serving:
                if self._sweeper is not None:
                    self._sweeper.cancel()
                with contextlib.suppress(Exception):
                    # Connections already taken are answered (a USR2 successor takes the queue);
                    # no client waits longer than its head deadline anyway.
                    self.loop.submit(server.close(STOP_GRACE, every=True)).result(STOP_GRACE + 3)
                # No answer may still read the scoreboard when the master unmaps it.
                self.pool.close(5)
                self.loop.release()
            else:
                server.sock.close()
        if self.directory is not None:
            self.directory.remove()
            self.directory = None

    # ------------------------------------------------------------------ connections

    async def _handle(self, connection: Connection) -> None:
        try:
            head = await httpserve.read_head(connection.sock, connection.since)
        except httpserve.BadHead as bad:
            logger.debug("--metrics-bind: a malformed request (%s); answered %d", bad, bad.status)
            await self._send(connection, httpserve.response(bad.status, f"bad request: {bad}\n".encode()))
            await hang_up(connection.sock)
            return
        if head is None:
            return
        connection.busy = True
        if head.method not in ("GET", "HEAD"):
            answer = httpserve.response(405, b"only GET and HEAD\n", extra=(("Allow", "GET, HEAD"),))
        else:
            try:
                answer = await self.pool.run(lambda: self.answer(head))
            except OSError as error:
                self.answers.failed(error)
                answer = httpserve.response(503, f"temporarily unable: {error.strerror}\n".encode())
        await self._send(connection, answer)

    @staticmethod
    async def _send(connection: Connection, data: bytes) -> None:
        await send(connection.sock, data, httpserve.SEND_DEADLINE)

    def answer(self, head: httpserve.Head) -> bytes:
        """On a pool thread: the whole response to one request."""
        path = head.target.partition("?")[0]
        try:
            status, content_type, body = self.route(path, head.accept)
        except OSError as error:
            # Out of fds or memory: say so, and log it once, not once per scrape.
            self.answers.failed(error)
            body = f"temporarily unable: {error.strerror}\n".encode()
            status, content_type = 503, httpserve.TEXT
        except Exception:
            logger.exception("the metrics server failed to answer %s", path)
            status, content_type, body = 500, httpserve.TEXT, b"internal error\n"
        else:
            self.answers.worked()
        return httpserve.response(status, body, content_type, head=head.method == "HEAD")

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            try:
                await self.pool.run(self.sweep)
            except OSError as error:
                await asyncio.sleep(self.sweeps.failed(error))
            else:
                self.sweeps.worked()

    # ------------------------------------------------------------------ answers

    def sweep(self) -> None:
        directory = self.directory
        if directory is not None:
            faults.check(faults.METRICS_SWEEP)
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
