"""The master's side of --balance: a thread beside the master's loop, never on it.

Theory of operation. In ``kernel`` mode there is nothing to run: every worker accepts on the
shared sockets. The other modes are a service (``forkserve/services/services.py``) with one thread:

* ``round-robin``, ``least-conn``, ``ip-hash`` (``Dispatcher``): the thread accepts on the
  listening sockets and hands each connection to the worker ``policy.balance.choose`` names, over
  that worker's channel (``forkserve/common/handoff.py``). It reads the scoreboard for who is ready and
  how loaded, counts what it has sent to each slot, and takes back connections left in the channel
  of a worker that is gone. Per connection it costs an accept, a choice and a sendmsg; keep-alive
  connections cost nothing after that. Its own thread keeps the master's loop free, and a
  dispatcher that falls behind shows as a longer accept queue, as a busy worker would in kernel
  mode.
* ``reuseport`` (``Steering``): the sockets are bound once, one per worker id
  (``forkserve/services/reuseport.py``); the thread reads the scoreboard every ``POLL`` seconds and
  re-attaches the group's steering program when the set of serving worker ids changes.

The thread starts with the first ready worker, not with the service: before that it has nothing
to do, and a master that forks its zygote (an app object) must not have threads when it forks.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from forkserve.common import faults, handoff
from forkserve.common.scoreboard import Scoreboard, SlotState
from forkserve.common.sockets import Listener
from forkserve.config.settings import Config
from forkserve.policy.balance import (
    HANDOFF_MODES,
    LEAST_CONN,
    READY,
    REUSEPORT,
    STALL_AFTER,
    WorkerLoad,
    choose,
    eligible,
    serving_ids,
    take_back_from,
)
from forkserve.services import events, reuseport
from forkserve.services.resilience import Pacer

if TYPE_CHECKING:
    from forkserve.services.port import MasterPort

logger = logging.getLogger("forkserve")

POLL = 0.05
# Connections accepted per wake-up before the scoreboard is read again.
BATCH = 64
# While a connection has nowhere to go (every worker far behind): how often to look again.
ROOM_POLL = 0.001
# A free slot's channel is checked for left-over connections this often.
RECLAIM_EVERY = 0.1


class Sent:
    """What the balancer handed to one slot's worker and that worker has not picked up yet.

    The worker counts what it takes (``handoffs_taken``); both sides take from the front of the
    channel (the worker reading, the balancer taking back), so the send times of the connections
    still waiting are the newest ``len(times)`` ones.
    """

    def __init__(self) -> None:
        self.pid = 0
        self.taken = 0
        self.times: collections.deque[float] = collections.deque()

    def observe(self, pid: int, taken: int, now: float) -> tuple[int, float]:
        """(connections waiting, seconds the oldest has waited) for PID, which has TAKEN so far."""
        if pid != self.pid:
            self.pid, self.taken = pid, taken
            self.times.clear()
        self.forget(taken - self.taken)
        self.taken = taken
        return len(self.times), (now - self.times[0] if self.times else 0.0)

    def forget(self, count: int) -> None:
        for _ in range(min(count, len(self.times))):
            self.times.popleft()


def loads(scoreboard: Scoreboard, slots: list[int], now: float, sent: dict[int, Sent]) -> list[WorkerLoad]:
    """A snapshot of SLOTS for the policy, with what SENT says is waiting in each channel."""
    found = []
    for index in slots:
        slot = scoreboard[index]
        pid = slot.pid
        if not pid:
            continue
        pending, pending_age = (
            sent[index].observe(pid, slot.handoffs_taken, now) if index in sent else (0, 0.0)
        )
        found.append(
            WorkerLoad(
                slot=index,
                worker_id=slot.worker_id,
                generation=slot.generation,
                state=slot.state,
                heartbeat_age=now - slot.heartbeat,
                connections=slot.connections,
                pending=pending,
                in_flight=slot.in_flight,
                pending_age=pending_age,
            )
        )
    return found


class Balancer(abc.ABC):
    """What the master needs of any balancing mode."""

    name = "balancer"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.mode = config.balance
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        # Never block the master's thread: a full wake-up socket already means "wake up".
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.master: MasterPort | None = None
        self.errors = Pacer(f"the {self.mode} balancer")
        self.accept_errors = Pacer(f"the {self.mode} balancer's accept")

    # ---------------------------------------------------------------- the service's interface

    def start(self, master: MasterPort) -> None:
        self.master = master
        self.scoreboard = master.scoreboard
        self.prepare(master.listeners, master.scoreboard)
        master.events.subscribe(self._on_event)

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(5)
        self.close()
        self._wake_r.close()
        self._wake_w.close()

    @abc.abstractmethod
    def prepare(self, listeners: list[Listener], scoreboard: Scoreboard) -> None:
        """Create the sockets and channels the workers will inherit (before the first zygote)."""

    def zygote_listener_fds(self, listeners: list[Listener]) -> list[int]:
        return [listener.sock.fileno() for listener in listeners]

    def zygote_fds(self) -> list[int]:
        return []

    @abc.abstractmethod
    def close(self) -> None:
        """Close every socket this balancer holds."""

    @abc.abstractmethod
    def close_in_child(self) -> None:
        """In a zygote forked from the master: drop the master's ends, keep what workers need."""

    @abc.abstractmethod
    def run(self) -> None:
        """The balancer thread's loop, until stop()."""

    # ---------------------------------------------------------------- shared

    def _on_event(self, event: events.FleetEvent) -> None:
        # On the master's thread: only note and wake.
        if event.kind == events.WORKER_READY and self._thread is None:
            thread = threading.Thread(target=self._run, name=f"forkserve-{self.mode}", daemon=True)
            thread.start()  # if it cannot start now (no memory), the next worker_ready tries again
            self._thread = thread
        elif event.kind == events.STOPPING:
            self.stopping(str(event.fields.get("mode")))
        self._wake()

    @abc.abstractmethod
    def stopping(self, mode: str) -> None:
        """The server began to stop (MODE graceful or immediate): called on the master's thread."""

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run()
                return
            except OSError as error:
                # Out of fds or memory (a selector, a channel): wait for it to pass, then go on.
                self._stop.wait(self.errors.failed(error))
            except Exception:
                # A bug: without this thread nothing takes new connections, so stop and let a
                # supervisor restart the server.
                logger.exception("the %s balancer failed; stopping the server", self.mode)
                if self.master is not None:
                    self.master.stop()
                return

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_r.recv(4096)

    def _occupied(self) -> list[int]:
        return [index for index in range(self.scoreboard.capacity) if self.scoreboard[index].pid]


class Dispatcher(Balancer):
    """round-robin, least-conn, ip-hash: accept here, hand each connection to one worker."""

    def prepare(self, listeners: list[Listener], scoreboard: Scoreboard) -> None:
        # Copies: the master closes its own when it stops, this thread closes these once it has
        # emptied the accept queue.
        self.listeners = [listener.sock.dup() for listener in listeners]
        for sock in self.listeners:
            sock.setblocking(False)
        self.channels = handoff.channel_pairs(scoreboard.capacity)
        self.sent = {index: Sent() for index in range(scoreboard.capacity)}
        self.turn = 0
        self._stop_at: float | None = None
        self._graceful = True
        self.placed = 0
        self.serving: list[int] = []

    def zygote_listener_fds(self, listeners: list[Listener]) -> list[int]:
        return []  # workers take connections from their channel only

    def zygote_fds(self) -> list[int]:
        return [worker_end.fileno() for _, worker_end in self.channels]

    def close(self) -> None:
        reuseport.close_quietly(self.listeners)
        for master_end, worker_end in self.channels:
            for fd in handoff.take_back(worker_end):
                os.close(fd)
            reuseport.close_quietly([master_end, worker_end])

    def close_in_child(self) -> None:
        reuseport.close_quietly(self.listeners)
        reuseport.close_quietly([master_end for master_end, _ in self.channels])
        self._wake_r.close()
        self._wake_w.close()

    def stopping(self, mode: str) -> None:
        self._graceful = mode == "graceful"
        delay = self.config.shutdown_delay if self._graceful else 0.0
        # A later, immediate stop cuts a graceful one short.
        at = time.monotonic() + delay
        self._stop_at = at if self._stop_at is None else min(self._stop_at, at)

    def run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._wake_r, selectors.EVENT_READ)
        listening = False
        occupied = self._occupied()
        occupied_at = reclaim_at = time.monotonic()
        previous: dict[int, int] = {}
        while not self._stop.is_set():
            now = time.monotonic()
            if self._stop_at is not None and now >= self._stop_at:
                self._finish()
                return
            if now >= occupied_at:
                occupied = self._occupied()
                occupied_at = now + POLL
                self._log_serving(occupied)
            if now >= reclaim_at:
                previous = self._reclaim(previous)
                reclaim_at = now + RECLAIM_EVERY
            candidates = self._candidates(occupied)
            timeout = POLL
            if self.mode == LEAST_CONN:
                self._take_back_from_stalled(candidates)
                timeout = self._next_stall_check(timeout)
            # Nobody to hand to: leave connections in the kernel's queue rather than accept them.
            if bool(candidates) != listening:
                listening = not listening
                for sock in self.listeners:
                    if listening:
                        selector.register(sock, selectors.EVENT_READ)
                    else:
                        selector.unregister(sock)
            for key, _ in selector.select(timeout):
                if key.fileobj is self._wake_r:
                    self._drain_wake()
                    continue
                assert isinstance(key.fileobj, socket.socket)
                # Read just now: a worker that began draining a moment ago gets nothing more.
                self._accept_batch(key.fileobj, self._candidates(occupied))
        selector.close()

    def _candidates(self, occupied: list[int]) -> list[WorkerLoad]:
        views = loads(self.scoreboard, occupied, time.monotonic(), self.sent)
        return eligible(views, hung_after=self.config.timeout)

    def _log_serving(self, occupied: list[int]) -> None:
        views = loads(self.scoreboard, occupied, time.monotonic(), self.sent)
        ids = serving_ids(views, hung_after=self.config.timeout)
        if ids != self.serving:
            self.serving = ids
            logger.info("%s: new connections go to %s", self.mode, _workers(ids))

    def _take_back_from_stalled(self, candidates: list[WorkerLoad]) -> None:
        """least-conn: a worker stuck in a long request does not keep connections waiting."""
        for slot in take_back_from(candidates):
            fds = handoff.take_back(self.channels[slot][1])
            self.sent[slot].forget(len(fds))
            others = [c for c in candidates if c.slot != slot and not c.stalled]
            for fd in fds:
                others = self._place(fd, _peer_address(fd), others)
                os.close(fd)

    def _next_stall_check(self, timeout: float) -> float:
        """Wake when the oldest connection waiting in a channel would come to count as stalled.

        A worker already stalled was dealt with on this pass (or every worker is stalled): it is
        looked at again with the next connection or poll, not in a busy loop.
        """
        now = time.monotonic()
        for sent in self.sent.values():
            if sent.times and sent.times[0] + STALL_AFTER > now:
                timeout = min(timeout, sent.times[0] + STALL_AFTER - now + 0.0005)
        return timeout

    def _accept_batch(self, listener: socket.socket, candidates: list[WorkerLoad]) -> None:
        for _ in range(BATCH):
            if not candidates:
                return
            try:
                faults.check(faults.BALANCER_ACCEPT)
                conn, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                # EMFILE and the like: the connection stays queued in the kernel; trying again at
                # once would spin (the listener is still readable) and log a line each time.
                self._stop.wait(self.accept_errors.failed(error))
                return
            self.accept_errors.worked()
            with conn:
                client = address[0] if isinstance(address, tuple) else ""
                candidates = self._place(conn.fileno(), client, candidates)

    def _place(self, fd: int, client: str, candidates: list[WorkerLoad]) -> list[WorkerLoad]:
        """Send FD to the chosen worker; return the candidates as they stand after it."""
        full: set[int] = set()
        warn_at = time.monotonic() + 5.0
        while True:
            open_to = [c for c in candidates if c.slot not in full]
            slot = choose(self.mode, open_to, turn=self.turn, client=client)
            if slot is None:
                if self._stop.is_set() or self._stop_at is not None:
                    logger.warning("stopping with nowhere to hand a connection: it is closed unanswered")
                    return candidates
                if time.monotonic() > warn_at:
                    logger.warning("no worker has taken a connection for 5 s (all stuck); still waiting")
                    warn_at = time.monotonic() + 60.0
                # Every worker is far behind: wait for one to catch up.
                time.sleep(ROOM_POLL)
                full.clear()
                candidates = self._candidates(self._occupied())
                continue
            if handoff.send_connection(self.channels[slot][0], fd):
                break
            full.add(slot)
        self.turn += 1
        self.placed += 1
        self.sent[slot].times.append(time.monotonic())
        if self.mode != LEAST_CONN:
            return candidates  # only least-conn looks at what each worker has waiting
        return [replace(c, pending=c.pending + 1) if c.slot == slot else c for c in candidates]

    def _reclaim(self, previous: dict[int, int]) -> dict[int, int]:
        """Hand again what a gone worker left in its channel; returns slot -> pid as now."""
        current = {index: self.scoreboard[index].pid for index in range(self.scoreboard.capacity)}
        for index, pid in previous.items():
            if pid and not current.get(index):
                self._rehand(handoff.take_back(self.channels[index][1]))
        return current

    def _rehand(self, fds: list[int]) -> None:
        if not fds:
            return
        logger.info(
            "handing %d connection%s left by a stopped worker to others",
            len(fds),
            "" if len(fds) == 1 else "s",
        )
        occupied = self._occupied()
        for fd in fds:
            self._place(fd, _peer_address(fd), self._candidates(occupied))
            os.close(fd)

    def _finish(self) -> None:
        """Server stop: empty the accept queue into the workers, stop listening, tell each END."""
        if self._graceful:
            now = time.monotonic()
            # Draining workers still read their channel until END: they serve these.
            views = [
                replace(load, state=READY) if load.state == SlotState.DRAINING else load
                for load in loads(self.scoreboard, self._occupied(), now, self.sent)
            ]
            candidates = eligible(views, hung_after=self.config.timeout)
            for sock in self.listeners:
                while candidates:
                    before = self.placed
                    self._accept_batch(sock, candidates)
                    if self.placed == before:
                        break
        reuseport.close_quietly(self.listeners)
        for master_end, _ in self.channels:
            with contextlib.suppress(OSError):
                master_end.send(handoff.END)


def _workers(ids: list[int]) -> str:
    if not ids:
        return "no worker (they wait in the accept queue)"
    return ("worker " if len(ids) == 1 else "workers ") + ", ".join(map(str, ids))


def _peer_address(fd: int) -> str:
    """The client's IP address (ip-hash's key) of an accepted connection, "" if it has none."""
    try:
        with socket.socket(fileno=os.dup(fd)) as probe:
            peer = probe.getpeername()
    except OSError:
        return ""
    return str(peer[0]) if isinstance(peer, tuple) else ""


class Steering(Balancer):
    """reuseport: one socket per worker id, steered to the ids that serve."""

    def prepare(self, listeners: list[Listener], scoreboard: Scoreboard) -> None:
        self.primaries = [listener.sock for listener in listeners]
        self.tcp = [sock for sock in self.primaries if sock.family in (socket.AF_INET, socket.AF_INET6)]
        # Worker ids 2..N: as many as the fleet can ever have (scale() allows capacity // 2).
        self.rows: list[list[socket.socket | None]] = []
        for _ in range(2, scoreboard.capacity // 2 + 1):
            row: list[socket.socket | None] = []
            for sock in self.primaries:
                row.append(reuseport.bind_like(sock, self.config.backlog) if sock in self.tcp else None)
            self.rows.append(row)
        self.targets: list[int] | None = None
        self._steer([])

    def zygote_fds(self) -> list[int]:
        return [sock.fileno() if sock is not None else -1 for row in self.rows for sock in row]

    def close(self) -> None:
        reuseport.close_quietly([sock for row in self.rows for sock in row if sock is not None])

    def close_in_child(self) -> None:
        self._wake_r.close()
        self._wake_w.close()

    def stopping(self, mode: str) -> None:
        # The workers empty their own queues; the master's copies must not keep them listening.
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            views = loads(self.scoreboard, self._occupied(), now, {})
            self._steer(serving_ids(views, hung_after=self.config.timeout))
            self._stop.wait(POLL)
        self.close()

    def _steer(self, worker_ids: list[int]) -> None:
        targets = [worker_id - 1 for worker_id in worker_ids if worker_id - 1 <= len(self.rows)]
        if targets == self.targets:
            return
        program = reuseport.steering_program(targets)
        for sock in self.tcp:
            reuseport.attach(sock, program)
        if self.targets is not None:
            logger.info(
                "reuseport: new connections go to %s",
                _workers(worker_ids) if worker_ids else "worker 1 (none serving)",
            )
        self.targets = targets


def for_config(config: Config) -> Balancer | None:
    if config.balance in HANDOFF_MODES:
        return Dispatcher(config)
    if config.balance == REUSEPORT:
        return Steering(config)
    return None
