"""C10K: throughput, latency and memory of each server while it holds N idle keep-alive connections.

    python -m benchmarks.c10k --rounds 3 --duration 10 --idle 0,1000,10000

For each round, each N and each server (the order rotated per round), a fresh server with 2
workers: wait until it serves, a warm-up wrk, then ``benchmarks.idle_client`` (a child process)
opens N keep-alive connections, one request on each so each was accepted and served, and idles;
``wrk -c64`` on fresh connections records req/s and p99 while the N are held; then the tree's PSS,
the established connections per process (how the workers split the N) and how many of the N are
still open. Memory per idle connection is (PSS at N - PSS at 0) / N, from the medians over rounds.

Every server is told to keep idle connections at least as long as a cell lasts (``--keep-alive``),
each with its own flag (``KEEP_ALIVE``); granian has no idle timeout of its own, only its
header-read timeout, which also ends idle keep-alive connections and stops at 60 s, so the idle
client sends a request on each connection idle for ``--refresh`` seconds, for every server alike.

The file-descriptor limit is raised for the runner, the idle client and, by inheritance, the
servers; ``--server-nofile`` lowers it for the servers only, to see what each does when it cannot
get fds. Writes docs/benchmarks-c10k.md and the raw records under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import resource
import select
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from benchmarks import harness, run, sampling
from benchmarks.report import MIB, NOTES_MARKER, RunRecord, rewrite_page
from benchmarks.stats import median, ratio

BASELINE = "gunicorn-uvicorn"
SERVERS = ("forkserve", "gunicorn-uvicorn", "uvicorn", "granian")
IDLE_COUNTS = (0, 1000, 10000)
OUTPUT = "docs/benchmarks-c10k.md"
GRANIAN_MAX_HEADER_TIMEOUT = 60  # seconds: granian's --http1-header-read-timeout stops at 60000 ms
IDLE_TIMEOUT = 10.0  # seconds the idle client waits for a connect and its answer
FD_ROOM = 1024  # descriptors a process needs beside the idle connections (wrk's, logs, pipes)
# What a server's log says when it cannot get a descriptor (Python's, uvloop's and libuv's words).
FD_EXHAUSTED = re.compile(r"Too many open files|EMFILE|out of system resource", re.IGNORECASE)

# Each server's own flag for how long an idle keep-alive connection is kept, in seconds.
KEEP_ALIVE: dict[str, Callable[[int], list[str]]] = {
    "forkserve": lambda seconds: ["--keep-alive", str(seconds)],
    "gunicorn-uvicorn": lambda seconds: ["--keep-alive", str(seconds)],  # UvicornWorker's timeout_keep_alive
    "uvicorn": lambda seconds: ["--timeout-keep-alive", str(seconds)],
    # No keep-alive timeout in granian's HTTP/1: the header-read timeout is what closes idle
    # connections (30 s by default), and it takes at most 60 s.
    "granian": lambda seconds: [
        "--http1-header-read-timeout",
        str(min(seconds, GRANIAN_MAX_HEADER_TIMEOUT) * 1000),
    ],
}
# A server's flag for how many connections a worker may hold, where it has a cap by default:
# granian serves at most --backpressure (default --backlog / workers = 512) connections per worker
# at once and leaves the others accepted but unanswered.
CAPACITY: dict[str, Callable[[int], list[str]]] = {
    "granian": lambda connections: ["--backpressure", str(connections)],
}


@dataclass
class Cell(RunRecord):
    """One server at one N in one round: wrk's figures while N idle connections are held."""

    idle: int = 0  # idle connections asked for
    opened: int = 0  # accepted and served one request each
    open_after: int = 0  # still open after the wrk run
    open_seconds: float = 0.0  # how long opening them took
    open_failures: dict[str, int] = field(default_factory=dict)  # failure word -> count
    split: list[int] = field(default_factory=list)  # established connections per process, largest first
    fd_errors: int = 0  # log lines saying the server ran out of descriptors
    log_lines: int = 0


@dataclass(frozen=True)
class Row:
    """The medians of one server at one N, and their ratios to the baseline's at the same N."""

    server: str
    idle: int
    runs: int
    ok: int
    rps: float | None
    p99_ms: float | None
    pss_mib: float | None
    kib_per_connection: float | None
    open_after: float | None
    split: list[int]
    rps_ratio: float | None = None
    p99_ratio: float | None = None
    kib_ratio: float | None = None


def per_connection_kib(pss_n: float | None, pss_0: float | None, idle: int) -> float | None:
    """KiB of the tree's PSS per idle connection: (PSS at N - PSS at 0) / N; None without both or N."""
    if not idle or pss_n is None or pss_0 is None:
        return None
    return (pss_n - pss_0) / idle / 1024


def worker_split(split: list[int], workers: int) -> list[int]:
    """The WORKERS largest per-process counts, padded with zeros: a worker that took none shows as 0."""
    top = sorted(split, reverse=True)[:workers]
    return top + [0] * (workers - len(top))


def summarize(cells: Sequence[Cell], servers: Sequence[str], idle_counts: Sequence[int],
              workers: int, baseline: str = BASELINE) -> list[Row]:  # fmt: skip
    """One row per server and N, in that order: medians over the rounds' good cells."""
    medians: dict[tuple[str, int], dict[str, Any]] = {}
    for server in servers:
        for idle in idle_counts:
            mine = [c for c in cells if c.server == server and c.idle == idle]
            ok = [c for c in mine if c.ok]
            split = (
                [median(worker_split(c.split, workers)[i] for c in ok) or 0 for i in range(workers)]
                if ok
                else []
            )
            medians[server, idle] = {
                "runs": len(mine),
                "ok": len(ok),
                "rps": median(c.requests_per_sec for c in ok),
                "p99": median(c.latency_ms.get("99") for c in ok),
                "pss": median(float(c.pss) for c in ok),
                "open": median(float(c.open_after) for c in ok),
                "split": [round(n) for n in split],
            }
    rows = []
    for (server, idle), m in medians.items():
        zero = medians.get((server, 0), {}).get("pss")
        kib = per_connection_kib(m["pss"], zero, idle)
        base = medians.get((baseline, idle))
        base_kib = (
            per_connection_kib(base["pss"], medians.get((baseline, 0), {}).get("pss"), idle) if base else None
        )
        rows.append(
            Row(
                server=server,
                idle=idle,
                runs=m["runs"],
                ok=m["ok"],
                rps=m["rps"],
                p99_ms=m["p99"],
                pss_mib=m["pss"] / MIB if m["pss"] is not None else None,
                kib_per_connection=kib,
                open_after=m["open"],
                split=m["split"],
                rps_ratio=ratio(m["rps"], base["rps"]) if base else None,
                p99_ratio=ratio(m["p99"], base["p99"]) if base else None,
                kib_ratio=ratio(kib, base_kib),
            )
        )
    return rows


# --- the page --------------------------------------------------------------------------------


def _num(value: float | None, spec: str, suffix: str = "") -> str:
    return "" if value is None else f"{value:{spec}}{suffix}"


def render_table(rows: Sequence[Row], baseline: str = BASELINE) -> str:
    lines = [
        f"| server | idle N | ok runs | req/s | p99 | PSS | KiB per idle connection | still open "
        f"| per-worker split | req/s vs {baseline} | p99 vs {baseline} | KiB/conn vs {baseline} |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        if not r.ok:
            lines.append(f"| {r.server} | {r.idle:,} | 0/{r.runs} | failed | | | | | | | | |")
            continue
        still_open = "" if not r.idle or r.open_after is None else f"{r.open_after:,.0f} / {r.idle:,}"
        split = " / ".join(f"{n:,}" for n in r.split) if r.idle else ""
        cells = [
            r.server,
            f"{r.idle:,}",
            f"{r.ok}/{r.runs}",
            _num(r.rps, ",.0f"),
            _num(r.p99_ms, ".2f", " ms"),
            _num(r.pss_mib, ".1f", " MiB"),
            _num(r.kib_per_connection, ".1f"),
            still_open,
            split,
            _num(r.rps_ratio, ".2f", "x"),
            _num(r.p99_ratio, ".2f", "x"),
            _num(r.kib_ratio, ".2f", "x"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_raw(cells: Sequence[Cell]) -> str:
    lines = [
        "| round | server | idle N | opened (s) | req/s | p99 | errors | PSS MiB | still open | split "
        "| fd errors in log | other CPU | note |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for c in cells:
        failures = ", ".join(f"{word}: {n}" for word, n in sorted(c.open_failures.items()))
        note = (c.error or "").replace("\n", " ").replace("|", "/")[:200]
        note = "; ".join(filter(None, [f"open failures {failures}" if failures else "", note]))
        opened = f"{c.opened:,} ({c.open_seconds:.1f})" if c.idle else ""
        figures = (
            f"{c.requests_per_sec:,.0f} | {c.latency_ms['99']:.2f} ms | {c.socket_errors + c.non_2xx}"
            if c.ok
            else " | | "
        )
        lines.append(
            f"| {c.round} | {c.server} | {c.idle:,} | {opened} | {figures} | {c.pss / MIB:.1f} "
            f"| {c.open_after:,} | {' / '.join(str(n) for n in c.split)} | {c.fd_errors} "
            f"| {c.foreign_cpu:.0%} | {note} |"
        )
    return "\n".join(lines)


def render_page(meta: dict[str, Any], cells: Sequence[Cell], notes: str = "\n") -> str:
    rows = summarize(cells, meta["servers_run"], meta["idle_counts"], meta["workers"], meta["baseline"])
    servers = "\n".join(
        f"- **{name}**: `{info['command']}`  \n  {info['note']}" for name, info in meta["servers"].items()
    )
    machine = meta["machine"]
    versions = ", ".join(
        f"{package} {version}"
        for interpreter in meta["versions"].values()
        for package, version in interpreter.items()
        if version is not None
    )
    nofile = (
        f" The servers ran with their descriptor limit lowered to {meta['server_nofile']:,} "
        "(`--server-nofile`)."
        if meta.get("server_nofile")
        else ""
    )
    return f"""# Benchmark: idle keep-alive connections (C10K)

<!-- Generated by `python -m benchmarks.c10k` (see benchmarks/README.md); edit benchmarks/c10k.py,
     or the notes at the end, not the generated sections. -->

Each server serves `benchmarks.apps:app` (plain ASGI hello) with {meta["workers"]} workers on
`127.0.0.1`, access logging off. For each N of idle connections, a fresh server: a
{meta["warmup"]} s wrk warm-up, then a client process opens N keep-alive connections (one request on
each, so each was accepted and answered) and leaves them idle, and
`wrk -t{meta["threads"]} -c{meta["connections"]} -d{meta["duration"]}s --latency` loads `/` on fresh
connections while the N are held. Then the whole process tree's PSS, the connections each process
holds (the per-worker split: how the kernel's accept spread the N over the workers), and how many
of the N are still open. KiB per idle connection is (PSS at N - PSS at 0) / N, from the medians.

Every server is told to keep idle connections for {meta["keep_alive"]} s (each one's flag is in its
command below). granian cannot: its HTTP/1 has no idle timeout, only a header-read timeout that also
ends idle keep-alive connections and stops at 60 s; so the idle client sends a request on a
connection idle for {meta["refresh"]:g} s, for every server alike (a cell of these settings takes
less than that after the connections are open).{nofile}

{meta["rounds"]} rounds; in each, every N, and for each N every server in an order rotated by one
per round. Medians over the rounds; ratios are to {meta["baseline"]} at the same N.

Produced by:

```
{meta["command"]}
```

- Date: {meta["date"]}
- Machine: {machine["nproc"]} CPUs usable ({machine["cpu_model"]}), Linux {machine["kernel"]},
  {machine["memory_gib"]:.1f} GiB RAM; {meta["wrk_version"]} and the idle client on the same machine.
- Descriptor limit of the runner, the idle client and the servers: {meta["nofile"]:,}.
- Versions: {versions}.

## Servers

`PORT` is a free port picked for each run.

{servers}

## Results

{render_table(rows, meta["baseline"])}

## Raw

Every cell in the order it ran. Errors are wrk's socket errors plus non-2xx responses; "fd errors in
log" counts the server's log lines saying it ran out of descriptors.

{render_raw(cells)}

{NOTES_MARKER}{notes}"""


# --- measuring -------------------------------------------------------------------------------


def raise_nofile(wanted: int) -> int:
    """Raise this process's descriptor limit (children inherit it) to WANTED if allowed; the result."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:
        # Root may raise the hard limit too (up to fs.nr_open); anyone may raise soft up to hard.
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class IdleHold:
    """The idle client (``benchmarks.idle_client``) in a session of its own, spoken to by JSON lines."""

    def __init__(self, port: int, count: int, refresh: float, within: float, lifetime: float) -> None:
        command = [sys.executable, "-m", "benchmarks.idle_client", "--port", str(port), "--connections",
                   str(count), "--refresh", str(refresh), "--open-within", str(within),
                   "--lifetime", str(lifetime), "--timeout", str(IDLE_TIMEOUT)]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            cwd=run.REPO_ROOT,
            env=run.server_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )

    def _event(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            status = self.proc.poll()
            raise harness.ServerError(
                f"idle client {'exited with ' + str(status) if status is not None else 'silent'} "
                f"after {timeout:.0f}s"
            )
        event: dict[str, Any] = json.loads(line)
        return event

    def opened(self, timeout: float) -> dict[str, Any]:
        return self._event(timeout)

    def still_open(self, timeout: float = 30.0) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"count\n")
        self.proc.stdin.flush()
        return int(self._event(timeout)["open"])

    def close(self) -> None:
        """EOF tells it to close its connections and exit; the group is killed if it does not."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def established_by_process(pid: int, port: int) -> list[int]:
    """Established connections on PORT held by each process of PID's tree, largest first, zeros left out."""
    counts = []
    for proc in sampling.process_tree(pid):
        try:
            held = sum(
                1
                for c in proc.net_connections(kind="tcp")
                if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
            )
        except psutil.Error:
            continue
        if held:
            counts.append(held)
    return sorted(counts, reverse=True)


@dataclass(frozen=True)
class Settings:
    rounds: int
    duration: int
    warmup: int
    connections: int
    threads: int
    workers: int
    keep_alive: int
    refresh: float
    open_timeout: float
    server_nofile: int  # 0: the runner's own limit
    capacity: int  # connections a worker may hold, for a server capped by default (CAPACITY); 0: its default
    quiet_timeout: float
    max_other_cpu: float
    python: str
    forkserve_python: str
    logs_dir: Path


def server_command(name: str, settings: Settings, port: int) -> list[str]:
    spec = run.SERVERS[name]
    python = settings.forkserve_python if spec.forkserve_python else settings.python
    command = [*spec.build(python, port, settings.workers, run.APP), *KEEP_ALIVE[name](settings.keep_alive)]
    if settings.capacity and name in CAPACITY:
        command += CAPACITY[name](settings.capacity)
    if settings.server_nofile:
        command = ["prlimit", f"--nofile={settings.server_nofile}", "--", *command]
    return command


def measure_cell(name: str, idle: int, round_no: int, settings: Settings) -> Cell:
    port = harness.free_port()
    cell = Cell(round=round_no, server=name, port=port, idle=idle)
    log_path = settings.logs_dir / f"{round_no:02d}-{idle}-{name}.log"
    proc = harness.start_server(
        server_command(name, settings, port), run.REPO_ROOT, run.server_env(), log_path
    )
    hold: IdleHold | None = None
    try:
        harness.wait_until_serving(proc, port, 30.0)
        harness.wait_for_workers(proc.pid, settings.workers + 1, 30.0)
        if settings.warmup:
            harness.run_wrk(port, settings.threads, settings.connections, settings.warmup)
        if idle:
            lifetime = settings.open_timeout + settings.warmup + settings.duration + 120
            hold = IdleHold(port, idle, settings.refresh, settings.open_timeout, lifetime)
            opened = hold.opened(settings.open_timeout + IDLE_TIMEOUT + 30)
            cell.opened, cell.open_seconds = opened["opened"], opened["seconds"]
            cell.open_failures = opened["failures"]
        before = sampling.cpu_snapshot(proc.pid)
        result = harness.run_wrk(port, settings.threads, settings.connections, settings.duration)
        cell.foreign_cpu = sampling.foreign_cpu_share(before, sampling.cpu_snapshot(proc.pid, before.tree))
        memory = sampling.tree_memory(proc.pid)
        cell.processes, cell.rss, cell.pss = memory.processes, memory.rss, memory.pss
        cell.split = established_by_process(proc.pid, port)
        cell.open_after = hold.still_open() if hold else 0
        cell.requests_per_sec, cell.latency_ms = result.requests_per_sec, result.latency_ms
        cell.requests, cell.socket_errors = result.requests, result.socket_errors
        cell.non_2xx = result.non_2xx
        if not result.requests:
            cell.error = "wrk got no response while the idle connections were held"
    except (harness.ServerError, subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
        cell.error = f"{exc}\n{harness.tail(log_path)}"
    finally:
        if hold is not None:
            hold.close()
        stopped, problems = harness.stop_and_check(proc, port, 10.0)
        cell.killed = stopped.killed
        if problems:
            cell.error = "; ".join(filter(None, [cell.error, problems]))
        log = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
        cell.log_lines, cell.fd_errors = len(log), sum(1 for line in log if FD_EXHAUSTED.search(line))
    return cell


def run_cells(servers: Sequence[str], idle_counts: Sequence[int], settings: Settings,
              cells: list[Cell]) -> None:  # fmt: skip
    """Every round: each N, and for each N every server, in an order rotated by one per round."""
    for round_no in range(1, settings.rounds + 1):
        for idle in idle_counts:
            for name in harness.rotated(servers, round_no):
                sampling.wait_for_quiet(settings.max_other_cpu, settings.quiet_timeout)
                cell = measure_cell(name, idle, round_no, settings)
                cells.append(cell)
                _progress(cell, settings.rounds)


def _progress(cell: Cell, rounds: int) -> None:
    if cell.ok:
        line = (
            f"{cell.requests_per_sec:9,.0f} req/s  p99 {cell.latency_ms['99']:7.2f} ms  "
            f"PSS {cell.pss / MIB:6.1f} MiB  open {cell.open_after}/{cell.idle} "
            f"(opened {cell.opened} in {cell.open_seconds:.1f} s)  split {cell.split}  "
            f"other CPU {cell.foreign_cpu:4.0%}"
        )
        if cell.socket_errors or cell.non_2xx or cell.fd_errors:
            line += f"  errors {cell.socket_errors} non-2xx {cell.non_2xx} fd-errors {cell.fd_errors}"
    else:
        line = f"FAILED: {cell.error}"
    print(
        f"[round {cell.round}/{rounds}] N={cell.idle:<6} {cell.server:17} {line}", file=sys.stderr, flush=True
    )


# --- the command -----------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.c10k", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="times each server is measured at each N (3)")
    parser.add_argument(
        "--idle", default=",".join(map(str, IDLE_COUNTS)), help="idle connection counts (0,1000,10000)"
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds of each recorded wrk run (10)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of unrecorded wrk before the idle connections (1)"
    )
    parser.add_argument("--connections", type=int, default=64, help="wrk -c (64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t (2)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per server (2)")
    parser.add_argument(
        "--keep-alive", type=int, default=120, help="idle keep-alive timeout given to every server (120)"
    )
    parser.add_argument(
        "--refresh",
        type=float,
        default=30.0,
        help="an idle connection's next request after this many seconds (30)",
    )
    parser.add_argument(
        "--open-timeout", type=float, default=120.0, help="seconds to open the idle connections (120)"
    )
    parser.add_argument(
        "--server-nofile",
        type=int,
        default=0,
        help="the servers' descriptor limit (default: the runner's, raised)",
    )
    parser.add_argument(
        "--default-capacity",
        action="store_true",
        help="leave granian's connection cap (--backpressure) at its default",
    )
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help=f"comma list, a subset of {','.join(SERVERS)}"
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter that has the peer servers")
    parser.add_argument(
        "--forkserve-python", default=None, help="interpreter that has forkserve (default: --python)"
    )
    parser.add_argument(
        "--max-other-cpu",
        type=float,
        default=0.10,
        help="wait before a cell until other processes use less (0.10)",
    )
    parser.add_argument("--quiet-timeout", type=float, default=60.0, help="at most this long (60 s)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 1 round of 2 s, no warm-up, no waiting, N 0 and 1000",
    )
    parser.add_argument("--output", default=OUTPUT, help=f"markdown page to write ({OUTPUT})")
    parser.add_argument(
        "--results", type=Path, default=run.RESULTS_DIR, help="where the raw JSON and the logs go"
    )
    parser.add_argument(
        "--render", metavar="RESULTS_JSON", help="only rewrite --output from a saved raw JSON"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup, args.quiet_timeout = 1, 2, 0, 0.0
        if args.idle == parser.get_default("idle"):
            args.idle = "0,1000"
    unknown = [name for name in args.servers.split(",") if name not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)}; known: {', '.join(SERVERS)}")
    args.idle_counts = sorted(set(_ints(args.idle)) | {0})  # N = 0 is every per-connection figure's base
    return args


def build_meta(
    args: argparse.Namespace, argv: Sequence[str], settings: Settings, nofile: int
) -> dict[str, Any]:
    servers = args.servers.split(",")
    by_python: dict[str, list[str]] = {}
    for name in servers:
        spec = run.SERVERS[name]
        python = settings.forkserve_python if spec.forkserve_python else settings.python
        by_python.setdefault(python, ["uvicorn", "uvloop", "httptools"])
        if spec.package not in by_python[python]:
            by_python[python].append(spec.package)

    # As a reader would type it: `python`, not this machine's interpreter path.
    readable = dataclasses.replace(settings, python="python", forkserve_python="python")

    def shown(name: str) -> str:
        command = shlex.join(server_command(name, readable, 0))
        return command.replace(f"{harness.HOST}:0", f"{harness.HOST}:PORT").replace("--port 0", "--port PORT")

    return {
        "command": f"python -m benchmarks.c10k {shlex.join(argv)}".strip(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": run.machine_info(),
        "wrk_version": run.wrk_version(),
        "versions": {
            python: run.package_versions(python, packages) for python, packages in by_python.items()
        },
        "servers": {name: {"command": shown(name), "note": run.SERVERS[name].note} for name in servers},
        "servers_run": servers,
        "baseline": BASELINE,
        "idle_counts": args.idle_counts,
        "rounds": settings.rounds,
        "duration": settings.duration,
        "warmup": settings.warmup,
        "connections": settings.connections,
        "threads": settings.threads,
        "workers": settings.workers,
        "keep_alive": settings.keep_alive,
        "refresh": settings.refresh,
        "nofile": nofile,
        "server_nofile": settings.server_nofile,
    }


def write_page(meta: dict[str, Any], cells: Sequence[Cell], output: Path) -> None:
    rewrite_page(output, lambda notes: render_page(meta, cells, notes).rstrip("\n") + "\n")


def write_raw(meta: dict[str, Any], cells: Sequence[Cell], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "cells": [asdict(c) for c in cells]}, indent=2))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.render:
        payload = json.loads(Path(args.render).read_text())
        write_page(payload["meta"], [Cell(**c) for c in payload["cells"]], Path(args.output))
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    nofile = raise_nofile(max(args.idle_counts) + FD_ROOM)
    if nofile < max(args.idle_counts) + FD_ROOM:
        sys.exit(
            f"the descriptor limit is {nofile}, too low for {max(args.idle_counts)} idle connections: "
            f"raise it (ulimit -n {max(args.idle_counts) + FD_ROOM}) or lower --idle"
        )
    settings = Settings(
        rounds=args.rounds, duration=args.duration, warmup=args.warmup, connections=args.connections,
        threads=args.threads, workers=args.workers, keep_alive=args.keep_alive, refresh=args.refresh,
        open_timeout=args.open_timeout, server_nofile=args.server_nofile,
        capacity=0 if args.default_capacity else max(args.idle_counts) + FD_ROOM,
        quiet_timeout=args.quiet_timeout, max_other_cpu=args.max_other_cpu, python=args.python,
        forkserve_python=args.forkserve_python or args.python, logs_dir=args.results / f"c10k-{stamp}",
    )  # fmt: skip
    meta = build_meta(args, argv, settings, nofile)
    cells: list[Cell] = []
    try:
        run_cells(meta["servers_run"], args.idle_counts, settings, cells)
    except KeyboardInterrupt:
        partial = args.results / f"c10k-{stamp}-interrupted.json"
        write_raw(meta, cells, partial)
        print(f"interrupted; {len(cells)} cells saved to {partial}", file=sys.stderr)
        return 130
    raw = args.results / f"c10k-{stamp}.json"
    write_raw(meta, cells, raw)
    write_page(meta, cells, Path(args.output))
    print(f"wrote {args.output} and {raw}", file=sys.stderr)
    return 0 if all(c.ok for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
