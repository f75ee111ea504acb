"""The control socket: ``forkserve ctl`` talks to the master here.

Theory of operation. A unix stream socket, mode 0600, served on the master's service loop
(``forkserve.services.serviceloop``: one thread for every connection, at most ``MAX_CONNECTIONS``
of them, a deadline for each request line) so a slow or stuck client never holds up the master's
loop, and many of them cost a bounded number of threads and fds. Each request and each answer is
one line of JSON, checked (``forkserve.services.controlrequest``) before anything acts on it; the
actions, which wait, run on a pool of ``POOL_SIZE`` threads. Before reading anything the server
asks the kernel who is on the other end (``SO_PEERCRED``): only the master's own user or root may
steer it; anyone else gets one line saying so. File permissions alone would do on a private
directory, but an operator may point ``--control-socket`` anywhere, and the uid check holds
wherever the socket is.

Actions run where they must: ``status`` takes its snapshot on the master's thread
(``master.call``), so the workers it lists are exactly the live ones; ``reload``, ``scale`` and
``stop`` ask the master through its thread-safe methods and then wait, on a pool thread, for the
fleet events that say the action completed (``reload_finished`` or ``reload_aborted`` of the
generation it started; exactly N workers ready; ``stopped``), so the
command returns when the thing is done, or says why not.

The service loop starts with the socket's first client, not with the master: until then a
``Doorbell`` thread waits for one, and a master nobody steers never loads asyncio.

Rejected: a signal-per-action interface (what HUP/TTIN already are) cannot answer; an HTTP port
would need its own authentication where a unix socket has the kernel's.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forkserve.common import faults
from forkserve.errors import ConfigError
from forkserve.services import controlpath, events
from forkserve.services.controlrequest import MAX_REQUEST, BadRequest, Request, parse
from forkserve.services.events import FleetEvent
from forkserve.services.resilience import Pacer
from forkserve.services.serviceloop import (
    Connection,
    Doorbell,
    LineTooLong,
    Pool,
    ServiceLoop,
    StreamServer,
    hang_up,
    read_line,
    send,
)
from forkserve.services.status import FleetStatus, settled, snapshot

if TYPE_CHECKING:
    from forkserve.services.port import MasterPort

logger = logging.getLogger("forkserve")

MASTER_ANSWER = 5.0  # seconds the master's thread has to run a call before we give up on it
POLL = 0.25
MAX_CONNECTIONS = 32
POOL_SIZE = 4
# A client has this long to send each request line, counted from when the server starts waiting
# for it (after connecting, or after the previous answer): enough for `ctl top --interval 60`.
REQUEST_DEADLINE = 300.0
SEND_DEADLINE = 10.0
STOP_GRACE = 2.0


def _line(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer).encode() + b"\n"


BUSY = _line(
    {"ok": False, "code": "busy", "error": "every control connection is answering a request; try again"}
)


def peer_uid(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process on the other end of a unix socket, from the kernel."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


def may_steer(uid: int, owner: int) -> bool:
    return uid == owner or uid == 0


class ActionFailed(Exception):
    def __init__(self, message: str, code: str = "failed", **data: Any) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class ControlService:
    name = "control"

    def __init__(self, path: str | None, loop: ServiceLoop | None = None) -> None:
        self.requested = path
        self.path: Path | None = None
        self.master: MasterPort | None = None
        self.started_at = time.monotonic()
        self.loop = loop or ServiceLoop()
        self.pool = Pool("control", POOL_SIZE)
        self._server: StreamServer | None = None
        self._doorbell: Doorbell | None = None
        self._serving = False
        self._may_serve = False
        self._start_errors = Pacer("starting the control socket's thread")
        self._feeds: list[queue.SimpleQueue[FleetEvent]] = []
        self._lock = threading.Lock()
        self._inode = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self, master: MasterPort) -> None:
        self.master = master
        try:
            self.path = self._choose_path()
            sock = self._bind(self.path)
        except ConfigError as error:
            if self.requested:
                raise
            # The default place is a convenience: a read-only /run or /tmp must not stop a server.
            logger.warning("serving without a control socket: %s", error)
            self.path = None
            return
        self._server = StreamServer(
            sock, what="the control socket", fault_point=faults.CONTROL_ACCEPT,
            limit=MAX_CONNECTIONS, handle=self._handle, refusal=BUSY,
        )  # fmt: skip
        master.events.subscribe(self._on_event)
        if master.exec_mode:
            self._may_serve = True
            self._start_serving()
        # else: the master forks the zygote from itself, and forking a process that runs threads
        # can deadlock the child; clients wait in the listen queue until the first worker serves.
        logger.info("Control socket: %s (forkserve ctl status)", self.path)

    def _start_serving(self) -> None:
        # The service loop starts with the first client: until then a Doorbell waits for one.
        if self._server is None or self._serving or self._doorbell is not None:
            return
        bell = Doorbell(self._server.sock, self._client_waiting, "control")
        try:
            bell.start()
        except (OSError, RuntimeError) as error:
            # No pipe or thread to be had now (out of fds, memory or tasks): the next fleet event
            # tries again.
            self._start_errors.failed(error)
            return
        self._doorbell = bell

    def _client_waiting(self, client: socket.socket | None) -> None:
        # On the doorbell's thread: the loop is started from the master's, like everything else.
        if self.master is not None:
            self.master.call(lambda: self._serve_now(client))
        elif client is not None:
            client.close()

    def _serve_now(self, first: socket.socket | None = None) -> None:
        bell, self._doorbell = self._doorbell, None
        if bell is not None:
            bell.close()
        if self._server is None or self._serving:
            if first is not None:
                first.close()  # stopped meanwhile
            return
        try:
            self.loop.acquire()
        except (OSError, RuntimeError) as error:
            # No thread to be had now (out of memory or tasks): the next fleet event tries again.
            # The client that rang sees its connection close and can try again.
            if first is not None:
                first.close()
            self._start_errors.failed(error)
            return
        self._start_errors.worked()
        self._serving = True
        self.loop.submit(self._server.serve(first))

    def _bind(self, path: Path) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # The umask keeps the socket private from the moment it exists, not just after chmod.
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)
            self._inode = path.stat().st_ino
            sock.listen(64)
        except OSError as error:
            sock.close()
            raise ConfigError(
                f"cannot create the control socket {path}: {error.strerror or error}; "
                "pass another --control-socket PATH, or --control-socket none"
            ) from None
        finally:
            os.umask(old_umask)
        return sock

    def _choose_path(self) -> Path:
        if self.requested:
            path = Path(self.requested).absolute()
            controlpath.claim(path)
            return path
        directory = controlpath.default_dir()
        controlpath.prepare_dir(directory)
        controlpath.remove_stale(directory)
        return controlpath.default_path(directory, os.getpid())

    def stop(self) -> None:
        bell, self._doorbell = self._doorbell, None
        if bell is not None:
            bell.close()
        server, self._server = self._server, None
        if server is not None:
            if self._serving:
                # Let a `ctl stop` waiting for the "stopped" event write its answer.
                with contextlib.suppress(Exception):
                    self.loop.submit(server.close(STOP_GRACE)).result(STOP_GRACE + 1)
                self.loop.release()
            else:
                server.sock.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                if self.path.stat().st_ino == self._inode:
                    self.path.unlink()

    # ------------------------------------------------------------------ events

    def _on_event(self, event: FleetEvent) -> None:
        # On the master's thread: hand the event over, nothing more.
        if event.kind in (events.SERVING, events.STOPPING):
            self._may_serve = True
        if self._may_serve and not self._serving:
            self._start_serving()
        with self._lock:
            feeds = list(self._feeds)
        for feed in feeds:
            feed.put(event)

    @contextlib.contextmanager
    def _watch(self) -> Iterator[queue.SimpleQueue[FleetEvent]]:
        """Events from now on, for one waiting action."""
        feed: queue.SimpleQueue[FleetEvent] = queue.SimpleQueue()
        with self._lock:
            self._feeds.append(feed)
        try:
            yield feed
        finally:
            with self._lock:
                self._feeds.remove(feed)

    # ------------------------------------------------------------------ connections

    async def _handle(self, connection: Connection) -> None:
        sock = connection.sock
        pid, uid = peer_uid(sock)
        if not may_steer(uid, os.getuid()):
            logger.warning(
                "control socket: refused pid %d of uid %d: only uid %d or root may steer this server",
                pid, uid, os.getuid(),
            )  # fmt: skip
            await send(sock, _line({
                "ok": False, "code": "forbidden",
                "error": f"uid {uid} may not control this server (only uid {os.getuid()} or root)",
            }), SEND_DEADLINE)  # fmt: skip
            await hang_up(sock)
            return
        buffer = bytearray()
        while True:
            connection.busy = False
            try:
                line = await read_line(sock, buffer, time.monotonic() + REQUEST_DEADLINE, MAX_REQUEST)
            except LineTooLong:
                # The rest of the line may still be coming: answer, and close rather than resync.
                too_long = _bad(f"a request is one line of at most {MAX_REQUEST} bytes")
                await send(sock, _line(too_long), SEND_DEADLINE)
                await hang_up(sock)
                return
            if line is None:
                return
            connection.busy = True
            try:
                answer = await self.pool.run(functools.partial(self._answer, line))
            except OSError as error:
                answer = {"ok": False, "code": "failed", "error": f"cannot act now: {error.strerror}"}
            await send(sock, _line(answer), SEND_DEADLINE)

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = parse(line)
        except BadRequest as error:
            return _bad(str(error))
        actions: dict[str, Callable[[Request], dict[str, Any]]] = {
            "status": self.status,
            "reload": self.reload,
            "scale": self.scale,
            "stop": self.stop_server,
        }
        try:
            return {"ok": True, **actions[request.op](request)}
        except ActionFailed as failure:
            return {"ok": False, "code": failure.code, "error": str(failure), **failure.data}
        except Exception as error:
            logger.exception("control socket: %s failed", request.op)
            return {"ok": False, "code": "failed", "error": f"{type(error).__name__}: {error}"}

    # ------------------------------------------------------------------ actions

    def _on_master(self, action: Callable[[], Any]) -> Any:
        assert self.master is not None
        return _answer_of(self.master.call(action))

    def _snapshot(self) -> FleetStatus:
        master = self.master
        assert master is not None
        status: FleetStatus = self._on_master(lambda: snapshot(master, started_at=self.started_at))
        return status

    def status(self, request: Request) -> dict[str, Any]:
        return {"status": self._snapshot().as_dict()}

    def reload(self, request: Request) -> dict[str, Any]:
        master = self.master
        assert master is not None
        wait = request.timeout

        def start() -> int | None:
            master.begin_reload()
            return master.state.reloading

        with self._watch() as feed:
            generation = self._on_master(start)
            if generation is None:
                raise ActionFailed("the server is stopping; nothing to reload", "refused")
            ended = _wait_for(
                feed,
                lambda e: (
                    e.kind in (events.RELOAD_FINISHED, events.RELOAD_ABORTED, events.STOPPING)
                    and e.fields.get("generation", generation) == generation
                ),
                wait,
            )
        if ended is None:
            raise ActionFailed(
                f"reload to generation {generation} still rolling after {wait:g} s", "timeout",
                generation=generation,
            )  # fmt: skip
        if ended.kind == events.RELOAD_FINISHED:
            return {"message": f"reloaded: {ended.message}", "generation": generation, **ended.fields}
        if ended.kind == events.STOPPING:
            raise ActionFailed("the server began to stop during the reload", "failed", generation=generation)
        raise ActionFailed(ended.message, "failed", generation=generation)

    def scale(self, request: Request) -> dict[str, Any]:
        master = self.master
        assert master is not None
        wait = request.timeout
        before = self._snapshot()
        target = request.to if request.to is not None else before.desired + (request.delta or 0)
        with self._watch() as feed:
            accepted = _answer_of(master.set_workers(target, reason="control"))
            if not accepted:
                if before.stopping:
                    raise ActionFailed("the server is stopping", "refused")
                limit = master.worker_limit
                raise ActionFailed(
                    f"cannot run {target} workers: the number must be from 1 to {limit}", "refused",
                    desired=before.desired,
                )  # fmt: skip
            deadline = time.monotonic() + wait
            while True:
                now = self._snapshot()
                workers = [w.__dict__ for w in now.workers]
                if now.desired != target:
                    raise ActionFailed(
                        f"superseded: the number of workers was set to {now.desired} meanwhile", "failed",
                        desired=now.desired,
                    )  # fmt: skip
                if now.stopping:
                    raise ActionFailed("the server began to stop", "failed")
                if settled(workers, target, now.generation):
                    break
                if time.monotonic() >= deadline:
                    ready = sum(1 for w in now.workers if w.state == "ready")
                    raise ActionFailed(
                        f"{ready} of {target} workers ready after {wait:g} s (the log says why)", "timeout",
                        desired=target,
                    )  # fmt: skip
                # Woken by the next worker event, or re-checked after a moment.
                _wait_for(feed, lambda e: e.kind in (events.WORKER_READY, events.WORKER_EXITED), POLL)
        return {
            "message": f"workers: {before.desired} -> {target}, all ready",
            "before": before.desired,
            "after": target,
            "pids": sorted(w.pid for w in now.workers),
        }

    def stop_server(self, request: Request) -> dict[str, Any]:
        master = self.master
        assert master is not None
        wait = request.timeout
        graceful = request.graceful
        with self._watch() as feed:
            master.stop(graceful)
            stopped = _wait_for(feed, lambda e: e.kind == events.STOPPED, wait)
        if stopped is None:
            raise ActionFailed(f"the server is still stopping after {wait:g} s", "timeout")
        return {"message": "stopped", **stopped.fields}


def _bad(error: str) -> dict[str, Any]:
    return {"ok": False, "code": "bad-request", "error": error}


def _answer_of(future: Future[Any]) -> Any:
    try:
        return future.result(MASTER_ANSWER)
    except FutureTimeout:  # not yet the builtin TimeoutError on Python 3.10
        raise ActionFailed(f"the master did not answer within {MASTER_ANSWER:g} s", "timeout") from None


def _wait_for(
    feed: queue.SimpleQueue[FleetEvent], wanted: Callable[[FleetEvent], bool], timeout: float
) -> FleetEvent | None:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            event = feed.get(timeout=left)
        except queue.Empty:
            return None
        if wanted(event):
            return event
