"""The ten fault scenarios: each starts a server, loads it, does one harmful thing, and measures.

A scenario returns one ``Row`` per server. Every server is started in a session of its own and
stopped (TERM, then KILL) in a ``finally``; whatever of its process group is still alive after that
is killed too and reported as a leftover. Every client runs in a process of its own
(``benchmarks.faults_clients``), bounded in time and count, and is killed in a ``finally`` as well.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks import harness, sampling
from benchmarks.faults_clients import FloodConfig, LoadConfig, MalformedConfig, SlowlorisConfig
from benchmarks.faults_servers import (
    CRASH_APP,
    FaultServer,
    Knobs,
    Running,
    TreeWatcher,
    cmdline_of,
    fd_count,
    group_members,
    live_tree,
    port_bindable,
    probe_pid,
    signal_pid,
    start,
    stop,
    wait_ready,
)
from benchmarks.run import REPO_ROOT

MIB = 2**20


@dataclass
class Ctx:
    python: str
    forkserve_python: str
    logs_dir: Path
    quick: bool
    header_timeout: str | None  # forkserve's --header-timeout default, when it has the option
    jobs: int = 0
    pgids: list[int] = field(default_factory=list)  # every process group started, to check at the end

    def interp(self, server: FaultServer) -> str:
        return self.forkserve_python if server.forkserve_python else self.python

    def pick(self, quick: float, full: float) -> float:
        return quick if self.quick else full


@dataclass
class Row:
    scenario: int
    server: str
    settings: list[str] = field(default_factory=list)
    load: str = ""
    ok: int | None = None
    failed: int | None = None
    failures: dict[str, int] = field(default_factory=dict)
    recovery: str = ""
    leftovers: str = ""
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    na: str | None = None  # the server has no such mechanism: why
    error: str | None = None
    seconds: float = 0.0

    def take_load(self, result: dict[str, Any]) -> None:
        self.ok = (self.ok or 0) + int(result["ok"])
        self.failed = (self.failed or 0) + int(result["failed"])
        for kind, n in result["failures"].items():
            self.failures[kind] = self.failures.get(kind, 0) + int(n)
        if result.get("p99_ms") is not None:
            self.details.setdefault("p99_ms", round(result["p99_ms"], 1))


# --- clients ------------------------------------------------------------------------------------


class ClientJob:
    """One ``benchmarks.faults_clients`` process; killed with its group on exit, whatever happened."""

    def __init__(self, ctx: Ctx, job: str, config: Any, name: str) -> None:
        ctx.jobs += 1
        self.ctx = ctx
        self.out = ctx.logs_dir / f"client-{ctx.jobs:03d}-{name}-{job}.json"
        self.err = ctx.logs_dir / f"client-{ctx.jobs:03d}-{name}-{job}.err"
        self.argv = [
            sys.executable,
            "-m",
            "benchmarks.faults_clients",
            job,
            json.dumps(asdict(config)),
            str(self.out),
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def __enter__(self) -> ClientJob:
        with self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        self.ctx.pgids.append(self.proc.pid)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 15.0)
        if not ready or not self.proc.stdout.readline().startswith(b"started"):
            raise harness.ServerError(f"client job did not start: {harness.tail(self.err)}")
        self.started = time.monotonic()
        return self

    def stop_early(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def result(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise harness.ServerError(f"client job still running after {timeout:.0f}s") from None
        if self.proc.returncode != 0 or not self.out.exists():
            raise harness.ServerError(f"client job failed ({self.proc.returncode}): {harness.tail(self.err)}")
        data: dict[str, Any] = json.loads(self.out.read_text())
        return data

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def steady(ctx: Ctx, port: int, duration: float, **extra: Any) -> LoadConfig:
    return LoadConfig(port=port, duration=duration, **extra)


STEADY = "steady"


def sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)


# --- a server under test ------------------------------------------------------------------------


@contextlib.contextmanager
def serving(
    ctx: Ctx, server: FaultServer, knobs: Knobs, row: Row, tag: str = "", ready: bool = True
) -> Iterator[Running]:
    """Start ``server``, wait until all its workers serve, and stop it (and check it is all gone)."""
    log = ctx.logs_dir / f"s{row.scenario:02d}-{server.name}{tag}.log"
    running = start(server, knobs, ctx.interp(server), log)
    ctx.pgids.append(running.proc.pid)
    for item in running.command.applied:
        if item not in row.settings:
            row.settings.append(item)
    try:
        if ready:
            wait_ready(running)
        yield running
    finally:
        stopped = stop(running)
        problems = []
        if stopped.survivors:
            problems.append(f"left after TERM+KILL: {'; '.join(stopped.survivors)}")
        if stopped.port_open:
            problems.append("port still open after stop")
        if stopped.killed:
            problems.append(
                "needed SIGKILL to stop (TERM not enough in 10 s)" + (f" [{tag[1:]}]" if tag else "")
            )
        tracebacks = _lines(log, "Traceback (most recent call last)")
        if tracebacks:
            row.details["log_tracebacks"] = row.details.get("log_tracebacks", 0) + tracebacks
        row.details.setdefault("stop", []).append(
            {"seconds": round(stopped.stop_seconds, 2), "returncode": stopped.returncode}
        )
        if problems:
            row.leftovers = "; ".join(filter(None, [row.leftovers, *problems]))
        elif not row.leftovers:
            row.leftovers = "none"


def tree_summary(running: Running) -> tuple[int, str]:
    """How many processes the server has, and a readable list of the unexpected ones."""
    procs = live_tree(running.proc.pid)
    return len(procs), ", ".join(f"{p.pid} {cmdline_of(p)[:60]}" for p in procs)


def count_note(running: Running, row: Row) -> None:
    count, _ = tree_summary(running)
    expected = running.server.expected_processes
    if count != expected:
        row.notes.append(f"{count} processes at the end, {expected} expected")
    row.details["processes_end"] = count


def worker_pids(running: Running) -> set[int]:
    return {p.pid for p in live_tree(running.proc.pid) if running.server.is_worker(cmdline_of(p))}


def tree_rss_mb(running: Running) -> float:
    return sampling.tree_memory(running.proc.pid).rss / MIB


def _s(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.2f} s"


def wait_new_worker_serving(
    running: Running, watcher: TreeWatcher, since: float, deadline: float, exclude: set[int]
) -> tuple[float | None, float | None, int | None]:
    """Times (after ``since``) at which a new worker process existed and answered a request."""
    exists: float | None = None
    while time.monotonic() < deadline:
        new = [s for s in watcher.started_after(since) if s.pid not in exclude and s.gone is None]
        if new:
            exists = exists or new[0].first - since
            pid = probe_pid(running.port, timeout=0.5)
            if pid in {s.pid for s in new}:
                return exists, time.monotonic() - since, pid
        time.sleep(0.01)
    return exists, None, None


def first_answer_from(load: dict[str, Any], pids: set[int], since: float) -> float | None:
    times = [t for pid, t in load["pid_first"].items() if int(pid) in pids and t > since]
    return min(times) - since if times else None


# --- 1. SIGKILL one worker ------------------------------------------------------------------------


def s1_kill_worker(ctx: Ctx, server: FaultServer, row: Row) -> None:
    # The full run kills a worker that has served for 12 s: forkserve restarts a worker that
    # dies younger than 10 s only after a back-off (0.5 s the first time), and a worker killed by
    # the OOM killer in production has usually been up longer than that. --quick kills a young one.
    min_age = ctx.pick(0, 12)
    kill_after = ctx.pick(2, 3)
    duration = kill_after + ctx.pick(4, 7) + min_age
    row.load = f"{STEADY}, {duration:.0f} s"
    with (
        serving(ctx, server, Knobs(), row) as running,
        TreeWatcher(server, running.proc.pid) as watcher,
        ClientJob(ctx, "load", steady(ctx, running.port, duration), server.name) as load,
    ):
        before = worker_pids(running)
        victim = min(before)
        born = psutil.Process(victim).create_time()
        sleep_until(load.started + kill_after)
        time.sleep(max(0.0, born + min_age - time.time()))
        age = time.time() - born
        t_kill = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        exists, serving_after, new_pid = wait_new_worker_serving(
            running, watcher, t_kill, load.started + duration, before
        )
        result = load.result(timeout=duration + 15)
        row.take_load(result)
        if new_pid is not None:
            from_load = first_answer_from(result, {new_pid}, t_kill)
            if from_load is not None and serving_after is not None:
                serving_after = min(serving_after, from_load)
        end = result["ended"]
        live = worker_pids(running)
        answering = {int(p) for p, t in result["pid_last"].items() if t > end - 2.0}
        row.recovery = f"new worker after {_s(exists)}, serving after {_s(serving_after)}"
        if exists is None:
            row.recovery = "no replacement worker"
        row.details.update(
            victim_age_s=round(age, 1),
            replacement_exists_s=exists,
            replacement_serving_s=serving_after,
            workers_end=len(live),
            workers_answering_last_2s=len(live & answering),
        )
        if len(live) != 2 or len(live & answering) != 2:
            row.notes.append(f"at the end {len(live)} workers, {len(live & answering)} answering")
        count_note(running, row)


# --- 2. SIGSTOP one worker ------------------------------------------------------------------------


def s2_stop_worker(ctx: Ctx, server: FaultServer, row: Row) -> None:
    duration, stop_at = ctx.pick(12, 15), 2.0
    knobs = Knobs(hung_timeout=True)
    row.load = f"{STEADY}, {duration:.0f} s; client timeout 5 s"
    with serving(ctx, server, knobs, row) as running:
        missing = running.command.missing.get("hung check")
        victim: int | None = None
        try:
            with (
                TreeWatcher(server, running.proc.pid) as watcher,
                ClientJob(ctx, "load", steady(ctx, running.port, duration), server.name) as load,
            ):
                sleep_until(load.started + stop_at)
                before = worker_pids(running)
                victim = min(before)
                t_stop = time.monotonic()
                os.kill(victim, signal.SIGSTOP)
                exists, serving_after, _ = wait_new_worker_serving(
                    running, watcher, t_stop, load.started + duration, before
                )
                gone_at: float | None = None
                while time.monotonic() < load.started + duration:
                    entry = watcher.seen.get(victim)
                    if entry is not None and entry.gone is not None:
                        gone_at = entry.gone - t_stop
                        break
                    time.sleep(0.02)
                row.take_load(load.result(timeout=duration + 15))
                still_there = psutil.pid_exists(victim) and _status(victim) != psutil.STATUS_ZOMBIE
                row.details.update(
                    victim=victim,
                    detected_s=gone_at,
                    replacement_exists_s=exists,
                    replacement_serving_s=serving_after,
                    stopped_left=still_there,
                )
                if gone_at is not None:
                    row.recovery = (
                        f"stopped worker killed after {_s(gone_at)}; "
                        f"replacement serving after {_s(serving_after)}"
                    )
                elif exists is not None:
                    row.recovery = f"replacement after {_s(exists)}, but the stopped process was left"
                else:
                    row.recovery = f"not detected in {duration - stop_at:.0f} s"
                if missing:
                    row.na = missing
                if still_there:
                    row.notes.append("the stopped process was still there at the end: SIGCONT by the runner")
                count_note(running, row)
        finally:
            if victim is not None:
                signal_pid(victim, signal.SIGCONT)


def _status(pid: int) -> str:
    try:
        return str(psutil.Process(pid).status())
    except psutil.Error:
        return "gone"


# --- 3. memory leak -------------------------------------------------------------------------------


def s3_memory_leak(ctx: Ctx, server: FaultServer, row: Row) -> None:
    duration = ctx.pick(14, 25)
    knobs = Knobs(max_memory_mb=200)
    row.load = (
        f"{STEADY}, {duration:.0f} s; plus `/leak` (+20 MB kept) once a second on one keep-alive connection"
    )
    with serving(ctx, server, knobs, row) as running:
        missing = running.command.missing.get("memory")
        config = steady(ctx, running.port, duration, extra_path="/leak", extra_interval=1.0)
        with TreeWatcher(server, running.proc.pid) as watcher:
            watcher.sample_memory_every = 0.5
            with ClientJob(ctx, "load", config, server.name) as load:
                t0 = load.started
                result = load.result(timeout=duration + 30)
            row.take_load(result)
            workers = watcher.workers(live_only=False)
            replaced = sorted((s for s in workers if s.gone is not None), key=lambda s: s.gone or 0.0)
            peak = max((watcher.memory.get(s.pid, 0.0) for s in workers), default=0.0)
            calls = result["calls"]
            blocks = [int(c[2].split()[1]) for c in calls if c[1] is not None and len(c[2].split()) == 2]
            failed_calls = sum(1 for c in calls if c[1] is None)
            row.details.update(
                leak_calls=len(calls),
                leak_calls_failed=failed_calls,
                workers_replaced=len(replaced),
                first_replaced_s=(replaced[0].gone or 0.0) - t0 if replaced else None,
                peak_worker_uss_mb=round(peak),
                most_blocks_in_one_worker=max(blocks, default=0),
            )
            row.recovery = (
                f"{len(replaced)} worker(s) recycled; peak USS {peak:.0f} MB"
                if replaced
                else f"no worker recycled; peak USS {peak:.0f} MB"
            )
            if missing:
                row.na = missing
            if failed_calls:
                row.notes.append(f"{failed_calls} of {len(calls)} /leak calls failed")
            count_note(running, row)


# --- 4. HUP storm -----------------------------------------------------------------------------------


def s4_hup_storm(ctx: Ctx, server: FaultServer, row: Row) -> None:
    hups, spacing, first = 20, 0.5, 2.0
    duration = first + hups * spacing + 4.0
    row.load = f"{STEADY}, {duration:.0f} s"
    with serving(ctx, server, Knobs(), row) as running:
        master = running.proc.pid
        with (
            TreeWatcher(server, master) as watcher,
            ClientJob(ctx, "load", steady(ctx, running.port, duration), server.name) as load,
        ):
            sleep_until(load.started + first - 0.5)
            fds_before = fd_count(master)
            for i in range(hups):
                sleep_until(load.started + first + i * spacing)
                if not signal_pid(master, signal.SIGHUP):
                    break
            last_hup = time.monotonic()
            row.take_load(load.result(timeout=duration + 15))
            stable = _wait_settled(running, last_hup + 30.0)
            settled = max(0.0, watcher.last_change() - last_hup) if stable else None
            workers_started = len(watcher.started_after(load.started + first - 0.01))
        alive = running.proc.poll() is None
        procs = live_tree(master)
        fds_after = fd_count(master)
        titles = [cmdline_of(p) for p in procs]
        generations = sorted({t.rsplit(" gen ", 1)[1] for t in titles if " gen " in t})
        live_workers = [t for t in titles if server.is_worker(t)]
        row.details.update(
            processes_end=len(procs),
            expected=server.expected_processes,
            workers_end=len(live_workers),
            workers_started=workers_started,
            generations_end=generations,
            master_fds_before=fds_before,
            master_fds_after=fds_after,
            settled_s=settled,
            master_alive=alive,
        )
        gen = f", generation {'/'.join(generations)}" if generations else ""
        row.recovery = (
            f"settled {_s(settled)} after the last HUP: {len(live_workers)} workers{gen}; "
            f"{workers_started} workers started"
            if alive
            else "the server exited"
        )
        extra = len(procs) - server.expected_processes
        row.leftovers = (
            f"{len(procs)}/{server.expected_processes} processes; master fds {fds_before}→{fds_after}"
        )
        if extra:
            row.notes.append(f"{extra:+d} processes: {'; '.join(titles)}")
        if not alive:
            row.notes.append(f"master exited with {running.proc.returncode}")


def _wait_settled(running: Running, deadline: float, quiet: float = 2.0) -> bool:
    """Wait until the tree has the expected size and has not changed for ``quiet`` s."""
    t0 = time.monotonic()
    last: frozenset[int] = frozenset()
    since = t0
    while time.monotonic() < deadline and running.proc.poll() is None:
        pids = frozenset(p.pid for p in live_tree(running.proc.pid))
        now = time.monotonic()
        if pids != last:
            last, since = pids, now
        elif len(pids) == running.server.expected_processes and now - since >= quiet:
            return True
        time.sleep(0.05)
    return False


# --- 5. crash loop ------------------------------------------------------------------------------------


def s5_crash_loop(ctx: Ctx, server: FaultServer, row: Row) -> None:
    window = ctx.pick(15, 30)
    knobs = Knobs(app=CRASH_APP)
    row.load = f"{STEADY}, {window:.0f} s"
    with serving(ctx, server, knobs, row, ready=False) as running:
        master = running.proc.pid
        with TreeWatcher(server, master, interval=0.02) as watcher:
            t0 = time.monotonic()
            try:
                harness.wait_until_serving(running.proc, running.port, 15.0)
            except harness.ServerError as exc:
                row.notes.append(f"never served: {exc}")
            with ClientJob(ctx, "load", steady(ctx, running.port, window), server.name) as load:
                row.take_load(load.result(timeout=window + 15))
            observed = time.monotonic() - t0
            started = len(watcher.workers(live_only=False))
            no_worker = watcher.no_worker_seconds
        alive = running.proc.poll() is None
        row.details.update(
            workers_started=started,
            observed_s=round(observed, 1),
            forks_per_minute=round(started * 60 / observed, 1),
            no_worker_s=round(no_worker, 1),
            server_alive=alive,
            returncode=running.proc.returncode,
        )
        term = _term_master(running) if alive else None
        row.details["term_s"] = term
        up = "server up" if alive else f"server exited ({running.proc.returncode})"
        ended = (
            f"TERM ended all in {term:.2f} s"
            if term is not None
            else ("TERM did not end all in 5 s" if alive else "")
        )
        rate = started * 60 / observed
        row.recovery = (
            f"{started} workers in {observed:.0f} s ({rate:.0f}/min); no worker alive for {no_worker:.0f} s; "
            f"{up}; {ended}"
        ).rstrip("; ")
        if alive and term is None:
            row.notes.append("TERM to the master did not end everything within 5 s")


def _term_master(running: Running, limit: float = 5.0) -> float | None:
    """SIGTERM to the master alone; seconds until its whole process group is gone, or None."""
    pgid = running.proc.pid
    t0 = time.monotonic()
    os.kill(running.proc.pid, signal.SIGTERM)
    while time.monotonic() - t0 < limit:
        running.proc.poll()
        if running.proc.returncode is not None and not group_members(pgid):
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


# --- 6. master SIGKILL --------------------------------------------------------------------------------


def s6_kill_master(ctx: Ctx, server: FaultServer, row: Row) -> None:
    kill_at, limit = 2.0, 10.0
    duration = kill_at + limit
    row.load = f"{STEADY}, until all is gone (at most {duration:.0f} s)"
    with serving(ctx, server, Knobs(), row) as running:
        pgid = running.proc.pid
        with ClientJob(ctx, "load", steady(ctx, running.port, duration), server.name) as load:
            sleep_until(load.started + kill_at)
            tree = live_tree(pgid)
            t_kill = time.monotonic()
            os.kill(pgid, signal.SIGKILL)
            running.proc.wait(timeout=5)
            gone: float | None = None
            while time.monotonic() - t_kill < limit:
                if not group_members(pgid):
                    gone = time.monotonic() - t_kill
                    break
                time.sleep(0.02)
            bindable = port_bindable(running.port)
            orphans = group_members(pgid)
            answered = probe_pid(running.port, timeout=0.5) if orphans else None
            time.sleep(0.5)
            load.stop_early()
            result = load.result(timeout=duration + 15)
        row.take_load(result)
        events = result["failure_events"]
        until = t_kill + (gone if gone is not None else limit)
        cut = Counter(kind for t, kind in events if t_kill <= t <= until)
        later = Counter(kind for t, kind in events if t > until)
        last_ok = max((t for t in result["pid_last"].values()), default=t_kill)
        row.details.update(
            processes_before=len(tree),
            all_gone_s=gone,
            port_bindable=bindable,
            orphans=[f"{p.pid} {cmdline_of(p)[:60]}" for p in orphans],
            orphan_answered=answered,
            last_ok_after_kill_s=round(last_ok - t_kill, 2),
            failed_until_gone=dict(cut),
            failed_after_gone=dict(later),
        )
        if gone is not None:
            row.notes.append(
                f"failed while it went down: {sum(cut.values())}; after: {sum(later.values())} "
                "(nothing serves the port then, so every request fails)"
            )
        port = "port free" if bindable else "port NOT free"
        row.recovery = (
            f"all gone {_s(gone)} after; {port}"
            if gone is not None
            else f"{len(orphans)} left after {limit:.0f} s; {port}"
        )
        if orphans:
            row.leftovers = f"{len(orphans)} orphans holding the port (killed by the runner)"
            row.notes.append(
                f"orphans after {limit:.0f} s: {len(orphans)}"
                + (f", one still answered (pid {answered})" if answered else "")
            )
        if last_ok - t_kill > 0.5:
            row.notes.append(f"requests still answered {last_ok - t_kill:.1f} s after the master died")


# --- 7. slowloris -----------------------------------------------------------------------------------


def s7_slowloris(ctx: Ctx, server: FaultServer, row: Row) -> None:
    conns, count_at = int(ctx.pick(100, 500)), ctx.pick(10, 30)
    row.load = f"4 new-connection clients at 25 req/s, {count_at:.0f} s"
    if server.name == "forkserve" and ctx.header_timeout:
        row.settings.append(f"`--header-timeout` {ctx.header_timeout}")
    with serving(ctx, server, Knobs(), row) as running:
        before = worker_pids(running)
        config = SlowlorisConfig(port=running.port, connections=conns, count_at=count_at)
        with ClientJob(ctx, "slowloris", config, server.name) as job:
            result = job.result(timeout=count_at + 30)
        row.take_load(result["normal"])
        row.details.update(
            connected=result["connected"],
            open_at_count=result["open_at_count"],
            open_3s_later=result["open_later"],
            closed_by_server=result["closed_by_server"],
            closed_median_s=result["closed_median_s"],
            how_closed=result["how_closed"],
            p99_ms=result["normal"]["p99_ms"],
            workers_unchanged=worker_pids(running) == before,
        )
        median = result["closed_median_s"]
        closed = f" (closed after a median {median:.1f} s)" if median is not None else ""
        row.recovery = f"{result['open_at_count']}/{conns} still open at {count_at:.0f} s{closed}"
        if result["connected"] < conns:
            row.notes.append(f"only {result['connected']} of {conns} connected")
        p99 = result["normal"]["p99_ms"]
        row.notes.append(f"normal p99 {p99:.1f} ms" if p99 is not None else "no normal request succeeded")
        count_note(running, row)


# --- 8. malformed input -----------------------------------------------------------------------------


def s8_malformed(ctx: Ctx, server: FaultServer, row: Row) -> None:
    count = int(ctx.pick(500, 10_000))
    pipelines = int(ctx.pick(2, 10))
    row.load = f"{STEADY}, while the {count} requests run"
    with serving(ctx, server, Knobs(), row) as running:
        before = worker_pids(running)
        rss_before = tree_rss_mb(running)
        config = MalformedConfig(port=running.port, count=count, pipelines=pipelines)
        with (
            ClientJob(ctx, "load", steady(ctx, running.port, 300.0), server.name) as load,
            ClientJob(ctx, "malformed", config, server.name) as job,
        ):
            result = job.result(timeout=280)
            load.stop_early()
            row.take_load(load.result(timeout=20))
        time.sleep(0.5)
        after = worker_pids(running)
        rss_after = tree_rss_mb(running)
        classes: Counter[str] = Counter()
        for _category, _variant, verdict, n in result["table"]:
            classes[verdict] += n
        row.details.update(
            classes=dict(classes),
            table=result["table"],
            pipelined_responses=result["pipelined_responses"],
            workers_died=len(before - after),
            rss_before_mb=round(rss_before),
            rss_after_mb=round(rss_after),
            malformed_s=round(result["ended"] - result["started"], 1),
        )
        died = len(before - after)
        deaths = f"{died} worker(s) died" if died else "no worker died"
        row.recovery = f"{deaths}; RSS {rss_before:.0f}→{rss_after:.0f} MB"
        summary = ", ".join(f"{k} {v}" for k, v in classes.most_common())
        row.notes.append(summary)
        piped = result["pipelined_responses"]
        if piped and min(piped) < 1000:
            row.notes.append(f"pipelined 1000: {min(piped)} to {max(piped)} responses")
        count_note(running, row)


# --- 9. connection flood past the backlog -----------------------------------------------------------


def s9_flood(ctx: Ctx, server: FaultServer, row: Row) -> None:
    attempts = int(ctx.pick(500, 2000))
    blocked = 3.0
    row.load = f"{STEADY}, through the flood and 5 s after it"
    with serving(ctx, server, Knobs(backlog=16), row) as running:
        stopped: list[int] = []
        timer: threading.Timer | None = None
        try:
            with ClientJob(ctx, "load", steady(ctx, running.port, 60.0), server.name) as load:
                sleep_until(load.started + 2.0)
                stopped = sorted(worker_pids(running))
                for pid in stopped:
                    os.kill(pid, signal.SIGSTOP)
                t_stop = time.monotonic()
                timer = threading.Timer(blocked, _cont, args=(stopped,))
                timer.start()
                config = FloodConfig(port=running.port, attempts=attempts)
                with ClientJob(ctx, "flood", config, server.name) as flood:
                    result = flood.result(timeout=60)
                load.stop_early()
                row.take_load(load.result(timeout=20))
        finally:
            if timer is not None:
                timer.cancel()
            _cont(stopped)
        outcomes = result["outcomes"]
        first_ok = result["first_ok_after_s"]
        row.details.update(
            outcomes=outcomes,
            flood_s=round(result["ended"] - result["started"], 2),
            flood_started_after_stop_s=round(result["started"] - t_stop, 2),
            flood_ended_after_stop_s=round(result["ended"] - t_stop, 2),
            first_ok_after_flood_s=first_ok,
            probes=f"{result['probes_ok']}/{result['probes']}",
            probes_last_2s=f"{result['probes_ok_last_2s']}/{result['probes_last_2s']}",
        )
        counts = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        row.notes.append(f"{attempts} attempts: {counts}")
        probes = f"probes ok {result['probes_ok']}/{result['probes']}"
        row.recovery = (
            f"first ok {first_ok:.2f} s after the flood; {probes}"
            if first_ok is not None
            else "no ok request within 5 s of the flood"
        )
        count_note(running, row)


def _cont(pids: list[int]) -> None:
    for pid in pids:
        signal_pid(pid, signal.SIGCONT)


# --- 10. log file removed, disk full ------------------------------------------------------------------


def s10_logs(ctx: Ctx, server: FaultServer, row: Row) -> None:
    probe = server.build(ctx.interp(server), 0, Knobs(log_file="x", access_log=True))
    if "log file" in probe.missing:
        row.na = probe.missing["log file"]
        row.recovery = "n/a"
        row.leftovers = "not started"
        return
    requests = int(ctx.pick(300, 1000))
    row.load = f"{STEADY} 6 s around the `rm`; then {requests} requests on 4 keep-alive clients"
    _removed_log(ctx, server, row)
    _disk_full(ctx, server, row, requests)


def _removed_log(ctx: Ctx, server: FaultServer, row: Row) -> None:
    log_file = ctx.logs_dir / f"s10-{server.name}-app.log"
    with contextlib.suppress(FileNotFoundError):
        log_file.unlink()
    knobs = Knobs(log_file=str(log_file), access_log=True)
    with (
        serving(ctx, server, knobs, row, tag="-removed") as running,
        ClientJob(ctx, "load", steady(ctx, running.port, 6.0), server.name) as load,
    ):
        sleep_until(load.started + 1.5)
        lines_before = _lines(log_file)
        log_file.unlink()
        sleep_until(load.started + 2.5)
        os.kill(running.proc.pid, signal.SIGUSR1)
        t_usr1 = time.monotonic()
        appeared: float | None = None
        while time.monotonic() - t_usr1 < 3.0:
            if appeared is None and log_file.exists():
                appeared = time.monotonic() - t_usr1
            time.sleep(0.02)
        row.take_load(load.result(timeout=20))
        lines_after = _lines(log_file)
        access = _lines(log_file, "/pid")
        holders = _deleted_holders(running, log_file)
        alive = running.proc.poll() is None
        row.details.update(
            lines_before_removal=lines_before,
            new_file_appeared_s=appeared,
            new_file_lines=lines_after,
            new_file_access_lines=access,
            processes_holding_removed_file=holders,
            alive_after_usr1=alive,
        )
        if appeared is None:
            row.notes.append("USR1: no new log file within 3 s")
        else:
            row.notes.append(
                f"USR1: new file after {appeared:.2f} s, {lines_after} lines ({access} access lines) in 3 s"
            )
        if holders:
            row.notes.append(f"{len(holders)} process(es) still hold the removed file: {', '.join(holders)}")
        if not alive:
            row.notes.append(f"USR1 ended the server ({running.proc.returncode})")


def _disk_full(ctx: Ctx, server: FaultServer, row: Row, requests: int) -> None:
    knobs = Knobs(log_file="/dev/full", access_log=True)
    with serving(ctx, server, knobs, row, tag="-devfull") as running:
        before = worker_pids(running)
        config = LoadConfig(
            port=running.port, duration=60.0, keepalive=4, fresh=0, rate=100.0, max_requests=requests
        )
        with ClientJob(ctx, "load", config, server.name) as load:
            result = load.result(timeout=80)
        ok, failed = int(result["ok"]), int(result["failed"])
        row.take_load(result)
        after = worker_pids(running)
        stderr_lines = _lines(running.log_path)
        row.details.update(
            devfull_ok=ok,
            devfull_failed=failed,
            devfull_workers_died=len(before - after),
            devfull_stderr_lines=stderr_lines,
        )
        row.notes.append(
            f"/dev/full: {ok} ok, {failed} failed, {len(before - after)} workers died, "
            f"{stderr_lines} lines on stderr"
        )
        row.recovery = (
            f"new file after {_s(row.details.get('new_file_appeared_s'))}; /dev/full: "
            f"{'no worker died' if before == after else f'{len(before - after)} worker(s) died'}"
        )
        count_note(running, row)


def _lines(path: Path, needle: str | None = None) -> int:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 0
    lines = text.splitlines()
    return len(lines) if needle is None else sum(1 for line in lines if needle in line)


def _deleted_holders(running: Running, path: Path) -> list[str]:
    """Processes of the server that still have the removed log file open."""
    holders = []
    for proc in live_tree(running.proc.pid):
        try:
            fd_dir = Path(f"/proc/{proc.pid}/fd")
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith(str(path)) and target.endswith("(deleted)"):
                        holders.append(f"{proc.pid} {cmdline_of(proc)[:40]}")
                        break
        except OSError:
            continue
    return holders


# --- the table of scenarios --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    number: int
    title: str
    what: str
    run: Callable[[Ctx, FaultServer, Row], None]


SCENARIOS: dict[int, Scenario] = {
    s.number: s
    for s in (
        Scenario(1, "Worker SIGKILL", "SIGKILL one worker", s1_kill_worker),
        Scenario(
            2,
            "Worker SIGSTOP (hung)",
            "SIGSTOP one worker; hung check at 5 s where the server has one",
            s2_stop_worker,
        ),
        Scenario(
            3,
            "Memory leak",
            "`/leak` keeps 20 MB per call, once a second; recycle above 200 MB where the server can",
            s3_memory_leak,
        ),
        Scenario(4, "HUP storm", "20 SIGHUP to the master, 0.5 s apart", s4_hup_storm),
        Scenario(
            5, "Crash loop", "every worker calls `os._exit(1)` 1 s after its lifespan startup", s5_crash_loop
        ),
        Scenario(6, "Master SIGKILL", "SIGKILL the master", s6_kill_master),
        Scenario(
            7,
            "Slowloris",
            "500 connections (from 127.0.0.2) send headers one byte every 0.5 s",
            s7_slowloris,
        ),
        Scenario(8, "Malformed input", "10,000 invalid or hostile requests, 64 at a time", s8_malformed),
        Scenario(
            9,
            "Connection flood",
            "backlog 16, both workers SIGSTOPped for 3 s, 2000 connection attempts at once",
            s9_flood,
        ),
        Scenario(
            10,
            "Log file removed, disk full",
            "`rm` the log file, then USR1; separately, log to `/dev/full` with the access log on",
            s10_logs,
        ),
    )
}


OTHER_CPU_WARNING = 0.15


def run_scenario(ctx: Ctx, scenario: Scenario, server: FaultServer) -> Row:
    row = Row(scenario=scenario.number, server=server.name)
    cpu_before = sampling.cpu_snapshot(None)
    t0 = time.monotonic()
    try:
        scenario.run(ctx, server, row)
    except (harness.ServerError, subprocess.SubprocessError, OSError, psutil.Error) as exc:
        logs = sorted(ctx.logs_dir.glob(f"s{scenario.number:02d}-{server.name}*.log"))
        tail = harness.tail(logs[-1], 8) if logs else ""
        row.error = f"{type(exc).__name__}: {exc}" + (f"\n{tail}" if tail else "")
    row.seconds = round(time.monotonic() - t0, 1)
    # Every server and client of the scenario has been reaped by now, so their CPU time is in
    # RUSAGE_CHILDREN; what the machine spent beyond that was someone else's (orphans that init
    # reaped count as someone else's too, so this errs on the high side).
    other = sampling.foreign_cpu_share(cpu_before, sampling.cpu_snapshot(None))
    row.details["other_cpu_pct"] = round(other * 100)
    if other > OTHER_CPU_WARNING:
        row.notes.append(f"other processes used {other:.0%} of the CPUs meanwhile: figures may be disturbed")
    return row
