"""Reload under load: send each server 4 reload signals while clients hammer it, count what breaks.

The issue's scenario: 2 workers; 16 keep-alive clients and 4 clients that open a new connection per
request, for 14 s; SIGHUP to the master at t = 2, 4.5, 7 and 9.5 s. Every request is counted, with no
retries; latency during the reloads is compared with a separate run of the same load and no signal.
Run from the repository root:

    python -m benchmarks.reload --rounds 3 --output docs/benchmarks-reload.md \
        --python peers/bin/python --forkserve-python forkserve-venv/bin/python

See benchmarks/README.md for how to read the page it writes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import resource
import shlex
import signal
import subprocess
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from benchmarks import harness, sampling, stats
from benchmarks.apps import BODY
from benchmarks.client import WATCHDOG_INTERVAL, Budget, LoadPlan, Outcome, run_load
from benchmarks.harness import HOST
from benchmarks.report import NOTES_MARKER, rewrite_page
from benchmarks.run import (
    REPO_ROOT,
    RESULTS_DIR,
    SERVERS,
    SUPPORT_PACKAGES,
    ServerSpec,
    machine_info,
    package_versions,
    server_env,
)

DEFAULT_SERVERS = ("forkserve", "gunicorn-uvicorn", "gunicorn-asgi", "uvicorn", "granian")
STEADY, RELOAD = "steady", "reload"


@dataclass(frozen=True)
class Scenario:
    """The issue's scenario; fixed, so that every page measures the same thing."""

    workers: int = 2
    duration: float = 14.0
    keep_alive_clients: int = 16
    fresh_clients: int = 4
    signals: int = 4
    first_signal: float = 2.0
    signal_interval: float = 2.5
    request_timeout: float = 5.0

    @property
    def signal_times(self) -> list[float]:
        return [self.first_signal + i * self.signal_interval for i in range(self.signals)]

    @property
    def window(self) -> tuple[float, float]:
        # The steady run is measured over the same seconds, so both skip the same warm-up.
        return self.first_signal, self.duration


SCENARIO = Scenario()
SAMPLE_INTERVAL = 0.25  # how often the process tree is read; every worker lives for seconds at least
SETTLE_STABLE = 2.0  # a reload is over when the worker set has not changed for this long...
SETTLE_TIMEOUT = 30.0  # ...and we stop waiting for that after this long past the load
P99_TARGET = 2.0  # forkserve's goal: p99 during reloads at most twice the steady p99

# Processes in a server's tree that serve no request: forkserve's zygotes (one per generation)
# and the resource tracker that multiprocessing's spawn start method gives uvicorn.
HELPER_MARKERS = ("zygote", "resource_tracker")

# Why each server is sent SIGHUP, from its installed source; printed in the page.
RELOAD_MECHANISMS = {
    "forkserve": (
        "SIGHUP to the master (docs/reload.md): a new zygote imports the app in a fresh interpreter, "
        "each new worker must serve before the old worker of the same number drains; a HUP that "
        "arrives mid-reload restarts the plan toward the newest generation."
    ),
    "gunicorn-uvicorn": (
        "SIGHUP to the master: `Arbiter.reload()` spawns `workers` new workers, then "
        "`manage_workers()` sends SIGTERM to the oldest ones straight away, without waiting for the "
        "new ones to have loaded the app."
    ),
    "gunicorn-asgi": "Same arbiter as above (`Arbiter.reload()`), with gunicorn's own asgi worker.",
    "uvicorn": (
        "SIGHUP to the parent: `Multiprocess.handle_hup()` calls `restart_all()` (uvicorn 0.54, "
        "`uvicorn/supervisors/multiprocess.py`), which replaces workers one at a time, each new "
        "(spawned) worker answering the readiness ping before the old one gets SIGTERM. Signals are "
        "queued: every HUP is a full restart of its own, run after the previous one."
    ),
    "granian": (
        "SIGHUP to the main process: `AbstractServer._reload()` (granian 2.8.7, "
        "`granian/server/common.py`) respawns workers one at a time: start the new one, sleep "
        "`--respawn-interval` (3.5 s by default), SIGTERM the old one. The HUP handler only sets a "
        "flag, so HUPs that arrive during a reload merge into one more reload. (`--reload` is a "
        "file watcher for development, not a signal.)"
    ),
}


# --------------------------------------------------------------------------------------------
# Load generator: runs in a process of its own, so it has its own share of the cores and the
# runner's sampling and signalling cannot stall a client.
# --------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    t0: float  # time.monotonic() when the clients started; CLOCK_MONOTONIC is machine-wide
    ok_start: array[float] = field(default_factory=lambda: array("d"))  # seconds after t0
    ok_latency: array[float] = field(default_factory=lambda: array("d"))  # seconds
    failures: list[tuple[float, str, str]] = field(default_factory=list)  # (start, kind, client)
    closed_by_header: int = 0  # keep-alive connections the server ended with Connection: close
    closed_idle: int = 0  # keep-alive connections found closed (EOF) before reuse
    cpu_seconds: float = 0.0  # the load generator's own CPU time


def _generate_record(result: LoadResult) -> Callable[[Outcome], None]:
    def record(outcome: Outcome) -> None:
        if outcome.ok:
            result.ok_start.append(outcome.start - result.t0)
            result.ok_latency.append(outcome.latency)
        else:
            client = "keep-alive" if outcome.keep_alive else "new-connection"
            result.failures.append((outcome.start - result.t0, outcome.label, client))

    return record


async def _generate(port: int, scenario: Scenario, result: LoadResult) -> None:
    plan = LoadPlan(
        port=port,
        keep_alive=scenario.keep_alive_clients,
        fresh=scenario.fresh_clients,
        duration=scenario.duration,
        timeout=scenario.request_timeout,
    )
    budget = Budget(result.t0 + scenario.duration)
    totals = await run_load(plan, _generate_record(result), budget, body_ok=BODY.__eq__)
    result.closed_by_header = totals.closed_by_header
    result.closed_idle = totals.closed_idle


def _event_loop_name() -> str:
    try:
        import uvloop  # noqa: F401  (only asking whether it is there)
    except ImportError:
        return "asyncio"
    return "uvloop"


def load_process_main(port: int, scenario: Scenario, conn: multiprocessing.connection.Connection) -> None:
    """Entry point of the load generator process: report t0, run, send the result back."""
    if _event_loop_name() == "uvloop":
        import uvloop

        # Less CPU per request for the client leaves more of the shared cores to the server.
        uvloop.install()
    result = LoadResult(t0=time.monotonic())
    conn.send(result.t0)
    with contextlib.suppress(TimeoutError):
        asyncio.run(_generate(port, scenario, result))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu_seconds = usage.ru_utime + usage.ru_stime
    conn.send(result)
    conn.close()


class LoadError(RuntimeError):
    """The load generator did not start or did not report in time."""


@contextlib.contextmanager
def load_process(
    port: int, scenario: Scenario
) -> Iterator[tuple[float, multiprocessing.connection.Connection]]:
    """Start the load generator; yield its t0 and the pipe its result arrives on; always reap it."""
    # spawn, not fork: a clean interpreter that inherits nothing of the runner.
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe(duplex=False)
    process = context.Process(target=load_process_main, args=(port, scenario, theirs), daemon=True)
    process.start()
    theirs.close()
    try:
        try:
            if not ours.poll(15):
                raise LoadError("load generator did not start within 15 s")
            t0: float = ours.recv()
        except EOFError:
            raise LoadError("load generator died before starting (its traceback is above)") from None
        yield t0, ours
    finally:
        process.join(scenario.duration + scenario.request_timeout + 10)
        if process.is_alive():
            process.kill()
            process.join(5)
        ours.close()


def receive_result(conn: multiprocessing.connection.Connection, t0: float, scenario: Scenario) -> LoadResult:
    remaining = t0 + scenario.duration + scenario.request_timeout + 5 - time.monotonic()
    try:
        if not conn.poll(max(0.0, remaining)):
            raise LoadError("load generator did not report within its deadline")
        result: LoadResult = conn.recv()
    except EOFError:
        raise LoadError("load generator died without a result (its traceback is above)") from None
    return result


# --------------------------------------------------------------------------------------------
# Watching the server: its workers, and the CPU it and everything else used.
# --------------------------------------------------------------------------------------------


def worker_pids(master: int) -> set[int]:
    workers = set()
    for proc in sampling.process_tree(master)[1:]:
        try:
            title = " ".join(proc.cmdline())
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if not any(marker in title for marker in HELPER_MARKERS):
            workers.add(proc.pid)
    return workers


@dataclass
class WorkerWatch:
    """Every worker pid seen in the server's tree, sampled; so a reload that replaced nobody shows."""

    master: int
    initial: set[int] = field(default_factory=set)
    seen: set[int] = field(default_factory=set)
    last_change: float = 0.0
    current: set[int] = field(default_factory=set)

    def sample(self) -> set[int]:
        pids = worker_pids(self.master)
        if pids != self.current:
            self.current, self.last_change = pids, time.monotonic()
        self.seen |= pids
        return pids

    def start(self) -> None:
        self.initial = self.sample()

    def wait_settled(self, workers: int, stable: float, timeout: float) -> float | None:
        """Wait until the tree has ``workers`` workers, unchanged for ``stable`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sample()
            if len(self.current) == workers and time.monotonic() - self.last_change >= stable:
                return self.last_change
            time.sleep(SAMPLE_INTERVAL)
        return None


def wait_for_worker_count(watch: WorkerWatch, workers: int, timeout: float) -> None:
    # A server answers once its first worker is up; the load must meet all of them.
    if watch.wait_settled(workers, 0.5, timeout) is None:
        raise harness.ServerError(f"never had {workers} stable workers, last {sorted(watch.current)}")


# --------------------------------------------------------------------------------------------
# One run: start a fresh server, load it (and signal it), stop it.
# --------------------------------------------------------------------------------------------


@dataclass
class RunRecord:
    server: str
    round: int
    mode: str  # STEADY or RELOAD
    port: int
    ok: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    failed_clients: dict[str, int] = field(default_factory=dict)  # keep-alive / new-connection
    failure_times: list[float] = field(default_factory=list)
    p50_ms: float | None = None  # over requests started inside Scenario.window
    p99_ms: float | None = None
    max_ms: float | None = None
    requests_per_sec: float = 0.0
    closed_by_header: int = 0
    closed_idle: int = 0
    signals_at: list[float] = field(default_factory=list)  # seconds after t0, as sent
    workers_before: list[int] = field(default_factory=list)
    workers_after: list[int] = field(default_factory=list)
    new_workers_seen: int = 0
    settled_at: float | None = None  # seconds after t0 when the worker set last changed
    replaced: bool = False
    client_cpu: float = 0.0  # load generator CPU seconds per second of load (1.0 = a whole core)
    foreign_cpu: float = 0.0
    error: str | None = None

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


def fill_from_load(record: RunRecord, result: LoadResult, scenario: Scenario) -> None:
    lo, hi = scenario.window
    window = [lat for start, lat in zip(result.ok_start, result.ok_latency, strict=True) if lo <= start < hi]
    record.p50_ms, record.p99_ms, record.max_ms = stats.latency(window)
    record.ok = len(result.ok_start)
    record.failures = dict(Counter(kind for _, kind, _ in result.failures))
    record.failed_clients = dict(Counter(client for _, _, client in result.failures))
    record.failure_times = sorted(round(start, 3) for start, _, _ in result.failures)
    record.requests_per_sec = record.ok / scenario.duration
    record.closed_by_header = result.closed_by_header
    record.closed_idle = result.closed_idle
    record.client_cpu = result.cpu_seconds / scenario.duration


@dataclass(frozen=True)
class Settings:
    python: str
    forkserve_python: str
    logs_dir: Path
    start_timeout: float = 30.0
    stop_timeout: float = 10.0
    cooldown: float = 0.5


def interpreter_for(spec: ServerSpec, settings: Settings) -> str:
    return settings.forkserve_python if spec.forkserve_python else settings.python


def run_once(spec: ServerSpec, mode: str, round_no: int, settings: Settings, scenario: Scenario) -> RunRecord:
    port = harness.free_port()
    record = RunRecord(server=spec.name, round=round_no, mode=mode, port=port)
    command = spec.build(interpreter_for(spec, settings), port, scenario.workers)
    log_path = settings.logs_dir / f"{round_no:02d}-{spec.name}-{mode}.log"
    proc = harness.start_server(command, REPO_ROOT, server_env(), log_path)
    try:
        harness.wait_until_serving(proc, port, settings.start_timeout)
        watch = WorkerWatch(proc.pid)
        wait_for_worker_count(watch, scenario.workers, settings.start_timeout)
        _load_and_signal(proc, port, record, watch, scenario)
        if proc.poll() is not None:
            raise harness.ServerError(f"master exited with status {proc.returncode} during the run")
    except (harness.ServerError, LoadError, OSError, subprocess.SubprocessError) as exc:
        record.error = f"{exc}\n{harness.tail(log_path)}"
    finally:
        _stop(proc, port, record, settings)
    return record


def _load_and_signal(
    proc: subprocess.Popen[bytes], port: int, record: RunRecord, watch: WorkerWatch, scenario: Scenario
) -> None:
    before = sampling.cpu_snapshot(proc.pid)
    watch.start()
    record.workers_before = sorted(watch.initial)
    with load_process(port, scenario) as (t0, conn):
        times = scenario.signal_times if record.mode == RELOAD else []
        record.signals_at = _signal_while_watching(proc.pid, t0, times, watch, scenario.duration)
        result = receive_result(conn, t0, scenario)
    after = sampling.cpu_snapshot(proc.pid)
    fill_from_load(record, result, scenario)
    record.foreign_cpu = sampling.foreign_cpu_share(before, after)
    if record.mode == RELOAD:
        settled = watch.wait_settled(scenario.workers, SETTLE_STABLE, SETTLE_TIMEOUT)
        record.settled_at = None if settled is None else round(settled - t0, 2)
    watch.sample()
    record.workers_after = sorted(watch.current)
    record.new_workers_seen = len(watch.seen - watch.initial)
    # Replaced means: the full count of workers, none of them from before. A reload that left an
    # old worker serving, or lost one, does not count.
    record.replaced = len(watch.current) == scenario.workers and not watch.current & watch.initial


def _signal_while_watching(
    master: int, t0: float, times: list[float], watch: WorkerWatch, duration: float
) -> list[float]:
    sent = []
    pending = list(times)
    while (now := time.monotonic()) < t0 + duration:
        if pending and now >= t0 + pending[0]:
            os.kill(master, signal.SIGHUP)
            sent.append(round(time.monotonic() - t0, 3))
            pending.pop(0)
        watch.sample()
        next_signal = t0 + pending[0] if pending else math.inf
        time.sleep(max(0.0, min(SAMPLE_INTERVAL, next_signal - time.monotonic())))
    return sent


def _stop(proc: subprocess.Popen[bytes], port: int, record: RunRecord, settings: Settings) -> None:
    _stopped, problems = harness.stop_and_check(proc, port, settings.stop_timeout)
    if problems:
        record.error = "; ".join(filter(None, [record.error, problems]))


def run_benchmark(
    specs: list[ServerSpec], rounds: int, settings: Settings, scenario: Scenario, records: list[RunRecord]
) -> None:
    """Each round runs every server's steady and reload run, servers rotated by one per round and
    the two modes swapped every round, so neither a server nor a mode always meets the same drift."""
    for round_no in range(1, rounds + 1):
        modes = (STEADY, RELOAD) if round_no % 2 else (RELOAD, STEADY)
        for spec in harness.rotated(specs, round_no):
            for mode in modes:
                record = run_once(spec, mode, round_no, settings, scenario)
                records.append(record)
                _progress(record, rounds)
                time.sleep(settings.cooldown)


def _progress(record: RunRecord, rounds: int) -> None:
    if record.error:
        line = f"ERROR: {record.error.splitlines()[0]}"
    else:
        line = (
            f"ok {record.ok:6}  failed {record.failed:4} {record.failures or ''}  "
            f"p50 {_ms(record.p50_ms)}  p99 {_ms(record.p99_ms)}  "
            f"new workers {record.new_workers_seen}  replaced {'yes' if record.replaced else 'no'}  "
            f"client CPU {record.client_cpu:.0%}  other CPU {record.foreign_cpu:.0%}"
        )
    print(
        f"[round {record.round}/{rounds}] {record.server:17} {record.mode:6} {line}",
        file=sys.stderr,
        flush=True,
    )


# --------------------------------------------------------------------------------------------
# Summary and page.
# --------------------------------------------------------------------------------------------


@dataclass
class Summary:
    server: str
    rounds: int  # rounds with both runs complete
    ok: float | None  # median ok requests of a reload run
    failed: int  # every failed request of every reload run
    failed_by_kind: dict[str, int]
    steady_failed: int
    steady_p50: float | None
    steady_p99: float | None
    reload_p50: float | None
    reload_p99: float | None
    ratio: float | None  # median over rounds of reload p99 / steady p99 of the same round
    replaced_rounds: int
    new_workers: float | None  # median workers started during a reload run
    settled_at: float | None

    @property
    def passed(self) -> bool:
        return (
            self.rounds > 0
            and self.failed == 0
            and self.replaced_rounds == self.rounds
            and self.ratio is not None
            and self.ratio <= P99_TARGET
        )


def summarize(records: list[RunRecord], servers: list[str]) -> list[Summary]:
    return [_summarize_server(server, [r for r in records if r.server == server]) for server in servers]


def _summarize_server(server: str, runs: list[RunRecord]) -> Summary:
    steady = {r.round: r for r in runs if r.mode == STEADY and not r.error}
    reload = {r.round: r for r in runs if r.mode == RELOAD and not r.error}
    paired = sorted(set(steady) & set(reload))
    kinds: Counter[str] = Counter()
    for r in reload.values():
        kinds.update(r.failures)
    # Paired within a round: both runs of a round met about the same machine.
    ratios = [stats.ratio(reload[n].p99_ms, steady[n].p99_ms) for n in paired]
    return Summary(
        server=server,
        rounds=len(paired),
        ok=stats.median([float(r.ok) for r in reload.values()]),
        failed=sum(kinds.values()),
        failed_by_kind=dict(kinds),
        steady_failed=sum(r.failed for r in steady.values()),
        steady_p50=stats.median([r.p50_ms for r in steady.values()]),
        steady_p99=stats.median([r.p99_ms for r in steady.values()]),
        reload_p50=stats.median([r.p50_ms for r in reload.values()]),
        reload_p99=stats.median([r.p99_ms for r in reload.values()]),
        ratio=stats.median(ratios),
        replaced_rounds=sum(r.replaced for r in reload.values()),
        new_workers=stats.median([float(r.new_workers_seen) for r in reload.values()]),
        settled_at=stats.median([r.settled_at for r in reload.values()]),
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _kinds(failures: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(failures.items(), key=lambda kv: -kv[1])) or "-"


def render_page(meta: dict[str, Any], records: list[RunRecord], notes: str) -> str:
    summaries = summarize(records, list(meta["servers"]))
    sections = [
        _header(meta),
        _environment(meta, records),
        _method(meta),
        _results(summaries, meta),
        _mechanisms(meta),
        _raw(records),
        NOTES_MARKER + notes,
    ]
    return "\n".join(sections)


def _header(meta: dict[str, Any]) -> str:
    return f"""# Reload under load

<!-- Generated by `python -m benchmarks.reload` (see benchmarks/README.md); edit benchmarks/reload.py,
     or the notes at the end, not the generated sections. -->

Each server runs `benchmarks.apps:app` with {meta["scenario"]["workers"]} workers and is sent
{meta["scenario"]["signals"]} reload signals while under load; a separate run with the same load and
no signal gives the steady state to compare with. Produced by:

```
{meta["command"]}
```
"""


def _environment(meta: dict[str, Any], records: list[RunRecord]) -> str:
    machine = meta["machine"]
    busiest = max((r.client_cpu for r in records if not r.error), default=0.0)
    rows = [
        f"| {package} | {version or 'not installed'} | `{python}` |"
        for python, versions in meta["versions"].items()
        for package, version in versions.items()
        if version is not None  # a support package that this interpreter's server does not use
    ]
    table = "\n".join(["| package | version | interpreter |", "| --- | --- | --- |", *rows])
    return f"""## Environment

- Date: {meta["date"]}
- Machine: {machine["nproc"]} CPUs usable ({machine["cpu_model"]}), Linux {machine["kernel"]}, \
{machine["memory_gib"]:.1f} GiB RAM
- forkserve source: {meta["forkserve_source"]}
- Load generator: `benchmarks/reload.py` itself: a hand-written HTTP/1.1 client (no HTTP library)
  on asyncio protocols over {meta["event_loop"]}, in a process of its own on the same machine. It used
  at most {busiest:.0%} of a core in any run ("client CPU" in the raw figures), so it was waiting
  for the servers, not the other way round.

{table}
"""


def _method(meta: dict[str, Any]) -> str:
    s = meta["scenario"]
    signals = ", ".join(f"{t:g}" for t in Scenario(**s).signal_times)
    lo, hi = Scenario(**s).window
    return f"""## Method

- **Load**: {s["keep_alive_clients"]} keep-alive clients (one connection each, reused until the
  server closes it) and {s["fresh_clients"]} new-connection clients (a new connection and
  `Connection: close` for every request), each sending its next `GET /` as soon as the previous
  response is complete, for {s["duration"]:g} s. No request is retried.
- **Reload run**: SIGHUP to the master at t = {signals} s. **Steady run**: the same load on a
  freshly started server, no signal.
- **Failure** (counted per request, in the words every benchmark uses, `benchmarks/failures.py`):
  `reset` (connection reset, or broken pipe while sending), `refused`, `no response` (the server
  closed the connection after the request was sent, without a byte of response: http.client's
  `RemoteDisconnected`; a keep-alive connection closed by the server just as the next request went
  out ends this way), `short read` (EOF in the middle of a response), `bad status NNN` (any status
  but 200), `bad body`, `bad response`, `timeout` (no complete response {s["request_timeout"]:g} s
  after the request started; checked every {WATCHDOG_INTERVAL:g} s), `connect timeout`.
- **Not a failure**: a keep-alive connection that the server ends cleanly: `Connection: close`
  on a complete response, or EOF after a complete response that the client sees before it sends
  the next request (a zero-timeout poll of the socket right before reuse, the check urllib3 and
  httpcore make). The client reconnects, as every HTTP client does. An EOF that arrives after
  that check loses the race with the next request, which is then counted as failed
  (`no response`), as it would be for any client that does not retry: a server avoids it by
  announcing the close with `Connection: close`.
- **Latency**: from the start of a request (connect included for new-connection clients) to its
  complete response, successful requests only, for requests started between t = {lo:g} s and
  {hi:g} s: the reload window from the first signal to the end of the load, and the same seconds
  of the steady run. Nearest-rank p50 and p99.
- **Workers replaced**: the server's worker pids (its process tree, read with psutil every
  {SAMPLE_INTERVAL:g} s, without helpers: forkserve's zygotes, multiprocessing's resource tracker)
  before the first signal and after the reloads have settled (the worker set back to
  {s["workers"]} and unchanged for {SETTLE_STABLE:g} s, waited for at most {SETTLE_TIMEOUT:g} s
  after the load). "yes" only if none of the old workers is left and the count is whole.
- **Order**: {meta["rounds"]} rounds; each round starts every server fresh for a steady and a
  reload run, servers rotated by one per round and the two runs swapped every round. Tables show
  medians over rounds, failures summed over all rounds.
- **Noise**: the load generator, the servers and at times other engineers' test suites share
  {meta["machine"]["nproc"]} cores, so absolute latencies are noisy; the interleaving and the
  medians are how the page copes. "other CPU" in the raw figures is the share of the machine used
  by neither the server, the load generator nor the runner during the run.
"""


def _results(summaries: list[Summary], meta: dict[str, Any]) -> str:
    header = (
        "| server | ok (reload run) | failed (all rounds) | failed by kind | steady p50 / p99 ms "
        "| reloads p50 / p99 ms | p99 ratio | workers replaced | new workers seen | verdict |"
    )
    rows = [header, "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: | --- |"]
    for s in summaries:
        ratio = "-" if s.ratio is None else f"{s.ratio:.2f}x"
        every_round = s.rounds > 0 and s.replaced_rounds == s.rounds
        replaced = f"{'yes' if every_round else 'no'} ({s.replaced_rounds}/{s.rounds})"
        verdict = "pass" if s.passed else "fail"
        steady_failed = f" (+{s.steady_failed} in steady runs)" if s.steady_failed else ""
        rows.append(
            f"| {s.server} | {_count(s.ok)} | {s.failed}{steady_failed} | {_kinds(s.failed_by_kind)} "
            f"| {_ms(s.steady_p50)} / {_ms(s.steady_p99)} | {_ms(s.reload_p50)} / {_ms(s.reload_p99)} "
            f"| {ratio} | {replaced} | {_count(s.new_workers)} | {verdict} |"
        )
    expected = meta["scenario"]["signals"] * meta["scenario"]["workers"]
    return f"""## Results

{chr(10).join(rows)}

"pass" = no failed request in any reload run, workers replaced in every round, and p99 during the
reloads at most {P99_TARGET:g}x the steady p99 (forkserve's target). "new workers seen" counts
worker pids that appeared during a reload run (median): {expected} if each of the
{meta["scenario"]["signals"]} signals replaced both workers; fewer means signals were merged or
still being worked through when the run ended.
"""


def _mechanisms(meta: dict[str, Any]) -> str:
    lines = ["## Servers and their reload signal", ""]
    for name, info in meta["servers"].items():
        lines.append(f"- **{name}**: `{info['command']}`  ")
        lines.append(f"  {info['reload']}")
    return "\n".join(lines) + "\n"


def _raw(records: list[RunRecord]) -> str:
    rows = [
        "| round | server | run | ok | failed | p50 ms | p99 ms | max ms | KA closed by server "
        "(header / idle) | signals at s | new workers | settled at s | replaced | client CPU "
        "| other CPU | failures at s |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- "
        "| ---: | ---: | --- |",
    ]
    for r in sorted(records, key=lambda r: (r.round, r.server, r.mode)):
        rows.append(_raw_row(r))
    errors = [f"- round {r.round} {r.server} {r.mode}: `{_first_line(r.error)}`" for r in records if r.error]
    tail = "\n\nRuns that failed:\n\n" + "\n".join(errors) if errors else ""
    return f"""## Raw figures

Every run; "failures at" clusters failures by start time (seconds after the load began, count).
Server logs and the JSON of every run are in `benchmarks/results/` (git-ignored).

{chr(10).join(rows)}{tail}
"""


def _raw_row(r: RunRecord) -> str:
    if r.error:
        return f"| {r.round} | {r.server} | {r.mode} | error |" + " |" * 12
    signals = ", ".join(f"{t:.1f}" for t in r.signals_at) or "-"
    settled = "-" if r.settled_at is None else f"{r.settled_at:.1f}"
    replaced = "yes" if r.replaced else "no"
    failed = f"{r.failed} ({_kinds(r.failures)}; {_kinds(r.failed_clients)})" if r.failed else "0"
    return (
        f"| {r.round} | {r.server} | {r.mode} | {r.ok:,} | {failed} "
        f"| {_ms(r.p50_ms)} | {_ms(r.p99_ms)} | {_ms(r.max_ms)} | {r.closed_by_header} / {r.closed_idle} "
        f"| {signals} | {r.new_workers_seen} | {settled} | {replaced} | {r.client_cpu:.0%} "
        f"| {r.foreign_cpu:.0%} | {_clusters(r.failure_times)} |"
    )


def _clusters(times: list[float], gap: float = 0.5, limit: int = 6) -> str:
    """Failure times as "start-end (count)" groups, so a reader can match them to the signals."""
    groups: list[list[float]] = []
    for t in times:
        if groups and t - groups[-1][-1] <= gap:
            groups[-1].append(t)
        else:
            groups.append([t])
    parts = [
        f"{g[0]:.1f} ({len(g)})"
        if len(g) == 1 or g[-1] - g[0] < 0.05
        else f"{g[0]:.1f}-{g[-1]:.1f} ({len(g)})"
        for g in groups
    ]
    if len(parts) > limit:
        parts = [*parts[:limit], f"… {len(parts) - limit} more"]
    return ", ".join(parts) or "-"


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if text and text.strip() else ""


# --------------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reload", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="steady + reload runs per server (default 3)")
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma list, a subset of {','.join(DEFAULT_SERVERS)} (default all)",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter that has the peer servers")
    parser.add_argument(
        "--forkserve-python", default=None, help="interpreter that has forkserve (default: --python)"
    )
    parser.add_argument("--output", default="docs/benchmarks-reload.md", help="markdown page to write")
    parser.add_argument(
        "--render", metavar="RESULTS_JSON", help="only rewrite --output from a saved results JSON"
    )
    args = parser.parse_args(argv)
    unknown = [name for name in _split(args.servers) if name not in DEFAULT_SERVERS]
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)}; known: {', '.join(DEFAULT_SERVERS)}")
    return args


def _split(names: str) -> list[str]:
    return [name.strip() for name in names.split(",") if name.strip()]


def collect_versions(specs: list[ServerSpec], settings: Settings) -> dict[str, dict[str, str | None]]:
    by_python: dict[str, list[str]] = {}
    for spec in specs:
        packages = by_python.setdefault(interpreter_for(spec, settings), [])
        for package in (spec.package, "uvicorn", *SUPPORT_PACKAGES):
            if package not in packages:
                packages.append(package)
    return {python: package_versions(python, packages) for python, packages in by_python.items()}


def display_command(spec: ServerSpec, settings: Settings, workers: int) -> str:
    argv = spec.build(interpreter_for(spec, settings), 0, workers)
    return shlex.join(argv).replace(f"{HOST}:0", f"{HOST}:PORT").replace("--port 0", "--port PORT")


def forkserve_source() -> str:
    """The commit forkserve runs from, and any uncommitted change to it.

    forkserve is installed in editable mode from this tree, so a run measures the working tree as
    it is, including edits that are not committed yet.
    """
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "forkserve"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    changed = [line[3:] for line in dirty if line.strip()]
    if not changed:
        return f"commit {head}, no uncommitted change under forkserve/"
    return f"commit {head} plus uncommitted changes to {', '.join(f'`{c}`' for c in changed)}"


def build_meta(
    specs: list[ServerSpec], rounds: int, settings: Settings, versions: dict[str, dict[str, str | None]]
) -> dict[str, Any]:
    return {
        "command": f"{shlex.quote(sys.executable)} -m benchmarks.reload {shlex.join(sys.argv[1:])}".strip(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "event_loop": _event_loop_name(),
        "forkserve_source": forkserve_source(),
        "versions": versions,
        "scenario": asdict(SCENARIO),
        "rounds": rounds,
        "servers": {
            s.name: {
                "command": display_command(s, settings, SCENARIO.workers),
                "reload": RELOAD_MECHANISMS[s.name],
            }
            for s in specs
        },
    }


def write_outputs(meta: dict[str, Any], records: list[RunRecord], output: Path, raw: Path | None) -> None:
    if raw is not None:
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps({"meta": meta, "runs": [asdict(r) for r in records]}, indent=1))
    rewrite_page(output, lambda notes: render_page(meta, records, notes))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    output = Path(args.output)
    if args.render:
        payload = json.loads(Path(args.render).read_text())
        write_outputs(payload["meta"], [RunRecord(**run) for run in payload["runs"]], output, None)
        return 0
    # Unwind through the finally blocks that stop the server and the load generator.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    settings = Settings(
        python=args.python,
        forkserve_python=args.forkserve_python or args.python,
        logs_dir=RESULTS_DIR / f"reload-{stamp}",
    )
    specs = [SERVERS[name] for name in _split(args.servers)]
    versions = collect_versions(specs, settings)
    missing = [
        f"{s.name} ({s.package} not installed in {interpreter_for(s, settings)})"
        for s in specs
        if versions[interpreter_for(s, settings)].get(s.package) is None
    ]
    if missing:
        sys.exit("cannot run: " + "; ".join(missing) + " (see --python / --forkserve-python)")
    meta = build_meta(specs, args.rounds, settings, versions)
    records: list[RunRecord] = []
    raw = RESULTS_DIR / f"reload-{stamp}.json"
    try:
        run_benchmark(specs, args.rounds, settings, SCENARIO, records)
    except KeyboardInterrupt:
        partial = raw.with_name(f"reload-{stamp}-interrupted.json")
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"meta": meta, "runs": [asdict(r) for r in records]}, indent=1))
        print(f"interrupted; {len(records)} runs saved to {partial}", file=sys.stderr)
        return 130
    write_outputs(meta, records, output, raw)
    print(f"wrote {output} and {raw.relative_to(REPO_ROOT)}", file=sys.stderr)
    return 0 if not any(r.error for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
