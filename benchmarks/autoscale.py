"""Autoscaling under a stepped load: `-w 1 --max-workers 4` against fixed `-w 1` and fixed `-w 4`.

Run from the repository root with an interpreter that has matplotlib (forkserve itself runs under
``--forkserve-python``):

    python -m benchmarks.autoscale --output docs/benchmarks-autoscale.md

Each run starts one server on ``benchmarks.apps_cpu:app`` and a load generator in a process of its
own. The load follows ``--phases`` (DEFAULT_PHASES): idle trickles (a few requests a second, so
latency is seen there too) around bursts of closed-loop keep-alive clients on a CPU-bound route.
Meanwhile this process samples the server's worker count every 0.25 s and time-stamps its log lines
as they appear, since the log's own timestamps have one-second resolution. The page gets medians of
the rounds, the autoscaler's decisions, and a plot of workers over time (``docs/img/autoscale.png``).

``--reconnect-every N`` makes burst clients open a new connection every N responses (a diagnostic:
it shows how much of the result comes from keep-alive connections staying on the worker that
accepted them). ``--render RESULTS_JSON`` rewrites the page and plot from a saved run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.metadata
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from benchmarks import harness, sampling
from benchmarks.apps_cpu import CPU_PATH
from benchmarks.client import Budget, Client, closed_loop, open_loop, watchdog
from benchmarks.client import Outcome as Answer
from benchmarks.harness import HOST
from benchmarks.report import NOTES_MARKER, rewrite_page
from benchmarks.run import REPO_ROOT, RESULTS_DIR, machine_info, module_argv, package_versions, server_env
from benchmarks.stats import median, percentile

APP = "benchmarks.apps_cpu:app"
REQUEST_TIMEOUT = 10.0  # a request slower than this counts as failed: nothing here should take a second
LEAD = 1.5  # seconds between starting the load generator and its first request, for its own start-up
SAMPLE_INTERVAL = 0.25
LOG_POLL = 0.05
WORKER_TITLE = "forkserve: worker"
LOAD_GENERATOR_FLAG = "--load-generator"


@dataclass(frozen=True)
class Phase:
    kind: str  # "idle" (trickle) or "burst" (closed-loop clients)
    seconds: float


DEFAULT_PHASES = "idle:5,burst:20,idle:15,burst:10,idle:10"


def parse_phases(text: str) -> tuple[Phase, ...]:
    phases = []
    for item in text.split(","):
        kind, _, seconds = item.strip().partition(":")
        if kind not in ("idle", "burst") or not seconds:
            raise ValueError(f"phase {item!r}: expected idle:SECONDS or burst:SECONDS")
        phases.append(Phase(kind, float(seconds)))
    return tuple(phases)


def phase_windows(phases: Sequence[Phase]) -> list[tuple[int, Phase, float, float]]:
    """(index, phase, start, end), in seconds since the load started."""
    windows, start = [], 0.0
    for index, phase in enumerate(phases):
        windows.append((index, phase, start, start + phase.seconds))
        start += phase.seconds
    return windows


@dataclass(frozen=True)
class Config:
    name: str
    flags: str
    workers: int  # at start
    label: str  # for the plot and tables


AUTOSCALE_FLAGS = "--scale-interval 0.5 --scale-cooldown 1 --scale-down-idle 5"
CONFIGS: dict[str, Config] = {
    c.name: c
    for c in (
        Config("autoscaled", f"-w 1 --max-workers 4 {AUTOSCALE_FLAGS}", 1, "-w 1 --max-workers 4"),
        Config("fixed-1", "-w 1", 1, "-w 1"),
        Config("fixed-4", "-w 4", 4, "-w 4"),
    )
}


def server_command(python: str, config: Config, port: int) -> list[str]:
    return module_argv(python, f"forkserve {APP} {config.flags} -b {HOST}:{port} --no-access-log")


# --------------------------------------------------------------------------------------------------
# The load generator: its own process, so that its CPU use and event loop are not this runner's,
# which samples the server meanwhile. Every request is recorded; none is retried.


@dataclass
class Outcome:
    sent: float  # seconds since the load started
    done: float
    ok: bool
    pid: int  # the worker that answered, 0 if none did
    phase: int
    error: str


def _pid_of(body: bytes) -> int | None:
    match = re.fullmatch(rb"(\d+) \S+", body)
    return int(match[1]) if match else None


class LoadGenerator:
    def __init__(
        self,
        port: int,
        t0: float,
        phases: Sequence[Phase],
        clients: int,
        trickle_rate: float,
        reconnect_every: int = 0,
    ) -> None:
        self.port = port
        self.t0 = t0
        self.windows = phase_windows(phases)
        self.clients = clients
        self.trickle_rate = trickle_rate
        self.reconnect_every = reconnect_every
        self.outcomes: list[Outcome] = []

    def _client(self) -> Client:
        return Client(
            self.port,
            path=CPU_PATH,
            timeout=REQUEST_TIMEOUT,
            body_ok=lambda body: _pid_of(body) is not None,
            reconnect_every=self.reconnect_every,
        )

    def _recorder(self, phase: int) -> Callable[[Answer], None]:
        def record(answer: Answer) -> None:
            pid = _pid_of(answer.body) if answer.ok else None
            sent, done = answer.start - self.t0, answer.end - self.t0
            self.outcomes.append(Outcome(sent, done, answer.ok, pid or 0, phase, answer.label))

        return record

    async def run(self) -> None:
        # Closed loop in the bursts: each client sends its next request when the last is answered.
        clients: list[Client] = []
        runs = []
        for index, phase, start, end in self.windows:
            if phase.kind == "burst":
                budget = Budget(self.t0 + end)
                for _ in range(self.clients):
                    clients.append(self._client())
                    runs.append(self._burst(clients[-1], self.t0 + start, budget, self._recorder(index)))
        async with watchdog(clients):
            await asyncio.gather(*runs, self._trickle())

    async def _burst(
        self, client: Client, start_at: float, budget: Budget, record: Callable[[Answer], None]
    ) -> None:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        await closed_loop(client, budget, record, pause_after_failure=0.05)

    async def _trickle(self) -> None:
        # Open loop in the idle phases: requests go out on a fixed schedule whether or not earlier
        # ones have finished, so a slow server shows up as latency rather than as fewer samples.
        for index, phase, start, end in self.windows:
            if phase.kind == "idle":
                budget = Budget(self.t0 + end + REQUEST_TIMEOUT)
                await open_loop(
                    self._client,
                    self.trickle_rate,
                    self.t0 + start,
                    self.t0 + end,
                    budget,
                    self._recorder(index),
                )


def load_generator_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.autoscale {LOAD_GENERATOR_FLAG}")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--t0", type=float, required=True, help="time.monotonic() of the first phase")
    parser.add_argument("--phases", default=DEFAULT_PHASES)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--trickle", type=float, default=2.0)
    parser.add_argument("--reconnect-every", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    gen = LoadGenerator(
        args.port, args.t0, parse_phases(args.phases), args.clients, args.trickle, args.reconnect_every
    )
    asyncio.run(gen.run())
    Path(args.out).write_text(json.dumps([asdict(o) for o in gen.outcomes]))
    return 0


# --------------------------------------------------------------------------------------------------
# The runner's side: start the server, sample it while the load runs, stop everything.


_LOG_KEEP = re.compile(r"scale|Booting worker|exited|\[(WARNING|ERROR|CRITICAL)\]")
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} ")


class Sampler:
    """Counts the server's workers every SAMPLE_INTERVAL and stamps its log lines as they appear.

    Runs in a thread of this process so that its readings share the load generator's clock
    (CLOCK_MONOTONIC is system-wide on Linux).
    """

    def __init__(self, pid: int, log_path: Path, t0: float) -> None:
        self.pid = pid
        self.log_path = log_path
        self.t0 = t0
        self.timeline: list[tuple[float, int]] = []
        self.initial_workers: list[int] | None = None  # pids at the first sample
        # Per sample, each worker's main thread: (seconds run, seconds waited to run) from schedstat.
        self.worker_cpu: list[tuple[float, dict[int, tuple[float, float]]]] = []
        self.log_events: list[tuple[float, str]] = []
        # Per process (pid, start time), its latest CPU time: a worker that exits keeps what it used.
        self._cpu: dict[tuple[int, float], float] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    @property
    def server_cpu(self) -> float:
        return sum(self._cpu.values())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)

    def _run(self) -> None:
        with self.log_path.open("rb") as log:
            partial = b""
            next_sample = 0.0
            while not self._stopping.wait(LOG_POLL):
                now = time.monotonic()
                chunk = log.read()
                if chunk:
                    *lines, partial = (partial + chunk).split(b"\n")
                    for line in lines:
                        text = _LOG_PREFIX.sub("", line.decode(errors="replace"))
                        if _LOG_KEEP.search(text):
                            self.log_events.append((round(now - self.t0, 3), text))
                if now >= next_sample:
                    self.sample()
                    next_sample = now + SAMPLE_INTERVAL

    def sample(self) -> None:
        workers: dict[int, tuple[float, float]] = {}
        for proc in sampling.process_tree(self.pid):
            try:
                with proc.oneshot():
                    cmdline = proc.cmdline()
                    times = proc.cpu_times()
                    key = (proc.pid, proc.create_time())
            except psutil.Error:
                continue
            cpu = times.user + times.system
            if cmdline and cmdline[0].startswith(WORKER_TITLE):
                workers[proc.pid] = _schedstat(proc.pid) or (cpu, 0.0)
            self._cpu[key] = cpu
        if self.initial_workers is None:
            self.initial_workers = list(workers)
        t = round(time.monotonic() - self.t0, 3)
        self.timeline.append((t, len(workers)))
        self.worker_cpu.append((t, workers))


def _schedstat(pid: int) -> tuple[float, float] | None:
    """(run, run-queue wait) seconds of a process's main thread, where the event loop runs."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat", "rb") as f:
            run_ns, wait_ns = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    return int(run_ns) / 1e9, int(wait_ns) / 1e9


@dataclass
class RunRecord:
    config: str
    rep: int
    port: int
    started: str
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[tuple[float, int]] = field(default_factory=list)
    log_events: list[tuple[float, str]] = field(default_factory=list)
    initial_workers: list[int] = field(default_factory=list)  # pids of the workers the server started with
    # Per sample, pid (a JSON key, so a string) -> [run, wait] seconds of its main thread.
    worker_cpu: list[tuple[float, dict[str, tuple[float, float]]]] = field(default_factory=list)
    foreign_cpu: float = 0.0  # share of the machine's CPUs used by neither the server nor the benchmark
    server_cpu: float = 0.0  # CPU seconds of the server's tree during the load
    load_average: float = 0.0  # 1-minute load average when the run began
    killed: bool = False
    source: str = ""  # hash of forkserve/*.py when this run's server started
    error: str | None = None


@dataclass(frozen=True)
class Settings:
    phases: tuple[Phase, ...]
    phases_text: str
    clients: int
    trickle: float
    reconnect_every: int
    forkserve_python: str
    start_timeout: float
    stop_timeout: float
    logs_dir: Path


def run_once(config: Config, rep: int, settings: Settings) -> RunRecord:
    port = harness.free_port()
    record = RunRecord(
        config.name,
        rep,
        port,
        datetime.now(timezone.utc).strftime("%H:%M:%S"),
        load_average=os.getloadavg()[0],
    )
    log_path = settings.logs_dir / f"{rep:02d}-{config.name}.log"
    record.source = source_state()["sha256"]
    proc = harness.start_server(
        server_command(settings.forkserve_python, config, port), REPO_ROOT, server_env(), log_path
    )
    try:
        _measure(proc, config, record, settings, log_path)
    except (harness.ServerError, subprocess.SubprocessError, OSError, ValueError) as exc:
        record.error = f"{exc}\n{harness.tail(log_path)}"
    finally:
        harness.stop_into(record, proc, port, settings.stop_timeout)
    return record


def _measure(
    proc: subprocess.Popen[bytes], config: Config, record: RunRecord, settings: Settings, log_path: Path
) -> None:
    deadline = time.monotonic() + settings.start_timeout
    harness.wait_until_serving(proc, record.port, settings.start_timeout)
    # master + zygote + the starting workers
    harness.wait_for_workers(proc.pid, config.workers + 2, max(1.0, deadline - time.monotonic()))
    t0 = time.monotonic() + LEAD
    out = settings.logs_dir / f"{record.rep:02d}-{config.name}-requests.json"
    sampler = Sampler(proc.pid, log_path, t0)
    sampler.sample()  # the server's CPU so far (its start-up), to be left out
    cpu_before = sampler.server_cpu
    before = sampling.cpu_snapshot(proc.pid, ())
    sampler.start()
    command = [
        sys.executable, "-m", "benchmarks.autoscale", LOAD_GENERATOR_FLAG,
        "--port", str(record.port), "--t0", repr(t0), "--phases", settings.phases_text,
        "--clients", str(settings.clients), "--trickle", str(settings.trickle),
        "--reconnect-every", str(settings.reconnect_every), "--out", str(out),
    ]  # fmt: skip
    loadgen = subprocess.Popen(command, cwd=REPO_ROOT, start_new_session=True)
    try:
        total = sum(p.seconds for p in settings.phases)
        loadgen.wait(timeout=LEAD + total + REQUEST_TIMEOUT + 15)
    finally:
        harness.stop_server(loadgen, 5.0)
        time.sleep(SAMPLE_INTERVAL * 2)  # one more sample of the tree after the last request
        sampler.stop()
    # The load generator has been reaped, so its CPU time is in this process's RUSAGE_CHILDREN.
    after = sampling.cpu_snapshot(proc.pid, ())
    server_cpu = sampler.server_cpu - cpu_before
    record.server_cpu = server_cpu
    record.foreign_cpu = sampling.foreign_cpu_share(before, replace(after, server=after.server + server_cpu))
    record.timeline, record.log_events = sampler.timeline, sampler.log_events
    record.initial_workers = sampler.initial_workers or []
    record.worker_cpu = [(t, {str(pid): cpu for pid, cpu in cpus.items()}) for t, cpus in sampler.worker_cpu]
    if loadgen.returncode != 0:
        raise harness.ServerError(f"load generator exited with {loadgen.returncode}")
    record.outcomes = json.loads(out.read_text())


# --------------------------------------------------------------------------------------------------
# Figures of one run, computed from its record (so --render can recompute them from saved JSON).


_RETIRING = re.compile(r"retiring worker \d+ \(pid (\d+)\)")
_EXITED = re.compile(r"worker \d+ \(pid (\d+), generation \d+\) (exited.*)")
_SERVED = re.compile(r"scale-up served: worker (\d+) ready (\d+) ms after the decision")
_SCALE = re.compile(r"scale (up|down) (\d+)\u2192(\d+): (.*)")


@dataclass
class RunStats:
    ok: int
    failed: int
    failures: dict[str, int]
    burst_rps: float  # ok responses completed inside the bursts, per second of burst
    burst_rps_each: list[float]
    burst_p50: float | None
    burst_p99: float | None
    burst_p99_each: list[float | None]
    idle_p50: float | None
    idle_p99: float | None
    idle_requests: int
    max_workers: int
    worker_seconds: float  # integral of the worker count over the load: what the fleet cost
    cpu_use: list[float | None]  # per burst: median of the workers' mean CPU share over 1 s windows
    cpu_demand: list[float | None]  # the same, counting time waiting in the run queue as well
    added_share: list[float | None]  # per burst: share of its ok responses from workers added since start
    second_worker: list[float | None]  # per burst: seconds from its start to a 2nd worker's response
    first_up: list[float | None]  # per burst: seconds from its start to the first grow decided in it
    grew: list[bool]  # per burst: the fleet was above its starting size at some point during it
    back_to_start: list[float | None]  # per burst: seconds from its end to the starting worker count
    scale_events: list[tuple[float, str, str]]  # (time, "up 1→2: ...", phase it fell in)
    served_ms: list[int]
    drains: list[tuple[float, float | None]]  # per retirement: (when, seconds until the worker exited)
    ups_in_idle: int
    downs_in_burst: int
    first_failures: list[str]


def phase_of(t: float, windows: Sequence[tuple[int, Phase, float, float]]) -> str:
    for index, phase, start, end in windows:
        if start <= t < end:
            return f"{phase.kind} {index + 1}"
    return "before" if t < 0 else "after"


def run_stats(record: RunRecord, phases: Sequence[Phase], start_workers: int) -> RunStats:
    windows = phase_windows(phases)
    outcomes = [Outcome(**o) for o in record.outcomes]
    ok = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    bursts = [(i, s, e) for i, p, s, e in windows if p.kind == "burst"]
    burst_ids = {i for i, _, _ in bursts}

    def latencies(selected: list[Outcome]) -> list[float]:
        return [(o.done - o.sent) * 1000 for o in selected]

    burst_ok = [o for o in ok if o.phase in burst_ids]
    idle_ok = [o for o in ok if o.phase not in burst_ids]
    rps_each = [sum(1 for o in ok if s <= o.done < e) / (e - s) for _, s, e in bursts]
    burst_seconds = sum(e - s for _, s, e in bursts)
    busy = _busy_series(record.worker_cpu)
    events = []
    for t, text in record.log_events:
        match = _SCALE.search(text)
        if match:
            events.append((t, f"{match[1]} {match[2]}\u2192{match[3]}: {match[4]}", phase_of(t, windows)))
    return RunStats(
        ok=len(ok),
        failed=len(failed),
        failures=dict(Counter(o.error for o in failed)),
        burst_rps=sum(rps * (e - s) for rps, (_, s, e) in zip(rps_each, bursts, strict=True)) / burst_seconds
        if burst_seconds
        else 0.0,
        burst_rps_each=rps_each,
        burst_p50=percentile(latencies(burst_ok), 50),
        burst_p99=percentile(latencies(burst_ok), 99),
        burst_p99_each=[
            percentile(latencies([o for o in burst_ok if o.phase == i]), 99) for i, _, _ in bursts
        ],
        idle_p50=percentile(latencies(idle_ok), 50),
        idle_p99=percentile(latencies(idle_ok), 99),
        idle_requests=len(idle_ok),
        max_workers=max((n for _, n in record.timeline), default=0),
        worker_seconds=_worker_seconds(record.timeline, windows[-1][3] if windows else 0.0),
        cpu_use=[median([b for t, b, _ in busy if s + 1 <= t < e]) for _, s, e in bursts],
        cpu_demand=[median([d for t, _, d in busy if s + 1 <= t < e]) for _, s, e in bursts],
        added_share=[_added_share(ok, i, record.initial_workers) for i, _, _ in bursts],
        second_worker=[_second_worker(ok, i, s) for i, s, _ in bursts],
        first_up=[
            next((t - s for t, text, _ in events if text.startswith("up") and s <= t < e), None)
            for _, s, e in bursts
        ],
        grew=[any(s <= t < e + 1 and n > start_workers for t, n in record.timeline) for _, s, e in bursts],
        back_to_start=[_back_to(record.timeline, e, start_workers) for _, _, e in bursts],
        scale_events=events,
        served_ms=[int(m[2]) for _, text in record.log_events if (m := _SERVED.search(text))],
        drains=_drains(record.log_events),
        # A grow decided in an idle phase, or a shrink during a burst, is the autoscaler fighting the
        # load. The first second after a burst is left out: a sample taken then still saw the burst.
        ups_in_idle=sum(
            1
            for t, text, where in events
            if text.startswith("up")
            and where.startswith("idle")
            and not any(e <= t < e + 1 for _, _, e in bursts)
        ),
        downs_in_burst=sum(
            1 for _, text, where in events if text.startswith("down") and where.startswith("burst")
        ),
        first_failures=[
            f"{o.sent:.2f}s {phase_of(o.sent, windows)}: {o.error}"
            for o in sorted(failed, key=lambda o: o.sent)
        ][:5],
    )


def _drains(log_events: Sequence[tuple[float, str]]) -> list[tuple[float, float | None]]:
    retiring: dict[str, float] = {}
    drains: list[tuple[float, float | None]] = []
    for t, text in log_events:
        if match := _RETIRING.search(text):
            retiring[match[1]] = t
        elif (match := _EXITED.search(text)) and match[1] in retiring:
            start = retiring.pop(match[1])
            drains.append((start, t - start))
    # Still draining when the server was stopped.
    drains += [(start, None) for start in retiring.values()]
    return sorted(drains, key=lambda d: d[0])


def _busy_series(
    worker_cpu: Sequence[tuple[float, dict[str, tuple[float, float]]]],
) -> list[tuple[float, float, float]]:
    """(t, use, demand): the workers' mean share of a core over the second before t, and the same
    counting run-queue waits too.

    The autoscaler's busy signal seen from outside: each worker measures one of the two over its
    last second (which one depends on forkserve's version) and the policy averages them.
    """
    series = []
    j = 0
    for i, (t, cpus) in enumerate(worker_cpu):
        while j + 1 < i and worker_cpu[j + 1][0] <= t - 1.0:
            j += 1
        before_t, before = worker_cpu[j]
        if t - before_t < 0.9:
            continue
        pids = [pid for pid in cpus if pid in before]
        if pids:
            span = (t - before_t) * len(pids)
            use = sum(cpus[pid][0] - before[pid][0] for pid in pids) / span
            waited = sum(cpus[pid][1] - before[pid][1] for pid in pids) / span
            series.append((t, use, use + waited))
    return series


def _worker_seconds(timeline: Sequence[tuple[float, int]], end: float) -> float:
    inside = [(t, n) for t, n in timeline if 0 <= t <= end]
    return sum(n * (t2 - t1) for (t1, n), (t2, _) in itertools.pairwise(inside))


def _second_worker(ok: Sequence[Outcome], phase: int, start: float) -> float | None:
    seen: set[int] = set()
    for o in sorted((o for o in ok if o.phase == phase), key=lambda o: o.done):
        seen.add(o.pid)
        if len(seen) == 2:
            return o.done - start
    return None


def _added_share(ok: Sequence[Outcome], phase: int, initial: Sequence[int]) -> float | None:
    served = [o.pid for o in ok if o.phase == phase]
    return sum(1 for pid in served if pid not in initial) / len(served) if served else None


def _back_to(timeline: Sequence[tuple[float, int]], after: float, workers: int) -> float | None:
    for t, n in timeline:
        if t >= after and n <= workers:
            return t - after
    return None


# --------------------------------------------------------------------------------------------------
# The page and the plot.


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def _each(values: Sequence[float | None], fmt: str, missing: str) -> str:
    return " / ".join(missing if v is None else fmt.format(v) for v in values)


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def render_page(meta: dict[str, Any], records: list[RunRecord], notes: str) -> str:
    phases = parse_phases(meta["phases"])
    configs = [CONFIGS[name] for name in meta["configs"]]
    stats = {id(r): run_stats(r, phases, CONFIGS[r.config].workers) for r in records if r.error is None}
    by_config = {
        c.name: [stats[id(r)] for r in records if r.config == c.name and id(r) in stats] for c in configs
    }
    parts = [
        _page_header(meta, phases, configs),
        _page_results(meta, configs, records, by_config),
        _page_autoscaler(records, stats, phases),
        _page_raw(records, stats, meta["source"]["sha256"]),
        NOTES_MARKER + notes,
    ]
    return "\n".join(parts).rstrip("\n") + "\n"


def _page_header(meta: dict[str, Any], phases: Sequence[Phase], configs: Sequence[Config]) -> str:
    machine = meta["machine"]
    shape = " \u2192 ".join(f"{p.kind} {p.seconds:g} s" for p in phases)
    lines = [
        "# Benchmark: autoscaling under a stepped load",
        "",
        "<!-- Generated by `python -m benchmarks.autoscale` (benchmarks/autoscale.py); edit that, or the",
        "     notes at the end, not the generated sections. -->",
        "",
        "How `forkserve -w 1 --max-workers 4` (see [autoscaling](autoscaling.md)) compares with a fixed",
        "`-w 1` and a fixed `-w 4` when CPU-bound load comes and goes.",
        "",
        "Produced by:",
        "",
        "```",
        meta["command"],
        "```",
        "",
        "## Environment",
        "",
        f"- Date: {meta['date']}, {meta['minutes']:.1f} minutes for the whole run",
        f"- Machine: {machine['nproc']} CPUs usable ({machine['cpu_model']}), Linux {machine['kernel']}, "
        f"{machine['memory_gib']:.1f} GiB RAM; 1-minute load average {meta['load_before']:.2f} before the "
        "first run",
        _source_line(meta),
        f"- forkserve runs under `{meta['forkserve_python']}`; the runner, its sampler and the load "
        f"generator under `{meta['runner_python']}` (Python {meta['runner_version']})",
        "",
        "| package | version |",
        "| --- | --- |",
    ]
    lines += [f"| {name} | {version} |" for name, version in meta["versions"].items() if version is not None]
    lines += [
        "",
        "## Method",
        "",
        f"- **App**: `{APP}`, route `{CPU_PATH}`: a fixed amount of pure-Python work per request "
        "(about 20 ms of one core here; the median idle latency of `-w 1` below is its cost plus the "
        "round trip), holding the worker's event loop like a CPU-heavy view does.",
        f"- **Load**, one shape per run: {shape}. Bursts: {meta['clients']} concurrent keep-alive "
        "clients, each sending its next request as soon as the last is answered (closed loop). Idle: a "
        f"trickle of {meta['trickle']:g} requests/s on an open-loop schedule over keep-alive "
        "connections, so that latency is seen between bursts too."
        + (
            f" Burst clients open a new connection after every {meta['reconnect_every']} responses."
            if meta.get("reconnect_every")
            else " Each burst client opens its connection as the burst starts and keeps it to the end."
        ),
        "- **Load generator**: an asyncio raw-socket HTTP/1.1 client in a process of its own "
        "(`benchmarks/autoscale.py`, same machine). Every request counts once: no retries. A failure is "
        "any request without a complete `200` with the expected body within "
        f"{REQUEST_TIMEOUT:g} s, including a connection the server closed under it. A connection "
        "answered with `Connection: close`, or already closed by the server while it sat idle, is "
        "replaced by a new one before the next request, as an HTTP client library does.",
        "- **Servers**, started fresh for each run (`PORT` is a free port):",
        "",
    ]
    for c in configs:
        lines.append(f"  - {c.name}: `{meta['server_commands'][c.name]}`")
    lines += [
        "",
        f"  The autoscaled server gets `{AUTOSCALE_FLAGS}` so that the load's shape shows in a short run "
        "(defaults: 1 s, 5 s, 30 s); growth thresholds are the defaults (`--scale-up-busy 0.8`, "
        "`--scale-up-queue 8`).",
        f"- **Rounds**: {meta['rounds']} of each configuration, interleaved (order rotated each round); "
        "the table gives the median of the rounds' figures (of two rounds, their mean).",
        "- **Figures**: latency from writing a request to reading the whole response (a connect, when "
        "needed, included), attributed to the phase the request was sent in; burst throughput counts "
        "the ok responses completed inside the bursts. Worker count: this runner counts the server's "
        f"processes titled `{WORKER_TITLE} ...` every {SAMPLE_INTERVAL:g} s (a draining worker counts "
        "until it exits); worker-seconds integrate that count over the load. The server's log is read as "
        f"it is written (every {LOG_POLL:g} s) to time-stamp the autoscaler's decisions, since the log's "
        "own timestamps have one-second resolution. *2nd worker serving* is the time from a burst's "
        "start to the first response from a second distinct worker process in that burst.",
        "- **Noise**: the load generator, the runner and the server share 2 cores, and other sessions "
        "may be running tests on this machine meanwhile. *Other CPU* in the raw table is the share of "
        "the CPUs that neither the server nor the benchmark used during a run. Absolute figures move "
        "with it; the ratios between configurations within one run of this benchmark are what count.",
        "",
    ]
    return "\n".join(lines)


def _page_results(
    meta: dict[str, Any],
    configs: Sequence[Config],
    records: Sequence[RunRecord],
    by_config: dict[str, list[RunStats]],
) -> str:
    reference = median([s.burst_rps for s in by_config.get("fixed-4", [])])
    lines = [
        "## Results",
        "",
        f"Medians over the {meta['rounds']} round(s); requests ok and failed are totals over them.",
        "",
        "| server | runs ok | requests ok | failed | burst req/s | vs `-w 4` | burst p50 | burst p99 "
        "| idle p50 | idle p99 | max workers | worker-seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in configs:
        runs = [r for r in records if r.config == c.name]
        stats = by_config[c.name]
        if not stats:
            lines.append(f"| `{c.label}` | 0/{len(runs)} | failed | | | | | | | | | |")
            continue
        rps = median([s.burst_rps for s in stats])
        ratio = f"{rps / reference:.2f}x" if rps is not None and reference else "n/a"
        lines.append(
            f"| `{c.label}` | {len(stats)}/{len(runs)} | {sum(s.ok for s in stats):,} "
            f"| {sum(s.failed for s in stats)} | {rps:.1f} | {ratio} "
            f"| {_ms(median([s.burst_p50 for s in stats]))} | {_ms(median([s.burst_p99 for s in stats]))} "
            f"| {_ms(median([s.idle_p50 for s in stats]))} | {_ms(median([s.idle_p99 for s in stats]))} "
            f"| {max(s.max_workers for s in stats)} | {median([s.worker_seconds for s in stats]):.0f} |"
        )
    burst_count = len(next((s.burst_rps_each for v in by_config.values() for s in v), []))
    lines += [
        "",
        "Per burst: req/s and p99 are medians; the other columns give each round's figure. *Worker CPU "
        "use (demand)*: the workers' mean share of a core over 1-second windows, read by this runner "
        "from their main threads' `/proc/PID/task/PID/schedstat` (median over the burst, its first second "
        "left out); in brackets the same counting the time spent waiting in the run queue for a CPU. "
        "The autoscaler's busy signal, compared with `--scale-up-busy`, is each worker's own reading of "
        "one of the two (see [autoscaling](autoscaling.md) for which). *First "
        "grow*: from the burst's start to the autoscaler's first scale-up decision in it. *Served by "
        "added workers*: the share of the burst's ok responses that came from workers the server did not "
        "start with. *2nd worker serving*: from the burst's start to the first response by a second "
        "distinct worker.",
        "",
        "| server | burst | req/s | p99 | worker CPU use (demand) | first grow | served by added workers "
        "| 2nd worker serving |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in configs:
        stats = by_config[c.name]
        for i in range(burst_count if stats else 0):
            busy = " / ".join(
                "n/a" if u is None or d is None else f"{u:.0%} ({d:.0%})"
                for u, d in zip([s.cpu_use[i] for s in stats], [s.cpu_demand[i] for s in stats], strict=True)
            )
            first = _each([s.first_up[i] for s in stats], "{:.2f} s", "none")
            added = _each([s.added_share[i] for s in stats], "{:.0%}", "none")
            second = _each([s.second_worker[i] for s in stats], "{:.2f} s", "never")
            # Added workers only exist with autoscaling; a second worker never does with -w 1.
            first, added = (first, added) if c.name == "autoscaled" else ("n/a", "n/a")
            second = second if c.workers > 1 or c.name == "autoscaled" else "n/a"
            lines.append(
                f"| `{c.label}` | {i + 1} | {median([s.burst_rps_each[i] for s in stats]):.1f} "
                f"| {_ms(median([s.burst_p99_each[i] for s in stats]))} "
                f"| {busy} | {first} | {added} | {second} |"
            )
    lines += [
        "",
        f"![workers over time]({meta['image']})",
        "",
        "Worker processes over time for each configuration and round (left axis), ok responses per "
        "second (right axis, grey); bursts shaded.",
        "",
    ]
    return "\n".join(lines)


def _page_autoscaler(
    records: Sequence[RunRecord], stats: dict[int, RunStats], phases: Sequence[Phase]
) -> str:
    lines = [
        "## The autoscaler's decisions",
        "",
        "Every `scale up`/`scale down` line of the autoscaled runs, time-stamped by this runner when it "
        "appeared in the log (seconds since the load started), with the phase it fell in; "
        "decision-to-serving is the server's own `scale-up served: ... N ms after the decision` figure.",
        "",
    ]
    bursts = [(s, e) for _, p, s, e in phase_windows(phases) if p.kind == "burst"]
    for r in records:
        if r.config != "autoscaled" or id(r) not in stats:
            continue
        st = stats[id(r)]
        lines.append(f"**Round {r.rep}**")
        lines.append("")
        lines.append("| t | phase | decision |")
        lines.append("| ---: | --- | --- |")
        for t, text, where in st.scale_events:
            lines.append(f"| {t:.2f} s | {where} | {text} |")
        lines.append("")
        served = ", ".join(f"{ms} ms" for ms in st.served_ms) or "none logged"
        back = "; ".join(
            f"burst {i + 1} (ended at {e:g} s): {_s(b) if grew else 'had not grown'}"
            for i, ((_, e), b, grew) in enumerate(zip(bursts, st.back_to_start, st.grew, strict=True))
        )
        lines.append(f"- Decision to serving, every scale-up: {served}")
        drains = "; ".join(
            f"retired at {t:.1f} s, " + ("still there at stop" if d is None else f"exited {d:.1f} s later")
            for t, d in st.drains
        )
        lines.append(f"- Retired workers (scale-down drains): {drains or 'none'}")
        lines.append(
            "- 2nd worker serving after each burst started: "
            + "; ".join(f"burst {i + 1}: {_s(v)}" for i, v in enumerate(st.second_worker))
        )
        lines.append(f"- Back to the starting 1 worker after: {back}")
        lines.append(
            f"- Grows decided in an idle phase (after its first second): {st.ups_in_idle}; shrinks during a "
            f"burst: {st.downs_in_burst}"
        )
        lines.append("")
    return "\n".join(lines)


def _page_raw(records: Sequence[RunRecord], stats: dict[int, RunStats], meta_source: str) -> str:
    lines = [
        "## Raw",
        "",
        "Every run in the order it ran. Other CPU: the share of all CPUs that processes other than the "
        "server, the load generator and this runner used during the load. Load avg: the machine's "
        "1-minute load average as the run began.",
        "",
        "| round | server | start (UTC) | ok | failed | burst req/s (each) | burst p50 | burst p99 "
        "| idle p50 | idle p99 (n) | max workers | worker-s | server CPU s | other CPU | load avg | note |",
        "| ---: | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | --- |",
    ]
    for r in records:
        label = CONFIGS[r.config].label
        if id(r) not in stats:
            error = (r.error or "no result").replace("\n", " ").replace("|", "/")[:300]
            lines.append(f"| {r.rep} | `{label}` | {r.started} | | | | | | | | | | | | | failed: {error} |")
            continue
        s = stats[id(r)]
        each = " / ".join(f"{v:.1f}" for v in s.burst_rps_each)
        notes = []
        if s.failures:
            notes.append("failures: " + ", ".join(f"{n} {kind}" for kind, n in s.failures.items()))
            notes.append("first: " + "; ".join(s.first_failures))
        if r.killed:
            notes.append("SIGKILL needed")
        if r.source and r.source != meta_source:
            notes.append(f"forkserve code {r.source}, not {meta_source} as at the start")
        lines.append(
            f"| {r.rep} | `{label}` | {r.started} | {s.ok:,} | {s.failed} | {s.burst_rps:.1f} ({each}) "
            f"| {_ms(s.burst_p50)} | {_ms(s.burst_p99)} | {_ms(s.idle_p50)} | {_ms(s.idle_p99)} "
            f"({s.idle_requests}) | {s.max_workers} | {s.worker_seconds:.0f} | {r.server_cpu:.1f} "
            f"| {r.foreign_cpu:.0%} | {r.load_average:.2f} | {' '.join(notes).replace('|', '/')} |"
        )
    lines.append("")
    return "\n".join(lines)


def plot(meta: dict[str, Any], records: Sequence[RunRecord], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display here; and the default backend may want one
    import matplotlib.pyplot as plt

    phases = parse_phases(meta["phases"])
    windows = phase_windows(phases)
    end = windows[-1][3] if windows else 0.0
    configs = [CONFIGS[name] for name in meta["configs"]]
    fig, axes = plt.subplots(
        len(configs), 1, figsize=(10, 2.6 * len(configs) + 0.6), sharex=True, squeeze=False
    )
    styles = ["-", "--", ":", "-."]
    # One throughput scale for every row, so that the rows compare at a glance.
    top_rate = max(
        (n for r in records for n in Counter(int(o["done"]) for o in r.outcomes if o["ok"]).values()),
        default=1,
    )
    for ax, config in zip(axes[:, 0], configs, strict=True):
        rate_ax = ax.twinx()
        for _, phase, start, stop in windows:
            if phase.kind == "burst":
                ax.axvspan(start, stop, color="tab:orange", alpha=0.15, lw=0)
        runs = [r for r in records if r.config == config.name and r.error is None]
        for n, r in enumerate(runs):
            times = [t for t, _ in r.timeline if -0.5 <= t <= end + 1]
            counts = [w for t, w in r.timeline if -0.5 <= t <= end + 1]
            style = styles[n % len(styles)]
            ax.step(
                times, counts, where="post", ls=style, lw=2, color="tab:blue", label=f"workers, round {r.rep}"
            )
            per_second = Counter(int(o["done"]) for o in r.outcomes if o["ok"])
            seconds = list(range(int(end) + 1))
            rates = [per_second.get(s, 0) for s in seconds]
            rate_ax.plot([s + 0.5 for s in seconds], rates, ls=style, lw=1, color="grey", alpha=0.8)
            ax.plot([], [], ls=style, lw=1, color="grey", label=f"ok responses/s, round {r.rep}")
        ax.set_ylim(0, 5.9)  # headroom above 4 workers for the legend
        ax.set_yticks(range(5))
        ax.set_ylabel("worker processes")
        rate_ax.set_ylabel("ok responses/s", color="grey")
        rate_ax.tick_params(axis="y", colors="grey")
        rate_ax.set_ylim(0, top_rate * 5.9 / 4.6)  # the same headroom as the worker axis
        extra = f" {AUTOSCALE_FLAGS}" if config.name == "autoscaled" else ""
        ax.set_title(f"forkserve {config.label}{extra}", fontsize=10, loc="left")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper center", fontsize=8, ncol=4, frameon=False)
        ax.set_zorder(rate_ax.get_zorder() + 1)  # worker lines over the rate lines
        ax.patch.set_visible(False)
    axes[-1, 0].set_xlabel("seconds since the load started (bursts shaded)")
    axes[-1, 0].set_xlim(-0.5, end + 0.5)
    title = (
        f"Workers over time: {meta['rounds']} rounds, {meta['clients']} clients on {CPU_PATH} in bursts, "
        f"{meta['trickle']:g} req/s between"
    )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------
# Command line.


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.autoscale", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--output", default="docs/benchmarks-autoscale.md", help="markdown page to write")
    parser.add_argument(
        "--image", default=None, help="PNG to write (default: img/autoscale.png next to --output)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs of each configuration (default 2)")
    parser.add_argument("--phases", default=DEFAULT_PHASES, help=f"load shape (default {DEFAULT_PHASES})")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients in a burst (default 16)")
    parser.add_argument("--trickle", type=float, default=2.0, help="requests/s between bursts (default 2)")
    parser.add_argument(
        "--reconnect-every",
        type=int,
        default=0,
        help="a burst client opens a new connection after this many responses (default 0: never)",
    )
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"comma list, a subset of {','.join(CONFIGS)}"
    )
    parser.add_argument(
        "--forkserve-python",
        default=sys.executable,
        help="interpreter that has forkserve (default: the running one)",
    )
    parser.add_argument("--start-timeout", type=float, default=30.0, help="seconds a server has to start")
    parser.add_argument(
        "--stop-timeout", type=float, default=10.0, help="seconds before SIGTERM turns SIGKILL"
    )
    parser.add_argument(
        "--render",
        metavar="RESULTS_JSON",
        help="rewrite the page and plot from a saved run, without measuring",
    )
    args = parser.parse_args(argv)
    try:
        parse_phases(args.phases)
    except ValueError as exc:
        parser.error(str(exc))
    unknown = [n for n in args.configs.split(",") if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(unknown)}")
    return args


def source_state() -> dict[str, Any]:
    """Which forkserve code ran: the commit, the files changed on top of it, a hash of the package.

    Other people edit forkserve on this machine while benchmarks run; without this, a page could not
    say which version of the autoscaler its figures belong to.
    """

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False
        )
        return done.stdout.rstrip()  # not strip(): a porcelain line starts with a space

    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "forkserve").rglob("*.py")):
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    changed = [line[3:] for line in git("status", "--porcelain", "--", "forkserve").splitlines()]
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "changed": changed,
        "sha256": digest.hexdigest()[:12],
    }


def _source_line(meta: dict[str, Any]) -> str:
    before, after = meta["source"], meta.get("source_after") or meta["source"]
    changed = ", ".join(f"`{path}`" for path in before["changed"])
    line = f"- forkserve source: commit {before['commit']}" + (
        f" plus uncommitted changes to {changed}" if changed else ""
    )
    line += f" (hash of `forkserve/*.py`: {before['sha256']}"
    if after["sha256"] == before["sha256"]:
        return line + ", unchanged during the run)"
    return line + f"; **changed during the run**, to {after['sha256']}: later runs may use other code)"


def build_meta(args: argparse.Namespace, argv: Sequence[str], output: Path, image: Path) -> dict[str, Any]:
    configs = args.configs.split(",")
    versions = package_versions(
        args.forkserve_python, ["forkserve", "uvicorn", "uvloop", "httptools", "psutil"]
    )
    try:
        versions["matplotlib (plot)"] = importlib.metadata.version("matplotlib")
    except importlib.metadata.PackageNotFoundError:
        versions["matplotlib (plot)"] = None
    return {
        "command": f"{shlex.quote(sys.executable)} -m benchmarks.autoscale {shlex.join(argv)}".strip(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "load_before": os.getloadavg()[0],
        "versions": versions,
        "forkserve_python": args.forkserve_python,
        "runner_python": sys.executable,
        "runner_version": ".".join(map(str, sys.version_info[:3])),
        "phases": args.phases,
        "clients": args.clients,
        "trickle": args.trickle,
        "reconnect_every": args.reconnect_every,
        "rounds": args.rounds,
        "configs": configs,
        "server_commands": {
            name: shlex.join(server_command(args.forkserve_python, CONFIGS[name], 0)).replace(
                f"{HOST}:0", f"{HOST}:PORT"
            )
            for name in configs
        },
        "image": os.path.relpath(image, output.parent),
        "minutes": 0.0,
        "source": source_state(),
        "source_after": None,
    }


def write_outputs(meta: dict[str, Any], records: list[RunRecord], output: Path, image: Path) -> None:
    plot(meta, records, image)
    rewrite_page(output, lambda notes: render_page(meta, records, notes))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _progress(record: RunRecord, phases: Sequence[Phase], rounds: int) -> None:
    if record.error is not None:
        line = f"FAILED: {record.error}"
    else:
        s = run_stats(record, phases, CONFIGS[record.config].workers)
        line = (
            f"ok {s.ok:5} failed {s.failed:3}  burst {s.burst_rps:6.1f} req/s p99 {_ms(s.burst_p99):>8}  "
            f"idle p99 {_ms(s.idle_p99):>8}  max workers {s.max_workers}  served {s.served_ms}  "
            f"other CPU {record.foreign_cpu:4.0%}"
        )
    print(f"[round {record.rep}/{rounds}] {record.config:10} {line}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [LOAD_GENERATOR_FLAG]:
        return load_generator_main(argv[1:])
    args = parse_args(argv)
    output = Path(args.output)
    image = Path(args.image) if args.image else output.parent / "img" / "autoscale.png"
    if args.render:
        payload = json.loads(Path(args.render).read_text())
        write_outputs(payload["meta"], [RunRecord(**r) for r in payload["runs"]], output, image)
        return 0
    # SIGTERM, and SIGINT even when started in the background with it ignored, unwind through the
    # finally blocks that stop the server and the load generator.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    logs_dir = RESULTS_DIR / f"autoscale-{stamp}"
    logs_dir.mkdir(parents=True, exist_ok=True)
    phases = parse_phases(args.phases)
    settings = Settings(
        phases, args.phases, args.clients, args.trickle, args.reconnect_every, args.forkserve_python,
        args.start_timeout, args.stop_timeout, logs_dir,
    )  # fmt: skip
    meta = build_meta(args, argv, output, image)
    configs = [CONFIGS[name] for name in meta["configs"]]
    records: list[RunRecord] = []
    began = time.monotonic()
    raw_path = RESULTS_DIR / f"autoscale-{stamp}.json"
    try:
        for rep in range(1, args.rounds + 1):
            for config in harness.rotated(configs, rep):
                # Not a gate (that could cost the time budget): a note of how busy the machine was.
                sampling.wait_for_quiet(0.10, 3.0)
                record = run_once(config, rep, settings)
                records.append(record)
                _progress(record, phases, args.rounds)
    except KeyboardInterrupt:
        raw_path = RESULTS_DIR / f"autoscale-{stamp}-interrupted.json"
        raw_path.write_text(json.dumps({"meta": meta, "runs": [asdict(r) for r in records]}))
        print(f"interrupted; {len(records)} runs saved to {raw_path}", file=sys.stderr)
        return 130
    meta["minutes"] = (time.monotonic() - began) / 60
    meta["source_after"] = source_state()
    raw_path.write_text(json.dumps({"meta": meta, "runs": [asdict(r) for r in records]}))
    write_outputs(meta, records, output, image)
    print(f"wrote {output}, {image} and {raw_path.relative_to(REPO_ROOT)}", file=sys.stderr)
    return 0 if all(r.error is None for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
