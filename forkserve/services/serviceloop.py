"""The one thread that serves the master's sockets: the control socket and --metrics-bind.

Theory of operation. The master's side doors used to start a thread per connection, so anyone who
could connect could make the master start threads until it hit its limits, and a client sending
a byte a second held its thread forever. Now one asyncio loop, on one thread (``ServiceLoop``),
does all their socket I/O, and work that blocks (waiting on the master's thread, reading the
metrics files, waiting for a reload to finish) runs on a small fixed pool of daemon threads
(``Pool``). Whatever clients do, the master runs at most 1 + the pools' threads for them.

``StreamServer`` is the accept loop each side door runs on that thread. Its rules:

* at most ``limit`` connections at once. A connection beyond it takes the place of the oldest one
  that is only waiting for (or trickling in) its request; when every one is being answered, the
  newcomer gets the server's short refusal and is closed. So idle and slow clients cost a bounded
  number of fds and never lock out a client that sends its request;
* each handler enforces a total deadline for a request (``read_until``: the deadline is fixed
  when the wait starts, not renewed by each byte);
* an error from ``accept`` (EMFILE, ENFILE, ENOMEM, ...) is logged once through a ``Pacer``, the
  loop pauses with back-off (the connections wait in the kernel's queue meanwhile) and goes on;
* a client that leaves early costs a debug line at most.

Rejected: a thread per connection (unbounded); a fixed pool of threads each blocking on one client
(a few slow clients take them all); asyncio's ``start_server``, whose accept loop re-logs every
EMFILE through the loop's exception handler, once a second, and offers no place for a fault seam.

asyncio is imported by the functions that run on the loop, not by this module: the control socket
is on by default and rarely used, and a master that loaded asyncio (with ssl and
concurrent.futures) for it would carry 6 MiB that no other process shares. A ``Doorbell`` watches
such a socket until its first client and only then is the loop started (docs/design.md "Memory").
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import select
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from forkserve.common import faults
from forkserve.services.resilience import Pacer

if TYPE_CHECKING:
    import asyncio

logger = logging.getLogger("forkserve")

T = TypeVar("T")


class ServiceLoop:
    """One asyncio loop on one daemon thread, started by its first user, ended by its last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._users = 0

    def acquire(self) -> None:
        """Start the thread if it is not running; raises OSError or RuntimeError when it cannot."""
        import asyncio

        with self._lock:
            if self._loop is not None:
                self._users += 1
                return
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()
                loop.close()

            thread = threading.Thread(target=run, name="forkserve-services", daemon=True)
            try:
                thread.start()
            except BaseException:
                loop.close()
                raise
            started.wait(5)
            self._loop, self._thread = loop, thread
            self._users += 1

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        import asyncio

        assert self._loop is not None, "acquire() first"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0 or self._loop is None:
                return
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(5)


class Doorbell:
    """Calls RING(client) once, from a thread of its own, when a client first connects to a socket.

    Until then nothing of asyncio is loaded (the module's docstring says why): the thread sleeps in
    poll(), and accepts the first connection itself. A connection that closes without sending a
    byte is a probe, not a client: another master starting up checks this way whether the socket
    is live (forkserve.services.controlpath), and it must not cost this master its lean start, so
    it is dropped and the watch goes on. Any other connection (bytes sent, or nothing within
    ``PROBE_WAIT``) is handed to RING, accepted, for the server to admit first; RING gets None when
    the accept itself failed (out of fds), and the server's own accept loop meets the queue.
    ``close`` wakes and ends the thread if it has not rung.
    """

    PROBE_WAIT = 0.5

    def __init__(
        self, sock: socket.socket, ring: Callable[[socket.socket | None], object], name: str
    ) -> None:
        self.sock = sock
        self.ring = ring
        self.name = name
        self._wake: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching; raises OSError or RuntimeError when no pipe or thread is to be had."""
        self.sock.setblocking(False)  # an accept must not wait for a client that went away
        self._wake = os.pipe()
        thread = threading.Thread(target=self._watch, name=f"forkserve-{self.name}-bell", daemon=True)
        try:
            thread.start()
        except BaseException:
            self._close_pipe()
            raise
        self._thread = thread

    def _watch(self) -> None:
        assert self._wake is not None
        wake = self._wake[0]
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        poller.register(wake, select.POLLIN)
        while True:
            try:
                ready = {fd for fd, _ in poller.poll()}
                if wake in ready:
                    return
                client = self._accept()
            except OSError:
                self.ring(None)
                return
            if client is None:
                continue  # taken by someone else, or gone before the accept
            verdict = self._probe_or_client(client, wake)
            if verdict == "client":
                self.ring(client)
                return
            client.close()
            if verdict == "closing":
                return

    def _accept(self) -> socket.socket | None:
        try:
            client, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return None
        return client

    def _probe_or_client(self, client: socket.socket, wake: int) -> str:
        """ "probe" (closed having sent nothing), "client", or "closing" (close() was called)."""
        poller = select.poll()
        poller.register(client, select.POLLIN)
        poller.register(wake, select.POLLIN)
        try:
            ready = {fd for fd, _ in poller.poll(int(self.PROBE_WAIT * 1000))}
            if wake in ready:
                return "closing"
            if not ready:
                return "client"  # connected and quiet: a client that waits for us to speak
            return "client" if client.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) else "probe"
        except OSError:
            return "probe"  # reset by the peer: nobody to serve

    def close(self) -> None:
        if self._wake is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake[1], b"x")
        if self._thread is not None:
            self._thread.join(5)
        self._close_pipe()

    def _close_pipe(self) -> None:
        wake, self._wake = self._wake, None
        for fd in wake or ():
            with contextlib.suppress(OSError):
                os.close(fd)


class Pool:
    """At most SIZE daemon threads for blocking work, started as needed.

    Daemon threads, unlike ``ThreadPoolExecutor``'s: a control request still waiting for a
    reload must not hold up the master's exit.
    """

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, work: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._idle <= 0 and len(self._threads) < self.size:
                thread = threading.Thread(target=self._run, name=f"forkserve-{self.name}", daemon=True)
                try:
                    thread.start()
                except RuntimeError as error:  # can't start new thread: out of memory or tasks
                    if not self._threads:
                        future.set_exception(OSError(errno.EAGAIN, f"cannot start a thread: {error}"))
                        return future
                    # The threads there are will get to it.
                else:
                    self._threads.append(thread)
                    self._idle += 1
            self._idle -= 1
        self._jobs.put((work, future))
        return future

    async def run(self, work: Callable[[], T]) -> T:
        import asyncio

        return await asyncio.wrap_future(self.submit(work))

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            work, future = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(work())
                except BaseException as error:
                    future.set_exception(error)
            with self._lock:
                self._idle += 1

    def close(self, timeout: float) -> None:
        """Let queued work finish (for at most TIMEOUT seconds), then end the threads."""
        deadline = time.monotonic() + timeout
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class Deadline(Exception):
    """The client did not finish its request in time."""


async def receive(sock: socket.socket, deadline: float, size: int = 8192) -> bytes:
    """Some bytes from SOCK (b"" when it closed); raises ``Deadline`` at DEADLINE (monotonic)."""
    import asyncio

    left = deadline - time.monotonic()
    if left <= 0:
        raise Deadline
    try:
        return await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, size), left)
    except asyncio.TimeoutError:
        raise Deadline from None


async def read_line(sock: socket.socket, buffer: bytearray, deadline: float, limit: int) -> bytes | None:
    """The next line from SOCK (BUFFER keeps what follows it); None when the client closed.

    Raises ``Deadline`` at DEADLINE however the bytes trickle in, and ``LineTooLong`` past LIMIT.
    """
    while True:
        end = buffer.find(b"\n")
        if end >= 0:
            line = bytes(buffer[: end + 1])
            del buffer[: end + 1]
            return line
        if len(buffer) > limit:
            raise LineTooLong
        chunk = await receive(sock, deadline, min(65536, limit + 1 - len(buffer)) or 1)
        if not chunk:
            return None
        buffer += chunk


class LineTooLong(Exception):
    pass


async def send(sock: socket.socket, data: bytes, timeout: float) -> None:
    """Send DATA, or give up on a client that does not read it within TIMEOUT seconds."""
    import asyncio

    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.sock_sendall(sock, data), timeout)
    except asyncio.TimeoutError:
        raise Deadline from None


async def hang_up(sock: socket.socket, within: float = 1.0) -> None:
    """Close politely after an answer sent before the request was read to its end.

    Closing with unread bytes resets the connection, and the client may lose the answer: so
    half-close, and discard what still comes until the client hangs up (WITHIN seconds at most).
    """
    with contextlib.suppress(OSError, Deadline):
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + within
        while await receive(sock, deadline):
            pass


class Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.busy = False  # a request is being answered: not to be evicted
        self.since = time.monotonic()
        self.task: asyncio.Task[None] | None = None


Handler = Callable[[Connection], Awaitable[None]]


class StreamServer:
    def __init__(
        self,
        sock: socket.socket,
        *,
        what: str,
        fault_point: str,
        limit: int,
        handle: Handler,
        refusal: bytes,
    ) -> None:
        self.sock = sock
        self.limit = limit
        self.handle = handle
        self.refusal = refusal
        self.fault_point = fault_point
        self.what = what
        self.pacer = Pacer(f"accepting on {what}")
        self.connections: set[Connection] = set()
        self.evicted = 0
        self.refused = 0
        self._accepting: asyncio.Task[None] | None = None

    async def serve(self, first: socket.socket | None = None) -> None:
        """Accept and serve clients until closed; FIRST is one accepted already (a Doorbell's)."""
        import asyncio

        self.sock.setblocking(False)
        self._accepting = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if first is not None:
            await self._admit(first)
        while True:
            try:
                faults.check(self.fault_point)
                client, _ = await loop.sock_accept(self.sock)
            except asyncio.CancelledError:
                raise
            except OSError as error:
                if self.sock.fileno() < 0:
                    return  # closed by close()
                await asyncio.sleep(self.pacer.failed(error))
                continue
            self.pacer.worked()
            await self._admit(client)

    async def _admit(self, client: socket.socket) -> None:
        import asyncio

        client.setblocking(False)
        if len(self.connections) >= self.limit:
            waiting = [c for c in self.connections if not c.busy]
            if not waiting:
                self.refused += 1
                with contextlib.suppress(OSError):
                    client.send(self.refusal)  # non-blocking: what fits, fits
                client.close()
                return
            oldest = min(waiting, key=lambda c: c.since)
            self.evicted += 1
            self._drop(oldest)
            # Its fd is closed once its task has unwound: wait for that, or a burst of connections
            # (accepted without a pause while they queue) would hold many fds on their way out.
            if oldest.task is not None:
                await asyncio.wait([oldest.task], timeout=1.0)
        connection = Connection(client)
        self.connections.add(connection)
        connection.task = asyncio.get_running_loop().create_task(self._run(connection))
        # Closed once the task is done, never under it: asyncio may still watch the fd until the
        # cancelled read has unwound, and a task cancelled before its first step runs no finally.
        connection.task.add_done_callback(lambda _: client.close())

    def _drop(self, connection: Connection) -> None:
        self.connections.discard(connection)
        if connection.task is not None:
            connection.task.cancel()

    async def _run(self, connection: Connection) -> None:
        import asyncio

        try:
            await self.handle(connection)
        except asyncio.CancelledError:
            pass
        except Deadline:
            logger.debug("%s: a client was too slow; closed", self.what)
        except OSError as error:
            logger.debug("%s: a client left early (%s)", self.what, error.strerror or error)
        except Exception:
            logger.exception("%s: answering a client failed", self.what)
        finally:
            self.connections.discard(connection)

    async def close(self, grace: float, *, every: bool = False) -> None:
        """Stop accepting; give requests being answered (EVERY: every connection) GRACE seconds,
        then close every connection."""
        import asyncio

        if self._accepting is not None:
            self._accepting.cancel()
        self.sock.close()
        busy = [c.task for c in self.connections if (every or c.busy) and c.task is not None]
        if busy:
            await asyncio.wait(busy, timeout=grace)
        for connection in list(self.connections):
            self._drop(connection)
