"""CPU time per request of each HTTP protocol class, without sockets: the Python around the app.

Feeds requests to a protocol instance on a real uvloop loop, one at a time on one keep-alive
connection, with a transport that drops what is written. What is measured is everything a
worker does per request except the system calls: parsing, scope, task, send/receive, the
response head, keep-alive bookkeeping, and the app. Steady on a busy machine, unlike req/s.

    python -m benchmarks.protocol_micro --requests 50000

``--instructions`` counts instead of timing: each class and request runs in a child process under
valgrind's cachegrind, once with 1,000 requests and once with 3,000, and the difference in
instructions executed, over 2,000, is the instructions per request (less the harness's own,
counted with a protocol that does nothing). Deterministic to a fraction of a percent whatever
else runs, so a change worth 2% shows; needs ``valgrind`` (apt-get install valgrind).

    python -m benchmarks.protocol_micro --instructions
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import re
import shutil
import statistics
import subprocess
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
APPS: dict[str, Any] = {"hello": hello_app, "starlette": starlette_app, "hello-browser": hello_app}
# The FastAPI route of `benchmarks.run --app fastapi`, when FastAPI is installed (the bench extra).
if importlib.util.find_spec("fastapi") is not None:
    from benchmarks.apps_fastapi import PATH as FASTAPI_PATH
    from benchmarks.apps_fastapi import app as fastapi_app

    REQUESTS["fastapi"] = b"GET %b HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n" % FASTAPI_PATH.encode()
    APPS["fastapi"] = fastapi_app
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


class NullProtocol:
    """Counts a request per read and does nothing else: the harness's own cost."""

    def __init__(self, config: Any, server_state: Any, app_state: Any) -> None:
        self.state = server_state

    def connection_made(self, transport: Any) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.state.total_requests += 1


INSTRUCTION_RUNS = (1000, 3000)
_IREFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def count_instructions(class_name: str, scenario: str, requests: int) -> int:
    """Instructions a child process executes serving REQUESTS requests (cachegrind's I refs)."""
    command = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        sys.executable, "-m", "benchmarks.protocol_micro",
        "--serve-once", class_name, scenario, str(requests),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    match = _IREFS.search(result.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {result.stderr[-500:]}")
    return int(match.group(1).replace(",", ""))


def instructions_per_request(class_name: str, scenario: str) -> float:
    low, high = INSTRUCTION_RUNS
    return (
        count_instructions(class_name, scenario, high) - count_instructions(class_name, scenario, low)
    ) / (high - low)


def print_instructions(scenarios: list[str]) -> None:
    harness = instructions_per_request(NULL, "hello")
    print(f"Instructions per request, less the harness's own ({harness:,.0f}):")
    print()
    print("| request | class | instructions/request |")
    print("| --- | --- | ---: |")
    for scenario in scenarios:
        for name in CLASSES:
            print(f"| {scenario} | {name} | {instructions_per_request(name, scenario) - harness:,.0f} |")


NULL = "null (harness only)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--instructions", action="store_true", help="count instructions under valgrind")
    parser.add_argument("--requests-of", default=",".join(REQUESTS), help=f"of {', '.join(REQUESTS)}")
    parser.add_argument(
        "--serve-once", nargs=3, metavar=("CLASS", "REQUEST", "COUNT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.serve_once:
        class_name, scenario, count = args.serve_once
        protocol_class = NullProtocol if class_name == NULL else CLASSES[class_name]
        uvloop.run(drive(protocol_class, APPS[scenario], REQUESTS[scenario], int(count)))
        return 0
    if args.instructions:
        if shutil.which("valgrind") is None:
            parser.error("--instructions needs valgrind: apt-get install valgrind")
        scenarios = [name for name in args.requests_of.split(",") if name]
        unknown = sorted(set(scenarios) - set(REQUESTS))
        if unknown:
            parser.error(f"unknown request {', '.join(unknown)}; choose from {', '.join(REQUESTS)}")
        print_instructions(scenarios)
        return 0
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
