"""Reconnecting WebSocket clients on a thread of their own, recording every connect and close."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

# Every client fleet stops by itself after this long, whatever the test does.
HARD_LIMIT = 60.0


@dataclass
class Record:
    connects: list[tuple[float, int, int]] = field(default_factory=list)  # (when, worker pid, generation)
    closes: list[tuple[float, int | None]] = field(default_factory=list)  # (when, close code received)
    failures: list[str] = field(default_factory=list)  # a reconnect that did not get through
    connected: int = 0


class Clients:
    """COUNT clients that stay connected and reconnect (after a little jitter) when closed.

    A client tries URLS in order and takes the first that answers, as a client behind a load
    balancer with several hosts would; only a reconnect that no URL accepts is a failure.
    """

    def __init__(self, count: int, *urls: str) -> None:
        self.urls = list(urls)
        self.count = count
        self.record = Record()
        self._current: dict[int, int] = {}  # client -> the generation it is connected to
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> Clients:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(HARD_LIMIT)

    def generations(self) -> dict[int, int]:
        """generation -> clients connected to it now (from the last connect of each client)."""
        found: dict[int, int] = {}
        for generation in self._current.values():
            found[generation] = found.get(generation, 0) + 1
        return found

    async def _main(self) -> None:
        deadline = time.monotonic() + HARD_LIMIT
        tasks = [asyncio.create_task(self._client(i, deadline)) for i in range(self.count)]
        while not self._stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _connect(self) -> ClientConnection:
        for url in self.urls[:-1]:
            try:
                return await connect(url, open_timeout=10, close_timeout=5)
            except (OSError, InvalidHandshake, TimeoutError):
                continue
        return await connect(self.urls[-1], open_timeout=10, close_timeout=5)

    async def _client(self, index: int, deadline: float) -> None:
        record = self.record
        while time.monotonic() < deadline:
            try:
                async with await self._connect() as ws:
                    hello = str(await ws.recv()).split()
                    record.connects.append((time.monotonic(), int(hello[0]), int(hello[1])))
                    self._current[index] = int(hello[1])
                    record.connected += 1
                    try:
                        await ws.wait_closed()
                    finally:
                        record.connected -= 1
                        self._current.pop(index, None)
                    rcvd = ws.protocol.close_rcvd
                    code = rcvd.code if rcvd is not None else None
                    record.closes.append((time.monotonic(), code))
            except (OSError, ConnectionClosed, TimeoutError, InvalidHandshake) as exc:
                record.failures.append(f"{type(exc).__name__}: {exc}")
            # Reconnect with jitter, as docs/reload.md advises.
            await asyncio.sleep(random.uniform(0.0, 0.1))
