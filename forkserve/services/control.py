"""The control socket: ``forkserve ctl`` talks to the master here.

Theory of operation. A unix stream socket, mode 0600, served by a thread of its own (one more per
connection) so a slow or stuck client never holds up the master's loop. Each request and each
answer is one line of JSON. Before reading anything the server asks the kernel who is on the
other end (``SO_PEERCRED``): only the master's own user or root may steer it; anyone else gets one
line saying so. File permissions alone would do on a private directory, but an operator may point
``--control-socket`` anywhere, and the uid check holds wherever the socket is.

Actions run where they must: ``status`` takes its snapshot on the master's thread
(``master.call``), so the workers it lists are exactly the live ones; ``reload``, ``scale`` and
``stop`` ask the master through its thread-safe methods and then wait, in the connection's
thread, for the fleet events that say the action completed (``reload_finished`` or
``reload_aborted`` of the generation it started; exactly N workers ready; ``stopped``), so the
command returns when the thing is done, or says why not.

Rejected: a signal-per-action interface (what HUP/TTIN already are) cannot answer; an HTTP port
would need its own authentication where a unix socket has the kernel's.
"""

from __future__ import annotations

import contextlib
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

from forkserve.errors import ConfigError
from forkserve.services import controlpath, events
from forkserve.services.events import FleetEvent
from forkserve.services.status import FleetStatus, settled, snapshot

if TYPE_CHECKING:
    from forkserve.services.port import MasterPort

logger = logging.getLogger("forkserve")

MAX_REQUEST = 64 * 1024
MASTER_ANSWER = 5.0  # seconds the master's thread has to run a call before we give up on it
DEFAULT_WAIT = 60.0
POLL = 0.25


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

    def __init__(self, path: str | None) -> None:
        self.requested = path
        self.path: Path | None = None
        self.master: MasterPort | None = None
        self.started_at = time.monotonic()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._handlers: set[threading.Thread] = set()
        self._feeds: list[queue.SimpleQueue[FleetEvent]] = []
        self._lock = threading.Lock()
        self._inode = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self, master: MasterPort) -> None:
        self.master = master
        try:
            self.path = self._choose_path()
            self._sock = self._bind(self.path)
        except ConfigError as error:
            if self.requested:
                raise
            # The default place is a convenience: a read-only /run or /tmp must not stop a server.
            logger.warning("serving without a control socket: %s", error)
            self.path = None
            return
        master.events.subscribe(self._on_event)
        if master.exec_mode:
            self._start_thread()
        # else: the master forks the zygote from itself, and forking a process that runs threads
        # can deadlock the child; clients wait in the listen queue until the first worker serves.
        logger.info("Control socket: %s (forkserve ctl status)", self.path)

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="forkserve-control", daemon=True)
        self._thread.start()

    def _bind(self, path: Path) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # The umask keeps the socket private from the moment it exists, not just after chmod.
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)
            self._inode = path.stat().st_ino
            sock.listen(16)
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
        if self._sock is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not.
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        if self._thread is not None:
            self._thread.join(2.0)
        # Let a `ctl stop` waiting for the "stopped" event write its answer.
        deadline = time.monotonic() + 2.0
        for handler in list(self._handlers):
            handler.join(max(0.0, deadline - time.monotonic()))
        if self.path is not None:
            with contextlib.suppress(OSError):
                if self.path.stat().st_ino == self._inode:
                    self.path.unlink()

    # ------------------------------------------------------------------ events

    def _on_event(self, event: FleetEvent) -> None:
        # On the master's thread: hand the event over, nothing more.
        if self._thread is None and event.kind in (events.SERVING, events.STOPPING):
            self._start_thread()
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

    def _serve(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed by stop()
            handler = threading.Thread(target=self._handle, args=(conn,), name="forkserve-ctl", daemon=True)
            self._handlers.add(handler)
            handler.start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rwb") as stream:
                pid, uid = peer_uid(conn)
                if not may_steer(uid, os.getuid()):
                    logger.warning(
                        "control socket: refused pid %d of uid %d: only uid %d or root may steer this server",
                        pid, uid, os.getuid(),
                    )  # fmt: skip
                    self._send(stream, {
                        "ok": False, "code": "forbidden",
                        "error": f"uid {uid} may not control this server (only uid {os.getuid()} or root)",
                    })  # fmt: skip
                    return
                while True:
                    line = stream.readline(MAX_REQUEST)
                    if not line:
                        return
                    self._send(stream, self._answer(line))
        except OSError:
            pass  # the client went away; nothing to tell it
        finally:
            self._handlers.discard(threading.current_thread())

    @staticmethod
    def _send(stream: Any, answer: dict[str, Any]) -> None:
        stream.write(json.dumps(answer).encode() + b"\n")
        stream.flush()

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
        except ValueError as error:
            return {"ok": False, "code": "bad-request", "error": f"unreadable request: {error}"}
        actions: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "status": self.status,
            "reload": self.reload,
            "scale": self.scale,
            "stop": self.stop_server,
        }
        action = actions.get(str(request.get("op")))
        if action is None:
            return {"ok": False, "code": "bad-request", "error": f"unknown op {request.get('op')!r}"}
        try:
            return {"ok": True, **action(request)}
        except ActionFailed as failure:
            return {"ok": False, "code": failure.code, "error": str(failure), **failure.data}
        except Exception as error:
            logger.exception("control socket: %s failed", request.get("op"))
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

    def status(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"status": self._snapshot().as_dict()}

    def reload(self, request: dict[str, Any]) -> dict[str, Any]:
        master = self.master
        assert master is not None
        wait = float(request.get("timeout") or DEFAULT_WAIT)

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

    def scale(self, request: dict[str, Any]) -> dict[str, Any]:
        master = self.master
        assert master is not None
        wait = float(request.get("timeout") or DEFAULT_WAIT)
        before = self._snapshot()
        try:
            target = int(request["to"]) if "to" in request else before.desired + int(request["delta"])
        except (KeyError, TypeError, ValueError):
            raise ActionFailed('scale takes "to": N or "delta": K (whole numbers)', "bad-request") from None
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

    def stop_server(self, request: dict[str, Any]) -> dict[str, Any]:
        master = self.master
        assert master is not None
        wait = float(request.get("timeout") or DEFAULT_WAIT)
        graceful = bool(request.get("graceful", True))
        with self._watch() as feed:
            master.stop(graceful)
            stopped = _wait_for(feed, lambda e: e.kind == events.STOPPED, wait)
        if stopped is None:
            raise ActionFailed(f"the server is still stopping after {wait:g} s", "timeout")
        return {"message": "stopped", **stopped.fields}


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
