"""WebSocket message throughput, latency and handshake rate: forkserve against its peers, one app.

Every server serves ``benchmarks.apps_ws:echo`` (plain ASGI; sends each message back) with 2
workers and its access log off. In each round every server is started once, in rotated order, and
measured three ways on that one start:

* for each message size: C connections, each sending a message and waiting for its echo in a
  closed loop, a warm-up then a measured window: messages/s, and the p50/p99 round trip of a
  message under that load;
* handshake rate: a fixed number of connect, upgrade, close cycles, a few at a time.

The load comes from P client processes (``benchmarks.ws_client``: frames by hand, microseconds
per message), started once per server, the connections split among them. Each reports the CPU it
used in the window, so the page says how much of the machine the client took from the servers.

    python -m benchmarks.ws_throughput --output docs/benchmarks-ws-throughput.md
    python -m benchmarks.ws_throughput --quick --output /tmp/ws.md      # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import shlex
import signal
import subprocess
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from benchmarks import harness, run, sampling, ws_client
from benchmarks.harness import HOST
from benchmarks.report import NOTES_MARKER, rewrite_page
from benchmarks.stats import latency, median, ratio

APP = "benchmarks.apps_ws:echo"
BASELINE = "uvicorn"
WS_CHOICES = ("websockets-sansio", "websockets", "wsproto")
# uvicorn's --ws auto, which gunicorn's UvicornWorker cannot change, when websockets is installed.
UVICORN_AUTO_WS = "websockets-sansio"


@dataclass(frozen=True)
class Server:
    name: str
    build: Callable[[str, int, int, str], list[str]]  # (python, port, workers, --ws) -> argv
    package: str
    ws: Callable[[str], str]  # the WebSocket implementation it runs, given the runner's --ws


def _forkserve(python: str, port: int, workers: int, ws: str) -> list[str]:
    return [*run.forkserve_command(python, port, workers, APP), "--ws", ws]


def _uvicorn(python: str, port: int, workers: int, ws: str) -> list[str]:
    return [*run.uvicorn_command(python, port, workers, APP), "--ws", ws]


def _gunicorn(python: str, port: int, workers: int, ws: str) -> list[str]:
    return run.gunicorn_uvicorn_command(python, port, workers, APP)


def _granian(python: str, port: int, workers: int, ws: str) -> list[str]:
    return run.granian_command(python, port, workers, APP)


SERVERS: dict[str, Server] = {
    s.name: s
    for s in (
        Server("forkserve", _forkserve, "forkserve", lambda ws: f"uvicorn's {ws} (`--ws {ws}`)"),
        Server("uvicorn", _uvicorn, "uvicorn", lambda ws: f"uvicorn's {ws} (`--ws {ws}`)"),
        Server(
            "gunicorn-uvicorn",
            _gunicorn,
            "gunicorn",
            lambda ws: f"uvicorn's {UVICORN_AUTO_WS} (UvicornWorker takes uvicorn's `--ws auto`)",
        ),
        Server("granian", _granian, "granian", lambda ws: "granian's own (Rust; no choice)"),
    )
}
VERSION_PACKAGES = (
    "forkserve",
    "uvicorn",
    "gunicorn",
    "granian",
    "websockets",
    "wsproto",
    "uvloop",
    "httptools",
)


@dataclass(frozen=True)
class Settings:
    rounds: int
    duration: float
    warmup: float
    connections: int
    sizes: tuple[int, ...]
    binary: bool
    processes: int
    cycles: int
    cycle_concurrency: int
    workers: int
    ws: str
    python: str
    forkserve_python: str
    logs_dir: Path
    cycle_limit: float = 60.0  # seconds the handshake cycles may take in all, whatever is left
    timeout: float = 10.0  # a connection that does not open, or an echo that does not come, in this long


# ------------------------------------------------------------------ records


@dataclass
class EchoRun:
    size: int
    messages_per_sec: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    messages: int = 0
    server_cpu_us: float | None = None  # the server tree's CPU per message
    server_share: float = 0.0  # of the machine's CPU capacity, over the window
    client_share: float = 0.0
    client_busiest: float = 0.0  # of one core: the busiest client process (near 1: the client limits)
    foreign_cpu: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)
    error: str | None = None


@dataclass
class CycleRun:
    handshakes_per_sec: float | None = None
    p50_ms: float | None = None  # connect to 101, per cycle
    p99_ms: float | None = None
    cycles: int = 0
    server_cpu_us: float | None = None  # per cycle
    client_share: float = 0.0
    client_busiest: float = 0.0
    foreign_cpu: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)
    error: str | None = None


@dataclass
class ServerRun:
    round: int
    server: str
    port: int
    echo: list[EchoRun] = field(default_factory=list)
    cycles: CycleRun | None = None
    killed: bool = False
    error: str | None = None


def split(total: int, parts: int) -> list[int]:
    """TOTAL spread over PARTS as evenly as whole numbers go, the larger shares first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def echo_figures(
    size: int, replies: list[dict[str, Any]], seconds: float, server_cpu: float, cpus: int
) -> EchoRun:
    """One EchoRun from the client processes' answers to ``load`` and the server's CPU seconds."""
    rtts = array("d")
    failures: Counter[str] = Counter()
    for reply in replies:
        rtts.frombytes(reply["rtts"])
        failures.update(reply["failures"])
    messages = sum(reply["messages"] for reply in replies)
    client_cpu = sum(reply["cpu"] for reply in replies)
    lat = latency(rtts)
    return EchoRun(
        size=size,
        messages_per_sec=messages / seconds,
        p50_ms=lat.p50_ms,
        p99_ms=lat.p99_ms,
        messages=messages,
        server_cpu_us=server_cpu / messages * 1e6 if messages else None,
        server_share=server_cpu / (seconds * cpus),
        client_share=client_cpu / (seconds * cpus),
        client_busiest=max(reply["cpu"] for reply in replies) / seconds,
        failures=dict(failures),
    )


def cycle_figures(replies: list[dict[str, Any]], start: float, server_cpu: float, cpus: int) -> CycleRun:
    setups = array("d")
    failures: Counter[str] = Counter()
    for reply in replies:
        setups.frombytes(reply["setups"])
        failures.update(reply["failures"])
    cycles = sum(reply["cycles"] for reply in replies)
    seconds = max(reply["last"] for reply in replies) - start
    lat = latency(setups)
    return CycleRun(
        handshakes_per_sec=cycles / seconds if seconds > 0 else None,
        p50_ms=lat.p50_ms,
        p99_ms=lat.p99_ms,
        cycles=cycles,
        server_cpu_us=server_cpu / cycles * 1e6 if cycles else None,
        client_share=sum(reply["cpu"] for reply in replies) / (seconds * cpus) if seconds > 0 else 0.0,
        client_busiest=max(reply["cpu"] for reply in replies) / seconds if seconds > 0 else 0.0,
        failures=dict(failures),
    )


# ------------------------------------------------------------------ the client processes


class ClientError(RuntimeError):
    """A client process failed, or did not answer in time."""


class ClientPool:
    """P client processes (``ws_client.client_main``), each asked the same kind of command at once."""

    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of the runner's
        self.pipes: list[Any] = []
        self.procs: list[Any] = []
        for _ in range(processes):
            parent, child = context.Pipe()
            proc = context.Process(target=ws_client.client_main, args=(child,), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc: object) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send({"op": "exit"})
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()  # ours, by its Process handle
                proc.join(5)

    def send(self, commands: Sequence[dict[str, Any]]) -> None:
        """Send commands[i] to process i."""
        for pipe, command in zip(self.pipes, commands, strict=False):
            pipe.send(command)

    def collect(self, count: int, timeout: float, what: str) -> list[dict[str, Any]]:
        """The answers of the first COUNT processes, waiting at most TIMEOUT for all of them."""
        deadline = time.monotonic() + timeout
        replies = []
        for index, pipe in enumerate(self.pipes[:count]):
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise ClientError(f"client process {index} did not finish {what} within {timeout:g} s")
            try:
                reply: dict[str, Any] = pipe.recv()
            except (EOFError, OSError) as exc:
                raise ClientError(f"client process {index} is gone ({type(exc).__name__})") from exc
            if "error" in reply:
                raise ClientError(f"client process {index}: {reply['error']}")
            replies.append(reply)
        return replies

    def ask(self, commands: Sequence[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        self.send(commands)
        return self.collect(len(commands), timeout, commands[0]["op"] if commands else "nothing")

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self.procs:
            try:
                times = psutil.Process(proc.pid).cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
        return total


# ------------------------------------------------------------------ one server, one round


def run_server(server: Server, round_no: int, settings: Settings) -> ServerRun:
    port = harness.free_port()
    record = ServerRun(round_no, server.name, port)
    python = settings.forkserve_python if server.name == "forkserve" else settings.python
    command = server.build(python, port, settings.workers, settings.ws)
    log_path = settings.logs_dir / f"{round_no:02d}-{server.name}.log"
    proc = harness.start_server(command, run.REPO_ROOT, run.server_env(), log_path)
    try:
        harness.wait_until_serving(proc, port, 30)
        harness.wait_for_workers(proc.pid, settings.workers + 1, 30)
        with ClientPool(settings.processes) as pool:
            for size in settings.sizes:
                record.echo.append(_echo(pool, proc.pid, port, size, settings))
            record.cycles = _cycles(pool, proc.pid, port, settings)
    except (harness.ServerError, ClientError, subprocess.SubprocessError, OSError) as exc:
        record.error = f"{exc}\n{harness.tail(log_path)}"
    finally:
        harness.stop_into(record, proc, port, 10.0)
    return record


def _echo(pool: ClientPool, pid: int, port: int, size: int, settings: Settings) -> EchoRun:
    opcode = ws_client.BINARY if settings.binary else ws_client.TEXT
    shares = split(settings.connections, settings.processes)
    opened = pool.ask(
        [
            {"op": "open", "host": HOST, "port": port, "connections": n, "opcode": opcode, "size": size,
             "timeout": settings.timeout}
            for n in shares
        ],
        settings.timeout + 30,
    )  # fmt: skip
    failed: Counter[str] = Counter()
    for reply in opened:
        failed.update(reply["failures"])
    if failed:
        return EchoRun(size, failures=dict(failed), error=f"connections did not open: {dict(failed)}")
    start = time.monotonic() + 0.2
    warm, stop = start + settings.warmup, start + settings.warmup + settings.duration
    grace = settings.timeout
    pool.send([{"op": "load", "start": start, "warm": warm, "stop": stop, "grace": grace}] * len(shares))
    time.sleep(max(0.0, warm - time.monotonic()))
    before, clients_before = sampling.cpu_snapshot(pid), pool.cpu_seconds()
    time.sleep(max(0.0, stop - time.monotonic()))
    after, clients_after = sampling.cpu_snapshot(pid, before.tree), pool.cpu_seconds()
    replies = pool.collect(len(shares), 2 * grace + 30, "its load")
    result = echo_figures(size, replies, stop - warm, after.server - before.server, psutil.cpu_count() or 1)
    result.foreign_cpu = sampling.foreign_cpu_share(before, after, clients_after - clients_before)
    return result


def _cycles(pool: ClientPool, pid: int, port: int, settings: Settings) -> CycleRun:
    counts = split(settings.cycles, settings.processes)
    concurrency = split(settings.cycle_concurrency, settings.processes)
    start = time.monotonic() + 0.2
    before, clients_before = sampling.cpu_snapshot(pid), pool.cpu_seconds()
    replies = pool.ask(
        [
            {"op": "cycles", "host": HOST, "port": port, "count": n, "concurrency": max(1, c), "start": start,
             "limit": settings.cycle_limit, "timeout": settings.timeout}
            for n, c in zip(counts, concurrency, strict=True)
        ],
        settings.cycle_limit + settings.timeout + 30,
    )  # fmt: skip
    after, clients_after = sampling.cpu_snapshot(pid, before.tree), pool.cpu_seconds()
    result = cycle_figures(replies, start, after.server - before.server, psutil.cpu_count() or 1)
    result.foreign_cpu = sampling.foreign_cpu_share(before, after, clients_after - clients_before)
    return result


# ------------------------------------------------------------------ the rounds


def run_rounds(names: list[str], settings: Settings, records: list[ServerRun]) -> list[ServerRun]:
    """Every server once per round, in rotated order; records appended as they come (a Ctrl-C keeps them)."""
    for round_no in range(1, settings.rounds + 1):
        for name in harness.rotated(names, round_no):
            record = run_server(SERVERS[name], round_no, settings)
            records.append(record)
            _progress(record, settings.rounds)
            time.sleep(0.5)
    return records


def _progress(record: ServerRun, rounds: int) -> None:
    head = f"[round {record.round}/{rounds}] {record.server:17}"
    for e in record.echo:
        figures = (
            f"{e.messages_per_sec:9,.0f} msg/s  p50 {e.p50_ms:6.2f} p99 {e.p99_ms:6.2f} ms  "
            f"server {e.server_cpu_us:5.1f} us/msg  client CPU {e.client_share:4.0%}  "
            f"other {e.foreign_cpu:4.0%}"
            if e.error is None and e.messages_per_sec and e.p50_ms is not None and e.p99_ms is not None
            and e.server_cpu_us is not None
            else f"FAILED {e.error}"
        )  # fmt: skip
        print(f"{head} {e.size:>6} B  {figures}", file=sys.stderr, flush=True)
    c = record.cycles
    if c is not None and c.handshakes_per_sec is not None:
        print(f"{head} handshakes {c.handshakes_per_sec:8,.0f}/s  p99 {c.p99_ms:6.2f} ms  "
              f"failures {sum(c.failures.values())}", file=sys.stderr, flush=True)  # fmt: skip
    if record.error:
        print(f"{head} FAILED {record.error}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the page


@dataclass(frozen=True)
class Row:
    server: str
    value: float | None  # messages/s or handshakes/s, median over the rounds
    ratio: float | None  # over the baseline's median
    p50_ms: float | None
    p99_ms: float | None
    server_cpu_us: float | None
    client_share: float | None
    client_busiest: float | None
    foreign_cpu: float | None
    ok: int
    runs: int
    failures: int


def echo_rows(records: list[ServerRun], names: list[str], size: int) -> list[Row]:
    """Medians per server of the echo runs at SIZE, with the ratio to the baseline's median."""
    runs = {n: [e for r in records if r.server == n for e in r.echo if e.size == size] for n in names}
    total = {n: sum(1 for r in records if r.server == n) for n in names}
    return _rows(
        names,
        {n: [e for e in runs[n] if e.error is None and e.messages_per_sec is not None] for n in names},
        total,
        lambda e: e.messages_per_sec,
        {n: sum(sum(e.failures.values()) for e in runs[n]) for n in names},
    )


def cycle_rows(records: list[ServerRun], names: list[str]) -> list[Row]:
    runs = {n: [r.cycles for r in records if r.server == n and r.cycles is not None] for n in names}
    total = {n: sum(1 for r in records if r.server == n) for n in names}
    return _rows(
        names,
        {n: [c for c in runs[n] if c.error is None and c.handshakes_per_sec is not None] for n in names},
        total,
        lambda c: c.handshakes_per_sec,
        {n: sum(sum(c.failures.values()) for c in runs[n]) for n in names},
    )


def _rows(
    names: list[str],
    ok: dict[str, list[Any]],
    total: dict[str, int],
    value: Callable[[Any], float | None],
    failures: dict[str, int],
) -> list[Row]:
    medians = {n: median(value(run) for run in ok[n]) for n in names}
    base = medians.get(BASELINE)
    return [
        Row(
            server=n,
            value=medians[n],
            ratio=ratio(medians[n], base),
            p50_ms=median(run.p50_ms for run in ok[n]),
            p99_ms=median(run.p99_ms for run in ok[n]),
            server_cpu_us=median(run.server_cpu_us for run in ok[n]),
            client_share=median(run.client_share for run in ok[n]),
            client_busiest=median(run.client_busiest for run in ok[n]),
            foreign_cpu=median(run.foreign_cpu for run in ok[n]),
            ok=len(ok[n]),
            runs=total[n],
            failures=failures[n],
        )
        for n in names
    ]


def _num(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _size(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def render(meta: dict[str, Any], records: list[ServerRun], notes: str = "\n") -> str:
    names: list[str] = meta["servers_order"]
    s = meta["settings"]
    kind = "binary" if s["binary"] else "text"
    lines = [
        "# Benchmark: WebSocket messages and handshakes",
        "",
        "<!-- Generated by `python -m benchmarks.ws_throughput` (see benchmarks/README.md); hand-written "
        "notes go after the marker at the end. -->",
        "",
        f"Generated on {meta['date']} by `{meta['command']}`. Machine: {meta['machine']}.",
        "",
        f"Every server serves `{APP}` (plain ASGI: each message is sent back as it came) with "
        f"{s['workers']} workers and its access log off, and is started once per round (order rotated "
        f"by one each round, {s['rounds']} round{'s' if s['rounds'] != 1 else ''}). On each start, "
        "one after the other:",
        "",
        f"- **messages**: {s['connections']} WebSocket connections, each sending a {kind} message and "
        "waiting for its echo before sending the next (a closed loop), "
        f"{s['warmup']:g} s of warm-up then {s['duration']:g} s measured, once per message size. "
        "The round trip of every message echoed in the window gives p50 and p99;",
        f"- **handshakes**: {s['cycles']} cycles of connect, upgrade (101), closing handshake and close, "
        f"{s['cycle_concurrency']} at a time; the rate is cycles per second from the first connect to the "
        "last close, the latency is connect to 101.",
        "",
        f"The client: {s['processes']} processes of `benchmarks/ws_client.py` (frames built and checked "
        "by hand on asyncio protocols and uvloop; every echo is compared with what was sent; no "
        "compression offered, so none is negotiated). Ratios are to `uvicorn --workers` on the same "
        "WebSocket implementation; medians over the rounds.",
        "",
        "| server | WebSocket implementation | command |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {n} | {meta['servers'][n]['ws']} | `{meta['servers'][n]['command']}` |" for n in names]
    for size in s["sizes"]:
        lines += [
            "",
            f"## {_size(size)} messages, {s['connections']} connections",
            "",
            "| server | messages/s | vs uvicorn | p50 ms | p99 ms | server CPU µs/message | client CPU | "
            "busiest client process | other CPU | runs ok | failed messages |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in echo_rows(records, names, size):
            lines.append(
                f"| {row.server} | {_num(row.value, ',.0f')} | {_num(row.ratio, '.2f')} | "
                f"{_num(row.p50_ms, '.2f')} | {_num(row.p99_ms, '.2f')} | {_num(row.server_cpu_us, '.1f')} | "
                f"{_num(row.client_share, '.0%')} | {_num(row.client_busiest, '.0%')} | "
                f"{_num(row.foreign_cpu, '.0%')} | {row.ok}/{row.runs} | "
                f"{row.failures} |"
            )
    lines += [
        "",
        f"## Handshakes ({s['cycles']} connect/close cycles, {s['cycle_concurrency']} at a time)",
        "",
        "| server | handshakes/s | vs uvicorn | p50 ms | p99 ms | server CPU µs/cycle | client CPU | "
        "busiest client process | other CPU | runs ok | failed cycles |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in cycle_rows(records, names):
        lines.append(
            f"| {row.server} | {_num(row.value, ',.0f')} | {_num(row.ratio, '.2f')} | "
            f"{_num(row.p50_ms, '.2f')} | {_num(row.p99_ms, '.2f')} | {_num(row.server_cpu_us, '.0f')} | "
            f"{_num(row.client_share, '.0%')} | {_num(row.client_busiest, '.0%')} | "
            f"{_num(row.foreign_cpu, '.0%')} | {row.ok}/{row.runs} | "
            f"{row.failures} |"
        )
    lines += [
        "",
        "## Reading the numbers",
        "",
        f'The client runs on the same {meta["cpus"]} cores as the servers. "client CPU" is the share of '
        "all the machine's cores the client processes used during the measured window; \"busiest client "
        'process" is the share of one core its busiest process used (near 100% would mean the client, '
        'not the servers, set the pace); "other CPU" is what other processes on the machine used. '
        "Whatever the client and the "
        "other processes take, no server can have: the absolute rates are lower than with a client on "
        "another machine, and a run with much other CPU is slower for reasons not its own. Every server "
        'pays the same client cost per message, so the ratios hold better than the rates. "server CPU '
        "µs/message\" is the server's whole process tree's CPU time per echoed message (one receive and "
        "one send): the figure least moved by a noisy neighbour.",
        "",
        f"Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items() if v)}.",
        "",
        "Every run:",
        "",
        "```",
    ]
    for r in records:
        for e in r.echo:
            figure = (
                f"{_num(e.messages_per_sec, '9,.0f')} msg/s  p50 {_num(e.p50_ms, '6.2f')}  "
                f"p99 {_num(e.p99_ms, '6.2f')} ms  server {_num(e.server_cpu_us, '5.1f')} us/msg  "
                f"client CPU {e.client_share:4.0%}  other {e.foreign_cpu:4.0%}"
                if e.error is None
                else f"failed: {e.error.splitlines()[0]}"
            )
            lines.append(f"round {r.round}  {r.server:17} {_size(e.size):>7}  {figure}")
        c = r.cycles
        if c is not None:
            figure = (
                f"{_num(c.handshakes_per_sec, '9,.0f')} handshakes/s  p99 {_num(c.p99_ms, '6.2f')} ms  "
                f"server {_num(c.server_cpu_us, '5.0f')} us/cycle  failed {sum(c.failures.values())}"
                if c.error is None
                else f"failed: {c.error.splitlines()[0]}"
            )
            lines.append(f"round {r.round}  {r.server:17} {'cycles':>7}  {figure}")
        if r.error:
            lines.append(f"round {r.round}  {r.server:17} failed: {r.error.splitlines()[0]}")
    lines += ["```", "", NOTES_MARKER + notes]
    return "\n".join(lines).rstrip("\n") + "\n"


# ------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ws_throughput", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=3, help="times each server is measured (default 3)")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds per message size (default 10)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of load before each window (default 2)"
    )
    parser.add_argument("--connections", type=int, default=64, help="WebSocket connections (default 64)")
    parser.add_argument(
        "--sizes", default="64,16384", help="message sizes in bytes, comma list (default 64,16384)"
    )
    parser.add_argument("--binary", action="store_true", help="binary messages (default: text)")
    parser.add_argument("--processes", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--cycles", type=int, default=2000, help="handshake cycles per run (default 2000)")
    parser.add_argument("--cycle-concurrency", type=int, default=16, help="cycles at a time (default 16)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per server (default 2)")
    parser.add_argument(
        "--ws",
        choices=WS_CHOICES,
        default="websockets-sansio",
        help="forkserve's and uvicorn's --ws (default websockets-sansio, uvicorn's auto)",
    )
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"comma list of {','.join(SERVERS)}")
    parser.add_argument("--python", default=sys.executable, help="interpreter that has the peer servers")
    parser.add_argument(
        "--forkserve-python", default=None, help="interpreter that has forkserve (default --python)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 round, 1 s warm-up, 2 s, 300 cycles"
    )
    parser.add_argument("--output", default="docs/benchmarks-ws-throughput.md", help="the page to write")
    parser.add_argument("--render", metavar="RESULTS_JSON", help="only rewrite --output from a saved run")
    parser.add_argument(
        "--results",
        type=Path,
        default=run.RESULTS_DIR,
        help="where raw JSON and logs go (benchmarks/results)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup, args.duration, args.cycles = 1, 1.0, 2.0, 300
    try:
        args.sizes = tuple(int(n) for n in args.sizes.split(",") if n.strip())
    except ValueError:
        parser.error(f"--sizes takes a comma list of byte counts, not {args.sizes!r}")
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--sizes needs at least one size of 1 byte or more")
    if min(args.rounds, args.connections, args.processes, args.cycles, args.cycle_concurrency) < 1:
        parser.error(
            "--rounds, --connections, --processes, --cycles and --cycle-concurrency must be at least 1"
        )
    if args.connections < args.processes:
        parser.error(f"--connections ({args.connections}) must be at least --processes ({args.processes})")
    args.names = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = [n for n in args.names if n not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)}; known: {', '.join(SERVERS)}")
    return args


def settings_from(args: argparse.Namespace, logs_dir: Path) -> Settings:
    return Settings(
        rounds=args.rounds,
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        sizes=args.sizes,
        binary=args.binary,
        processes=args.processes,
        cycles=args.cycles,
        cycle_concurrency=args.cycle_concurrency,
        workers=args.workers,
        ws=args.ws,
        python=args.python,
        forkserve_python=args.forkserve_python or args.python,
        logs_dir=logs_dir,
    )


def build_meta(args: argparse.Namespace, settings: Settings, argv: Sequence[str]) -> dict[str, Any]:
    machine = run.machine_info()
    versions = run.package_versions(settings.python, VERSION_PACKAGES)
    if settings.forkserve_python != settings.python:
        versions["forkserve"] = run.package_versions(settings.forkserve_python, ["forkserve"])["forkserve"]
    servers = {}
    for name in args.names:
        server = SERVERS[name]
        python = "python"
        argv_shown = shlex.join(server.build(python, 0, settings.workers, settings.ws))
        argv_shown = argv_shown.replace(f"{HOST}:0", f"{HOST}:PORT").replace("--port 0", "--port PORT")
        servers[name] = {"command": argv_shown, "ws": server.ws(settings.ws)}
    settings_meta = {
        k: v for k, v in asdict(settings).items() if k not in ("python", "forkserve_python", "logs_dir")
    }
    return {
        "command": f"python -m benchmarks.ws_throughput {shlex.join(argv)}".strip(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": "{nproc} CPUs ({cpu_model}), Linux {kernel}, {memory_gib:.0f} GiB".format(**machine),
        "cpus": machine["nproc"],
        "versions": versions,
        "servers": servers,
        "servers_order": args.names,
        "settings": settings_meta,
    }


def missing(meta: dict[str, Any]) -> list[str]:
    return [
        f"{name} ({SERVERS[name].package} is not installed)"
        for name in meta["servers_order"]
        if not meta["versions"].get(SERVERS[name].package)
    ]


def load_raw(path: Path) -> tuple[dict[str, Any], list[ServerRun]]:
    payload = json.loads(path.read_text())
    records = []
    for run_ in payload["runs"]:
        echo = [EchoRun(**e) for e in run_.pop("echo")]
        cycles = run_.pop("cycles")
        records.append(ServerRun(**run_, echo=echo, cycles=CycleRun(**cycles) if cycles else None))
    return payload["meta"], records


def write(meta: dict[str, Any], records: list[ServerRun], raw: Path | None, output: Path) -> None:
    if raw is not None:
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps({"meta": meta, "runs": [asdict(r) for r in records]}, indent=1))
    rewrite_page(output, lambda notes: render(meta, records, notes))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    output = Path(args.output)
    if args.render:
        saved_meta, saved = load_raw(Path(args.render))
        write(saved_meta, saved, None, output)
        return 0
    signal.signal(signal.SIGTERM, _interrupt)  # unwinds through the finally blocks that stop servers
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    settings = settings_from(args, args.results / f"ws-throughput-{stamp}")
    meta = build_meta(args, settings, argv)
    absent = missing(meta)
    if absent:
        print("cannot run: " + "; ".join(absent), file=sys.stderr)
        return 2
    records: list[ServerRun] = []
    raw = args.results / f"ws-throughput-{stamp}.json"
    try:
        run_rounds(args.names, settings, records)
    except KeyboardInterrupt:
        partial = raw.with_name(raw.stem + "-interrupted.json")
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"meta": meta, "runs": [asdict(r) for r in records]}, indent=1))
        print(f"interrupted; {len(records)} runs saved to {partial}", file=sys.stderr)
        return 130
    write(meta, records, raw, output)
    print(f"wrote {output} and {raw}", file=sys.stderr)
    ok = all(r.error is None and all(e.error is None for e in r.echo) for r in records)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
