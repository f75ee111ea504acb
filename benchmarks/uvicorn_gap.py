"""Why does `uvicorn --workers 2` look so much slower than gunicorn + UvicornWorker?

Both run the same uvicorn protocol stack (httptools on uvloop) in worker processes sharing one
listening socket, so the gap has to come from a default. This runs each suspect as a variant,
interleaved like benchmarks.run, and prints a markdown table:

    python -m benchmarks.uvicorn_gap --rounds 3 --duration 5

Findings are written up in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone

from benchmarks.harness import HOST
from benchmarks.report import Summary, summarize
from benchmarks.run import (
    APP,
    BASELINE,
    RESULTS_DIR,
    ServerSpec,
    Settings,
    module_argv,
    run_benchmark,
    uvicorn_command,
)


def _uvicorn(python: str, port: int, workers: int, extra: str, app: str = APP) -> list[str]:
    return module_argv(python, f"uvicorn {app} --workers {workers} --host {HOST} --port {port} {extra}")


def _gunicorn(python: str, port: int, workers: int, extra: str, app: str = APP) -> list[str]:
    return module_argv(
        python,
        f"gunicorn -k uvicorn.workers.UvicornWorker -w {workers} -b {HOST}:{port} --no-control-socket "
        f"{extra} {app}",
    )


def _variant(name: str, server: str, extra: str, note: str, tty: bool = False) -> ServerSpec:
    build = _uvicorn if server == "uvicorn" else _gunicorn
    return ServerSpec(
        name,
        lambda python, port, workers, app=APP: build(python, port, workers, extra, app),
        server,
        note,
        tty=tty,
    )


VARIANTS: list[ServerSpec] = [
    _variant(BASELINE, "gunicorn", "", "gunicorn's default: no access log"),
    _variant(
        "gunicorn-uvicorn +accesslog", "gunicorn", "--access-logfile -", "access log to stdout (a file)"
    ),
    _variant("uvicorn default", "uvicorn", "", "uvicorn's default: access log on, stdout a file"),
    _variant("uvicorn default, tty", "uvicorn", "", "access log on, stdout a terminal", tty=True),
    ServerSpec("uvicorn --no-access-log", uvicorn_command, "uvicorn", "benchmarks.run's uvicorn"),
    _variant(
        "uvicorn --no-access-log --loop asyncio", "uvicorn", "--no-access-log --loop asyncio", "no uvloop"
    ),
    _variant("uvicorn --no-access-log --http h11", "uvicorn", "--no-access-log --http h11", "no httptools"),
    _variant(
        "uvicorn --no-access-log --limit-concurrency 10000",
        "uvicorn",
        "--no-access-log --limit-concurrency 10000 --backlog 4096",
        "limits raised; the defaults are no limit and backlog 2048, as under gunicorn",
    ),
]


def table(summaries: list[Summary]) -> str:
    lines = [
        f"| variant | req/s (median) | vs {BASELINE} | p99 |",
        "| --- | ---: | ---: | ---: |",
    ]
    for s in summaries:
        ratio = f"{s.ratio:.2f}x" if s.ratio is not None else "n/a"
        lines.append(f"| {s.server} | {s.requests_per_sec:,.0f} | {ratio} | {s.p99_ms:.2f} ms |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.uvicorn_gap", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--python", default=sys.executable, help="interpreter with uvicorn and gunicorn")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 round of 2 s, no waiting for quiet, no repeats"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 2
    stamp = "gap-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    settings = Settings(
        rounds=args.rounds,
        duration=args.duration,
        connections=64,
        threads=2,
        workers=2,
        warmup=1,
        cooldown=1.0,
        start_timeout=30.0,
        stop_timeout=10.0,
        max_other_cpu=0.10,
        retries=0 if args.quick else 2,
        quiet_timeout=0.0 if args.quick else 60.0,
        python=args.python,
        forkserve_python=args.python,
        logs_dir=RESULTS_DIR / stamp,
    )
    records = run_benchmark(VARIANTS, settings)
    summaries = summarize(records, [v.name for v in VARIANTS], BASELINE)
    print(table(summaries))
    payload = {"summary": [asdict(s) for s in summaries], "runs": [asdict(r) for r in records]}
    (RESULTS_DIR / f"{stamp}.json").write_text(json.dumps(payload, indent=2))
    return 0 if all(r.ok for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
