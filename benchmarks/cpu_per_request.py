"""CPU time per request of each server's whole process tree: efficiency that noise does not move.

req/s on a 2-core machine shared with wrk (and, during development, with other work) moves with
whatever else runs; the CPU time a server spends per request moves much less. Each server is
started with one worker, warmed up, then loaded by ``wrk -t1`` for a bounded time while the CPU
time (user + system) of every process in its tree is read before and after: the master's and the
worker's share both count, since both are what a user's machine pays. Servers are interleaved per
round; the medians and each server's ratio to gunicorn + UvicornWorker are printed as a table.

    python -m benchmarks.cpu_per_request --app hello --rounds 3 --duration 5
    python -m benchmarks.cpu_per_request --app fastapi --servers forkserve,gunicorn-uvicorn

A lower figure is better; the ratio column is gunicorn + UvicornWorker's CPU per request divided
by the server's, so it reads like the req/s ratio a machine with spare cores for the client would
show.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks import harness, sampling
from benchmarks.run import APPS, BASELINE, REPO_ROOT, SERVERS, server_env


@dataclass(frozen=True)
class Sample:
    server: str
    requests: int
    seconds: float
    cpu_seconds: float

    @property
    def micros_per_request(self) -> float:
        return self.cpu_seconds / max(self.requests, 1) * 1e6

    @property
    def requests_per_sec(self) -> float:
        return self.requests / self.seconds


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (those alive now)."""
    total = 0.0
    for proc in sampling.process_tree(pid):
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def measure(server: str, app: str, duration: int, connections: int, python: str) -> Sample:
    spec, app_spec = SERVERS[server], APPS[app]
    port = harness.free_port()
    command = spec.build(python, port, 1, app_spec.target)
    log = Path(tempfile.mkdtemp(prefix="cpu-per-request-")) / f"{server}.log"
    proc = harness.start_server(command, REPO_ROOT, server_env(), log)
    try:
        harness.wait_until_serving(proc, port, 60.0)
        harness.wait_for_workers(proc.pid, 1, 30.0)
        harness.run_wrk(port, 1, connections, 1, app_spec.path)  # warm-up, not recorded
        before = tree_cpu(proc.pid)
        result = harness.run_wrk(port, 1, connections, duration, app_spec.path)
        cpu = tree_cpu(proc.pid) - before
    finally:
        harness.stop_and_check(proc, port, 10.0)
    if result.socket_errors or result.non_2xx:
        raise harness.ServerError(
            f"{server}: wrk saw {result.socket_errors} socket errors, {result.non_2xx} non-2xx"
        )
    return Sample(server, result.requests, float(duration), cpu)


def table(samples: Sequence[Sample]) -> list[str]:
    """Markdown rows: the median µs of CPU per request and req/s per server, and the ratio."""
    by_server: dict[str, list[Sample]] = {}
    for sample in samples:
        by_server.setdefault(sample.server, []).append(sample)
    medians = {
        name: statistics.median(s.micros_per_request for s in runs) for name, runs in by_server.items()
    }
    baseline = medians.get(BASELINE)
    lines = [
        "| server | CPU µs/request (median) | req/s, 1 worker (median) | efficiency vs gunicorn-uvicorn |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, runs in by_server.items():
        ratio = f"{baseline / medians[name]:.2f}x" if baseline else "n/a"
        rate = statistics.median(s.requests_per_sec for s in runs)
        lines.append(f"| {name} | {medians[name]:.1f} | {rate:,.0f} | {ratio} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--app", choices=sorted(APPS), default="hello")
    parser.add_argument("--servers", default="forkserve,gunicorn-uvicorn,uvicorn,granian")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = [name for name in servers if name not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)}; choose from {', '.join(SERVERS)}")
    samples = []
    for round_no in range(args.rounds):
        for server in harness.rotated(servers, round_no):
            sample = measure(server, args.app, args.duration, args.connections, args.python)
            print(
                f"[round {round_no + 1}/{args.rounds}] {server:18} {sample.micros_per_request:7.1f} µs CPU/request"
                f"  {sample.requests_per_sec:9,.0f} req/s",
                file=sys.stderr,
            )
            samples.append(sample)
    print("\n".join(table(samples)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
