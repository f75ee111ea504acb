"""One wrk measurement of one server: start it, wait for its workers, warm up, measure, stop it.

The HTTP benchmarks that compare servers by throughput and CPU per request (http_fast, wsgi) share
this, so their records mean the same thing: requests/s and latency from wrk, the server's whole
process tree's CPU per request (the steadiest figure on a shared machine), and how much of the CPU
other processes took meanwhile.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks import harness, sampling
from benchmarks.report import RunRecord

# One run's record; RunRecord carries the CPU per request too (benchmarks.run reports it).
WrkRun = RunRecord


@dataclass(frozen=True)
class Load:
    path: str
    threads: int
    connections: int
    warmup: int  # seconds of wrk before the measured run (0: none)
    duration: int  # seconds of the measured run


def measure(record: WrkRun, command: list[str], cwd: Path, env: dict[str, str], log_path: Path,
            processes: int, load: Load) -> WrkRun:  # fmt: skip
    """Serve COMMAND on RECORD.port until PROCESSES processes exist, run LOAD, fill RECORD in."""
    proc = harness.start_server(command, cwd, env, log_path)
    port = record.port
    try:
        harness.wait_until_serving(proc, port, 30.0)
        harness.wait_for_workers(proc.pid, processes, 30.0)
        if load.warmup:
            harness.run_wrk(port, load.threads, load.connections, load.warmup, load.path)
        before = sampling.cpu_snapshot(proc.pid)
        result = harness.run_wrk(port, load.threads, load.connections, load.duration, load.path)
        after = sampling.cpu_snapshot(proc.pid, before.tree)
        record.foreign_cpu = sampling.foreign_cpu_share(before, after)
        record.cpu_us_per_request = (after.server - before.server) / max(result.requests, 1) * 1e6
        record.requests_per_sec = result.requests_per_sec
        record.latency_ms = result.latency_ms
        record.requests = result.requests
        record.socket_errors = result.socket_errors
        record.non_2xx = result.non_2xx
        if result.non_2xx:
            record.error = f"{result.non_2xx} responses were not 2xx"
    except (harness.ServerError, subprocess.SubprocessError, OSError) as exc:
        record.error = f"{exc}\n{harness.tail(log_path)}"
    finally:
        harness.stop_into(record, proc, port, 10.0)
    return record
