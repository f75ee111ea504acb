"""A worker's end of its --balance hand-off channel, read from the worker's event loop.

The balancer in the master sends each accepted connection's fd over the channel
(``forkserve.common.handoff`` holds the channel's shared half); this module is the worker's, kept
apart so that the master, which imports the shared half, never loads asyncio for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from forkserve.common.handoff import END, MAX_FDS
from forkserve.common.scoreboard import Slot

logger = logging.getLogger("forkserve")


class Inbox:
    """A worker's end of its hand-off channel, read from the worker's event loop."""

    def __init__(
        self,
        channel: socket.socket,
        slot: Slot,
        protocol_factory: Callable[[], asyncio.Protocol],
        ssl: Any,
        on_connection: Callable[[asyncio.BaseProtocol], None],
        per_wakeup: int = 64,
    ) -> None:
        self.channel = channel
        self.slot = slot
        self.protocol_factory = protocol_factory
        self.ssl = ssl
        self.on_connection = on_connection
        # least-conn takes one connection per loop iteration: what is left in the channel while a
        # request holds the loop is still the balancer's to give to another worker.
        self.per_wakeup = per_wakeup
        self.ended = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.channel.fileno(), self._read)

    def close(self) -> None:
        """Stop reading: what is still queued is taken back by the balancer."""
        if self._loop is not None:
            self._loop.remove_reader(self.channel.fileno())
            self._loop = None
        self.ended.set()

    async def wait_end(self, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.ended.wait(), timeout)

    def _read(self) -> None:
        loop = self._loop
        if loop is None:
            return
        for _ in range(self.per_wakeup):
            try:
                message, fds, _, _ = socket.recv_fds(self.channel, 16, MAX_FDS)
            except BlockingIOError:
                return
            except OSError:
                self.close()
                return
            if not message and not fds:
                self.close()  # every sender is gone: the master died
                return
            for fd in fds:
                loop.create_task(self._attach(loop, fd))
            if message == END:
                self.ended.set()

    async def _attach(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        try:
            await self._serve(loop, fd)
        finally:
            # Counted as taken only now that it is among the open connections (or gone): the
            # balancer adds what is in transit to what is open, and must never see it in neither.
            self.slot.handoffs_taken += 1

    async def _serve(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            return
        try:
            _, protocol = await loop.connect_accepted_socket(self.protocol_factory, sock, ssl=self.ssl)
        except (OSError, asyncio.CancelledError) as error:
            logger.debug("a handed-over connection failed before it started: %s", error)
            sock.close()
            return
        except Exception as error:  # a TLS handshake gone wrong, for one
            logger.debug("a handed-over connection failed before it started: %r", error)
            sock.close()
            return
        self.on_connection(protocol)


def protocol_factory(server: Any) -> Callable[[], asyncio.Protocol]:
    """The protocol uvicorn's own listener would create (its startup() builds the same one)."""
    config = server.config
    return functools.partial(
        config.http_protocol_class,
        config=config,
        server_state=server.server_state,
        app_state=server.lifespan.state,
    )
