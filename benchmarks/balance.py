"""Benchmark forkserve's --balance modes against each other and against gunicorn's kernel balancing.

Run from the repository root (about 5 minutes with the defaults):

    python -m benchmarks.balance --python peers/bin/python --forkserve-python forkserve-venv/bin/python

For each server and round, three fresh runs of wrk against ``benchmarks.apps_balance:app``:

* ``keep-alive``: ``wrk -t2 -c64``, hello world; before it, a burst of 32 connections opened at once
  (each asks ``/pid``) shows where a burst lands.
* ``new-conn``: the same with ``Connection: close``, so every request is a new connection: the
  cost of the master's hand-off in the hand-off modes.
* ``mixed``: ``wrk -t2 -c16``, one connection per request, one request in 200 is ``/cpu`` (about
  100 ms of CPU), the rest hello world: the p99 of a mostly fast service with an occasional heavy
  request, where the choice of worker decides how long fast requests wait behind a slow one.

Every server's workers count the requests they served and write the count at shutdown, which gives
the share per worker. The servers run interleaved (every server once per round, order rotated), and
the section between the markers in docs/balancing.md is rewritten with the medians.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil

from benchmarks import harness, sampling
from benchmarks.harness import HOST
from benchmarks.stats import median_or_nan

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
APP = "benchmarks.apps_balance:app"
MODES = ["kernel", "reuseport", "round-robin", "least-conn", "ip-hash"]
SERVERS = [f"forkserve {mode}" for mode in MODES] + ["gunicorn-uvicorn"]
SCENARIOS = ["keep-alive", "new-conn", "mixed"]
BASELINE = "forkserve kernel"
START_MARK = "<!-- balance-benchmark:start -->"
END_MARK = "<!-- balance-benchmark:end -->"

MIXED_LUA = """
counter = 0
request = function()
  counter = counter + 1
  if counter % 200 == 0 then
    return wrk.format(nil, "/cpu")
  end
  return wrk.format(nil, "/")
end
"""


@dataclass
class Run:
    round: int
    server: str
    scenario: str
    requests_per_sec: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: int = 0
    shares: list[int] = field(default_factory=list)  # requests per worker, largest first
    burst: list[int] = field(default_factory=list)  # of 32 connections opened at once, per worker
    foreign_cpu: float = 0.0
    master_cpu: float = 0.0  # share of one CPU the master process used during the run
    error: str | None = None


def command(server: str, python: str, forkserve_python: str, port: int, workers: int) -> list[str]:
    if server.startswith("forkserve "):
        mode = server.split(" ", 1)[1]
        line = f"forkserve {APP} -w {workers} -b {HOST}:{port} --no-access-log --balance {mode}"
        return [forkserve_python, "-m", *shlex.split(line)]
    line = (
        f"gunicorn -k uvicorn.workers.UvicornWorker -w {workers} -b {HOST}:{port} --no-control-socket {APP}"
    )
    return [python, "-m", *shlex.split(line)]


def wrk(port: int, scenario: str, duration: int, script: Path) -> harness.WrkResult:
    args = ["wrk", "-t2", f"-d{duration}s", "--latency"]
    if scenario == "keep-alive":
        args += ["-c64"]
    elif scenario == "new-conn":
        args += ["-c64", "-H", "Connection: close"]
    else:
        args += ["-c16", "-H", "Connection: close", "-s", str(script)]
    args.append(f"http://{HOST}:{port}/")
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration + 30, check=False)
    if done.returncode != 0:
        raise harness.ServerError(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    return harness.parse_wrk(done.stdout)


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def burst(port: int, count: int = 32) -> list[int]:
    """Open COUNT connections at once, each asking /pid; how many each worker took, largest first."""
    clients = [socket.create_connection((HOST, port), timeout=10) for _ in range(count)]
    pids: collections.Counter[str] = collections.Counter()
    try:
        for client in clients:
            client.sendall(b"GET /pid HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        for client in clients:
            data = b""
            while chunk := client.recv(65536):
                data += chunk
            pids[data.partition(b"\r\n\r\n")[2].decode()] += 1
    finally:
        for client in clients:
            client.close()
    return sorted(pids.values(), reverse=True)


def run_one(server: str, scenario: str, round_no: int, args: argparse.Namespace, script: Path) -> Run:
    record = Run(round_no, server, scenario)
    port = harness.free_port()
    counts = Path(tempfile.mkdtemp(prefix="balance-counts-"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["BALANCE_COUNTS_DIR"] = str(counts)
    env.pop("WEB_CONCURRENCY", None)
    log = RESULTS_DIR / "balance-logs" / f"{round_no:02d}-{server.replace(' ', '-')}-{scenario}.log"
    proc = harness.start_server(
        command(server, args.python, args.forkserve_python, port, args.workers), REPO_ROOT, env, log
    )
    try:
        harness.wait_until_serving(proc, port, 20)
        harness.wait_for_workers(proc.pid, args.workers + 1, 20)
        if scenario == "keep-alive":
            record.burst = burst(port)
        wrk(port, scenario, 1, script)  # warm-up, not recorded
        before = sampling.cpu_snapshot(proc.pid)
        master_before = _cpu_seconds(proc.pid)
        result = wrk(port, scenario, args.duration, script)
        record.master_cpu = (_cpu_seconds(proc.pid) - master_before) / (time.monotonic() - before.wall)
        record.foreign_cpu = sampling.foreign_cpu_share(before, sampling.cpu_snapshot(proc.pid, before.tree))
        record.requests_per_sec = result.requests_per_sec
        record.latency_ms = result.latency_ms
        record.errors = result.socket_errors + result.non_2xx
    except (harness.ServerError, subprocess.SubprocessError, OSError) as exc:
        record.error = f"{exc}\n{harness.tail(log)}"
    finally:
        _, problems = harness.stop_and_check(proc, port, 15)
        if problems:
            record.error = "; ".join(filter(None, [record.error, problems]))
    record.shares = sorted((int(p.read_text()) for p in counts.iterdir()), reverse=True)
    for path in counts.iterdir():
        path.unlink()
    counts.rmdir()
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--python", default=sys.executable, help="runs gunicorn")
    parser.add_argument("--forkserve-python", default=sys.executable)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--output", default=str(REPO_ROOT / "docs" / "balancing.md"))
    parser.add_argument("--render", help="rewrite --output from a saved results JSON, without measuring")
    args = parser.parse_args(argv)
    if args.render:
        data = json.loads(Path(args.render).read_text())
        saved = [Run(**run) for run in data["runs"]]
        write_section(Path(args.output), render(saved, data["meta"]))
        return 0
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script_file:
        script_file.write(MIXED_LUA)
    script = Path(script_file.name)
    started = time.monotonic()
    try:
        for round_no in range(1, args.rounds + 1):
            for server in harness.rotated(servers, round_no):
                for scenario in SCENARIOS:
                    sampling.wait_for_quiet(0.15, 20)
                    run = run_one(server, scenario, round_no, args, script)
                    runs.append(run)
                    print(_progress(run), flush=True)
    finally:
        script.unlink()
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks.balance " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "rounds": args.rounds,
        "duration": args.duration,
        "workers": args.workers,
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    (RESULTS_DIR / f"balance-{stamp}.json").write_text(
        json.dumps({"meta": meta, "runs": [asdict(r) for r in runs]}, indent=1)
    )
    write_section(Path(args.output), render(runs, meta))
    return 0


def _progress(run: Run) -> str:
    if run.error:
        return f"round {run.round} {run.server:22} {run.scenario:10} FAILED: {run.error.splitlines()[0]}"
    return (
        f"round {run.round} {run.server:22} {run.scenario:10} {run.requests_per_sec:9.0f} req/s "
        f"p99 {run.latency_ms.get('99', 0):7.1f} ms  shares {run.shares}  burst {run.burst}  "
        f"errors {run.errors}  master cpu {run.master_cpu:.0%}  other cpu {run.foreign_cpu:.0%}"
    )


def _share(counts: list[int]) -> str:
    total = sum(counts)
    return "/".join(f"{100 * c / total:.0f}" for c in counts) if total else "-"


def render(runs: list[Run], meta: dict[str, object]) -> str:
    ok = [r for r in runs if r.error is None and r.requests_per_sec is not None]
    servers = list(dict.fromkeys(r.server for r in runs))
    lines = [
        f"Measured {meta['date']}: {meta['rounds']} interleaved rounds, {meta['duration']} s of wrk per run "
        f"after a 1 s warm-up, {meta['workers']} workers, wrk on the same 2-CPU machine "
        f"({meta['minutes']} minutes). Medians over the rounds; a server is restarted for every run. "
        "Shares and bursts are listed per round; *other CPU* is the most that processes other than "
        "the server, wrk and the runner used during any of the rounds (a disturbed run reads low).",
        "",
        "```",
        str(meta["command"]),
        "```",
        "",
    ]
    for scenario in SCENARIOS:
        base_runs = [r.requests_per_sec or 0.0 for r in ok if r.server == BASELINE and r.scenario == scenario]
        base = median_or_nan(base_runs) if base_runs else None
        title = {
            "keep-alive": "Keep-alive (`wrk -c64`): throughput, and where a 32-connection burst lands",
            "new-conn": "One connection per request (`wrk -c64 -H 'Connection: close'`)",
            "mixed": "Mixed load: 1 request in 200 takes 100 ms of CPU (`-c16`, one connection per request)",
        }[scenario]
        lines += [f"#### {title}", ""]
        header = (
            "| server | req/s | vs kernel | p50 ms | p99 ms | master CPU | other CPU "
            "| requests per worker, % |"
        )
        if scenario == "keep-alive":
            header += " burst of 32 |"
        lines += [header, _separator(header)]
        for server in servers:
            mine = [r for r in ok if r.server == server and r.scenario == scenario]
            if not mine:
                lines.append(
                    f"| {server} | failed | | | | | | |" + (" |" if scenario == "keep-alive" else "")
                )
                continue
            rps = median_or_nan(r.requests_per_sec or 0.0 for r in mine)
            p50 = median_or_nan(r.latency_ms.get("50", 0.0) for r in mine)
            p99 = median_or_nan(r.latency_ms.get("99", 0.0) for r in mine)
            ratio = f"{rps / base:.2f}x" if base else "-"
            shares = ", ".join(_share(r.shares) for r in mine)
            master = median_or_nan(r.master_cpu for r in mine)
            other = max(r.foreign_cpu for r in mine)
            row = (
                f"| {server} | {rps:,.0f} | {ratio} | {p50:.1f} | {p99:.1f} | {master:.0%} | {other:.0%} "
                f"| {shares} |"
            )
            if scenario == "keep-alive":
                row += " " + ", ".join("/".join(map(str, r.burst)) for r in mine) + " |"
            lines.append(row)
        lines.append("")
    failed = [r for r in runs if r.error]
    errors = [r for r in ok if r.errors]
    if failed or errors:
        lines += ["Problems:", ""]
        lines += [
            f"- round {r.round} {r.server} {r.scenario}: {r.error.splitlines()[0]}" for r in failed if r.error
        ]
        lines += [f"- round {r.round} {r.server} {r.scenario}: {r.errors} wrk errors" for r in errors]
        lines.append("")
    return "\n".join(lines)


def _separator(header: str) -> str:
    return "|" + " --- |" * (header.count("|") - 1)


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else f"{START_MARK}\n{END_MARK}\n"
    before, _, rest = text.partition(START_MARK)
    _, _, after = rest.partition(END_MARK)
    path.write_text(f"{before}{START_MARK}\n{section}\n{END_MARK}{after}")


if __name__ == "__main__":
    sys.exit(main())
