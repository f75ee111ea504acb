"""A Flask app under forkserve (--interface wsgi, a thread pool per worker) and gunicorn sync/gthread.

One interleaved run: every round starts each server in turn (rotating the order) for each
scenario, so a noisy neighbour hits all of them alike; medians over the rounds are compared as
ratios to gunicorn's gthread worker with the same number of threads. Two scenarios on the same
Flask app (defined below, so every server imports exactly the same code):

* ``hello``: ``GET /``, a tiny response: the server's own cost per request.
* ``io``: ``GET /io``, 10 ms of waiting (a database call, say) before a tiny response: what
  threads are for. A sync worker serves one such request at a time.

    python -m benchmarks.wsgi --rounds 3 --duration 5
    python -m benchmarks.wsgi --quick                     # a smoke run: 1 round of 2 s

Prints a markdown table (and every run) to paste into docs/wsgi.md; needs gunicorn installed
(``pip install 'forkserve[bench]'``) in the interpreter given by --python.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask

from benchmarks import harness, wrkrun
from benchmarks.apps import BODY
from benchmarks.harness import HOST
from benchmarks.run import REPO_ROOT, module_argv, server_env
from benchmarks.stats import median_or_nan, ratio

app = Flask(__name__)


@app.get("/")
def hello() -> tuple[bytes, int, dict[str, str]]:
    return BODY, 200, {"content-type": "text/plain"}


@app.get("/io")
def io() -> tuple[bytes, int, dict[str, str]]:
    time.sleep(0.010)
    return BODY, 200, {"content-type": "text/plain"}


APP = "benchmarks.wsgi:app"
BASELINE = "gunicorn-gthread"
SCENARIOS = {"hello": "/", "io": "/io"}

# (python, port, workers, threads) -> argv
Builder = Callable[[str, int, int, int], list[str]]


def _forkserve(python: str, port: int, workers: int, threads: int) -> list[str]:
    line = f"forkserve {APP} -w {workers} --threads {threads} -b {HOST}:{port} --no-access-log"
    return module_argv(python, line)


def _gunicorn(worker_class: str) -> Builder:
    def build(python: str, port: int, workers: int, threads: int) -> list[str]:
        # gunicorn 27 opens a control socket at one fixed default path: two at once would clash.
        extra = f"--threads {threads}" if worker_class == "gthread" else ""
        line = f"gunicorn -k {worker_class} {extra} -w {workers} -b {HOST}:{port} --no-control-socket {APP}"
        return module_argv(python, line)

    return build


SERVERS: dict[str, Builder] = {
    "forkserve": _forkserve,
    BASELINE: _gunicorn("gthread"),
    "gunicorn-sync": _gunicorn("sync"),
}


WsgiRun = wrkrun.WrkRun


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds of wrk per run")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="forkserve --threads and gthread --threads")
    parser.add_argument("--python", default=sys.executable, help="interpreter with forkserve and gunicorn")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--logs", default=str(REPO_ROOT / "benchmarks" / "results" / "wsgi"))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round of 2 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 2
    return args


def run_once(name: str, scenario: str, round_no: int, args: argparse.Namespace) -> WsgiRun:
    port = harness.free_port()
    record = WsgiRun(round=round_no, server=f"{scenario}/{name}", port=port)
    command = SERVERS[name](args.python, port, args.workers, args.threads)
    log_path = Path(args.logs) / f"{round_no:02d}-{scenario}-{name}.log"
    load = wrkrun.Load(SCENARIOS[scenario], 2, args.connections, args.warmup, args.duration)
    return wrkrun.measure(record, command, REPO_ROOT, server_env(), log_path, args.workers + 1, load)


def run(args: argparse.Namespace, names: list[str]) -> list[WsgiRun]:
    records = []
    for round_no in range(1, args.rounds + 1):
        for scenario in SCENARIOS:
            for name in harness.rotated(names, round_no):
                record = run_once(name, scenario, round_no, args)
                records.append(record)
                print(
                    f"[round {round_no}] {record.server:24} {_figures(record)}", file=sys.stderr, flush=True
                )
    return records


def _figures(r: WsgiRun) -> str:
    if not r.ok:
        return f"FAILED: {r.error}"
    return (
        f"{r.requests_per_sec:9,.0f} req/s  p99 {r.latency_ms['99']:7.2f} ms  "
        f"CPU {r.cpu_us_per_request:6.1f} us/req  other CPU {r.foreign_cpu:4.0%}"
    )


def render(args: argparse.Namespace, names: list[str], records: list[WsgiRun]) -> str:
    lines = [
        f"{args.rounds} interleaved rounds, `wrk -t2 -c{args.connections} -d{args.duration}s` per run after "
        f"a {args.warmup} s warm-up, {args.workers} workers, {args.threads} threads for forkserve and "
        "gthread, access logs off. Medians over the rounds; ratios to gunicorn gthread.",
        "",
        "| scenario | server | req/s | p99 ms | vs gthread | server CPU µs/request | runs ok | other CPU |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario in SCENARIOS:
        ok = {n: [r for r in records if r.server == f"{scenario}/{n}" and r.ok] for n in names}
        rps = {n: median_or_nan([r.requests_per_sec for r in ok[n]]) for n in names}
        for n in names:
            runs = sum(1 for r in records if r.server == f"{scenario}/{n}")
            versus = ratio(rps[n], rps.get(BASELINE))
            p99 = median_or_nan([r.latency_ms["99"] for r in ok[n]])
            lines.append(
                f"| {scenario} | {n} | {rps[n]:,.0f} | {p99:.1f} | "
                f"{'-' if versus is None else f'{versus:.2f}'} | "
                f"{median_or_nan([r.cpu_us_per_request for r in ok[n]]):.0f} | {len(ok[n])}/{runs} | "
                f"{median_or_nan([r.foreign_cpu for r in ok[n]]):.0%} |"
            )
    lines += ["", "```", *(f"round {r.round}  {r.server:24} {_figures(r)}" for r in records), "```"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = set(names) - set(SERVERS)
    if unknown:
        print(
            f"unknown servers: {', '.join(sorted(unknown))}; choose from {', '.join(SERVERS)}",
            file=sys.stderr,
        )
        return 2
    print(render(args, names, run(args, names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
