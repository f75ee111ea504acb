"""Hold N idle keep-alive connections to a server: the idle side of ``benchmarks.c10k``.

    python -m benchmarks.idle_client --port PORT --connections 10000

It opens the connections (at most ``--concurrency`` being opened at once, so that what is measured
is the server holding connections, not its accept queue overflowing), sends one request on each and
waits for the answer, so every connection it counts was accepted and served by a worker, then
idles. It talks in JSON lines on stdout:

- ``{"event": "opened", "opened": K, "failures": {WORD: COUNT}, "seconds": S}`` once every
  connection has been tried, or ``--open-within`` has passed (WORD from ``benchmarks.failures``,
  or "not tried" for those left);
- ``{"event": "open", "open": K}`` for each ``count`` line read on stdin: how many of the K are
  still open (no EOF, no reset seen on them).

EOF on stdin (the runner is done, or gone) closes every connection and exits, and so does
``--lifetime``, so that a runner killed without its ``finally`` cannot leave a client behind.

A connection idle for ``--refresh`` seconds sends another request, for a server that cannot be
told to keep idle connections longer (granian closes them after at most 60 s). A connection the
server closed is not reopened: it is counted as closed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import sys
import time
from collections.abc import Sequence

from benchmarks.client import Client, watchdog

REFRESH_CHECK = 1.0  # seconds between looks for connections due a refresh
NOT_TRIED = "not tried: --open-within passed"


def _say(event: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class Holder:
    def __init__(self, port: int, path: str, timeout: float) -> None:
        self.port, self.path, self.timeout = port, path, timeout
        self.clients: list[Client] = []
        self.last_request: list[float] = []
        self.failures: collections.Counter[str] = collections.Counter()

    async def open(self, count: int, concurrency: int, within: float) -> int:
        gate = asyncio.Semaphore(concurrency)
        deadline = time.monotonic() + within

        async def one() -> None:
            async with gate:
                if time.monotonic() > deadline:
                    # A server that holds no more (granian's default caps connections) would make
                    # the rest wait out their timeouts one batch at a time.
                    self.failures[NOT_TRIED] += 1
                    return
                client = Client(self.port, path=self.path, timeout=self.timeout)
                self.clients.append(client)
                self.last_request.append(time.monotonic())
                outcome = await client.request()
                if not outcome.ok:
                    self.failures[outcome.label] += 1
                    client.close()

        async with watchdog(self.clients):
            await asyncio.gather(*(one() for _ in range(count)))
        return self.still_open()

    def still_open(self) -> int:
        return sum(client.connected() for client in self.clients)

    async def refresh(self, every: float) -> None:
        while True:
            await asyncio.sleep(REFRESH_CHECK)
            now = time.monotonic()
            due = [
                i
                for i, client in enumerate(self.clients)
                if now - self.last_request[i] >= every and client.connected() and not client.busy
            ]
            for i in due:
                self.last_request[i] = now
            # The watchdog only while requests are out: idle, 10,000 clients need no looking at.
            async with watchdog([self.clients[i] for i in due]):
                outcomes = await asyncio.gather(*(self.clients[i].request() for i in due))
            for i, outcome in zip(due, outcomes, strict=True):
                if not outcome.ok:
                    self.failures[outcome.label] += 1
                    self.clients[i].close()

    def close(self) -> None:
        for client in self.clients:
            client.close()


async def _commands(holder: Holder) -> None:
    """Answer ``count`` lines on stdin until EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"count":
            _say({"event": "open", "open": holder.still_open()})


async def hold(args: argparse.Namespace) -> None:
    holder = Holder(args.port, args.path, args.timeout)
    try:
        start = time.monotonic()
        opened = await holder.open(args.connections, args.concurrency, args.open_within)
        seconds = round(time.monotonic() - start, 3)
        _say({"event": "opened", "opened": opened, "failures": dict(holder.failures), "seconds": seconds})
        tasks = [asyncio.create_task(_commands(holder))]
        if args.refresh > 0:
            tasks.append(asyncio.create_task(holder.refresh(args.refresh)))
        try:
            # Ends at EOF on stdin (the first task), or at --lifetime.
            await asyncio.wait(tasks, timeout=args.lifetime, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        holder.close()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.idle_client", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True, help="idle connections to hold")
    parser.add_argument("--path", default="/", help="what the request on each connection asks for")
    parser.add_argument("--concurrency", type=int, default=200, help="connections being opened at once")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds for a connect and its answer")
    parser.add_argument(
        "--open-within", type=float, default=60.0, help="start no connection after this many seconds"
    )
    parser.add_argument("--refresh", type=float, default=0.0, help="request again after this idle (0: never)")
    parser.add_argument("--lifetime", type=float, default=600.0, help="exit after this many seconds at most")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    asyncio.run(hold(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
