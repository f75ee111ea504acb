"""Read and write pausing for one connection of the fast protocol (``forkserve.http.fast``).

Reading is paused while a request body waits for the app (past ``HIGH_WATER_LIMIT`` bytes), while
a pipelined request waits for the response before it, and once a head is refused; writing is
paused by the transport when its buffer is full, and a response's ``send`` waits for ``drain``.
What uvicorn's ``FlowControl`` does, kept here so the fast class relies on no uvicorn internals.
"""

from __future__ import annotations

import asyncio
from typing import Any

# Body bytes held for an app that has not read them yet before the socket stops being read.
HIGH_WATER_LIMIT = 65536


class FlowControl:
    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._writable = asyncio.Event()
        self._writable.set()

    async def drain(self) -> None:
        await self._writable.wait()

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self._transport.resume_reading()

    def pause_writing(self) -> None:
        if not self.write_paused:
            self.write_paused = True
            self._writable.clear()

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            self._writable.set()
