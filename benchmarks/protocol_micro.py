"""CPU time per request of each HTTP protocol class, without sockets: the Python around the app.

Feeds requests to a protocol instance on a real uvloop loop, one at a time on one keep-alive
connection, with a transport that drops what is written. What is measured is everything a
worker does per request except the system calls: parsing, scope, task, send/receive, the
response head, keep-alive bookkeeping, and the app. Steady on a busy machine, unlike req/s.

    python -m benchmarks.protocol_micro --requests 50000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import uvicorn
import uvloop
from uvicorn.lifespan.off import LifespanOff
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from benchmarks.apps import app as hello_app
from benchmarks.apps_starlette import app as starlette_app
from forkserve.http.choice import http_protocol_class

REQUESTS = {
    "hello": b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n",
    "starlette": b"GET /json HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n",
    # What a browser sends: a dozen headers.
    "hello-browser": b"GET /?q=1 HTTP/1.1\r\nHost: example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n"
    b"Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-GB,en;q=0.9\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\nCookie: session=abc123; theme=dark\r\n"
    b"Upgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\n"
    b"Sec-Fetch-Site: none\r\nCache-Control: max-age=0\r\n\r\n",
}
APPS = {"hello": hello_app, "starlette": starlette_app, "hello-browser": hello_app}
CLASSES: dict[str, Any] = {
    "uvicorn httptools": HttpToolsProtocol,
    "forkserve httptools (worker class)": http_protocol_class("httptools"),
    "forkserve fast (worker class)": http_protocol_class("fast"),
}


class NullTransport:
    def __init__(self) -> None:
        self.closed = False
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        pass


async def drive(protocol_class: Any, app: Any, request: bytes, count: int) -> tuple[float, int]:
    config = uvicorn.Config(app, log_config=None, lifespan="off")
    config.load()
    state = ServerState()
    protocol = protocol_class(config=config, server_state=state, app_state=LifespanOff(config).state)
    transport = NullTransport()
    protocol.connection_made(transport)
    started = time.process_time()
    for _ in range(count):
        protocol.data_received(request)
        # Two turns of the loop: the request's task runs, then anything it scheduled.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    elapsed = time.process_time() - started
    if state.total_requests != count or transport.closed:
        raise RuntimeError(f"{protocol_class.__name__}: served {state.total_requests} of {count}")
    protocol.connection_lost(None)
    return elapsed / count * 1e6, transport.written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"| request | class | µs/request (median of {args.repeats}) | writes/request |")
    print("| --- | --- | ---: | ---: |")
    for scenario, request in REQUESTS.items():
        for name, protocol_class in CLASSES.items():
            runs = []
            for _ in range(args.repeats):
                micros, writes = uvloop.run(drive(protocol_class, APPS[scenario], request, args.requests))
                runs.append(micros)
            print(f"| {scenario} | {name} | {statistics.median(runs):.1f} | {writes / args.requests:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
