"""Benchmark forkserve against other pre-fork ASGI servers with wrk.

Run from the repository root:

    python -m benchmarks.run --rounds 5 --duration 10 --output docs/benchmarks.md

See benchmarks/README.md for what is installed where and how to read the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import psutil

from benchmarks import harness, sampling
from benchmarks.harness import HOST
from benchmarks.report import RunRecord, render_markdown, rewrite_page, summarize

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
APP = "benchmarks.apps:app"
BASELINE = "gunicorn-uvicorn"


class CommandBuilder(Protocol):
    def __call__(self, python: str, port: int, workers: int, app: str = APP) -> list[str]: ...


@dataclass(frozen=True)
class AppSpec:
    """An app every server serves, like for like: the same import string, the same measured path.

    Every app answers ``/`` with benchmarks.apps' body, which is how the harness knows a server is up.
    """

    name: str
    target: str  # module:attribute, as each server's command line takes it
    path: str  # what wrk requests
    description: str
    package: str | None = None  # a distribution the app needs, checked before running


APPS: dict[str, AppSpec] = {
    app.name: app
    for app in (
        AppSpec("hello", APP, "/", "plain ASGI hello-world app (`benchmarks/apps.py`)"),
        AppSpec(
            "fastapi",
            "benchmarks.apps_fastapi:app",
            "/items/42?q=widgets",
            "FastAPI JSON route with a pydantic response model (`benchmarks/apps_fastapi.py`)",
            "fastapi",
        ),
        AppSpec(
            "django",
            "benchmarks.apps_django:app",
            "/items/42?q=widgets",
            "Django async view returning JSON through Django's ASGI handler (`benchmarks/apps_django.py`, "
            "settings `benchmarks/django_settings.py`)",
            "django",
        ),
        AppSpec(
            "heavy",
            "benchmarks.apps_heavy:app",
            "/item",
            "heavy-import app: a registry of 300,000 small objects, a window of 1,000 read by each request "
            "(`benchmarks/apps_heavy.py`)",
        ),
    )
}


@dataclass(frozen=True)
class ServerSpec:
    name: str
    build: CommandBuilder
    package: str  # the distribution whose version is reported, and must be installed to run
    note: str  # how access logging is off, and any other choice a reader would ask about
    forkserve_python: bool = False  # runs under --forkserve-python instead of --python
    tty: bool = False  # output to a pseudo-terminal, as when started by hand in a shell


# Seconds the forkserve-zygote-exit variant's zygote waits, idle, before it exits.
ZYGOTE_IDLE_EXIT = 1


def module_argv(python: str, line: str) -> list[str]:
    # Each command is kept as one line so that it reads like the shell command it is.
    return [python, "-m", *shlex.split(line)]


def forkserve_command(python: str, port: int, workers: int, app: str = APP) -> list[str]:
    # The only place that knows forkserve's command line.
    return module_argv(python, f"forkserve {app} -w {workers} -b {HOST}:{port} --no-access-log")


def forkserve_zygote_exit_command(python: str, port: int, workers: int, app: str = APP) -> list[str]:
    # The zygote exits a second after the fleet serves (issue 19's memory goal on the heavy app):
    # the tree then holds no template copy of the app, like gunicorn without --preload.
    return [*forkserve_command(python, port, workers, app), "--zygote-idle-exit", str(ZYGOTE_IDLE_EXIT)]


def gunicorn_uvicorn_command(python: str, port: int, workers: int, app: str = APP) -> list[str]:
    # gunicorn 27 starts a control socket at one default path (~/.gunicorn/gunicorn.ctl) for every
    # instance; two instances at once would fight over it, so it is disabled.
    return module_argv(
        python,
        f"gunicorn -k uvicorn.workers.UvicornWorker -w {workers} -b {HOST}:{port} --no-control-socket {app}",
    )


def gunicorn_preload_command(python: str, port: int, workers: int, app: str = APP) -> list[str]:
    # The app imported once in the arbiter and shared by fork, as forkserve's zygote does: the fair
    # peer for memory on the heavy app (issue 19).
    return [*gunicorn_uvicorn_command(python, port, workers, app)[:-1], "--preload", app]


def gunicorn_asgi_command(python: str, port: int, workers: int, app: str = APP) -> list[str]:
    # "auto" would quietly fall back to the pure-Python parser if gunicorn_h1c failed to import;
    # "fast" makes the worker refuse to start instead, so a result here is always the C parser's.
    return module_argv(
        python,
        f"gunicorn -k asgi --http-parser fast -w {workers} -b {HOST}:{port} --no-control-socket {app}",
    )


def uvicorn_command(python: str, port: int, workers: int, app: str = APP) -> list[str]:
    return module_argv(
        python, f"uvicorn {app} --workers {workers} --no-access-log --host {HOST} --port {port}"
    )


def granian_command(python: str, port: int, workers: int, app: str = APP) -> list[str]:
    return module_argv(
        python,
        f"granian --interface asgi --workers {workers} --host {HOST} --port {port} --no-access-log {app}",
    )


def hypercorn_command(python: str, port: int, workers: int, app: str = APP) -> list[str]:
    # The uvloop worker class, because every other server here runs on uvloop too.
    return module_argv(python, f"hypercorn -k uvloop -w {workers} -b {HOST}:{port} {app}")


def ceiling_command(python: str, port: int, workers: int, app: str = APP) -> list[str]:
    # Not a server: the floor of the transport (uvloop, httptools, one write per request) that every
    # server here pays. It answers every path with the hello body, whatever --app says.
    del app
    return module_argv(python, f"benchmarks.ceiling -w {workers} -b {HOST}:{port}")


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec("forkserve", forkserve_command, "forkserve", "`--no-access-log`.", forkserve_python=True),
        ServerSpec(
            "forkserve-zygote-exit",
            forkserve_zygote_exit_command,
            "forkserve",
            f"`--no-access-log --zygote-idle-exit {ZYGOTE_IDLE_EXIT}`: the zygote exits once the fleet "
            "serves, and a replacement worker first starts a fresh one (issue 19's memory goal).",
            forkserve_python=True,
        ),
        ServerSpec(
            "gunicorn-uvicorn",
            gunicorn_uvicorn_command,
            "gunicorn",
            "Access log off by gunicorn's default (no `--access-logfile`); uvicorn's worker then has no "
            "access-log handler and skips the log call.",
        ),
        ServerSpec(
            "gunicorn-asgi",
            gunicorn_asgi_command,
            "gunicorn",
            "gunicorn's own asgi worker with the gunicorn_h1c C parser (`--http-parser fast` fails rather "
            "than fall back); access log off by gunicorn's default.",
        ),
        ServerSpec(
            "uvicorn",
            uvicorn_command,
            "uvicorn",
            "`--no-access-log` (uvicorn logs every request by default).",
        ),
        ServerSpec(
            "granian", granian_command, "granian", "`--no-access-log`, which is also granian's default."
        ),
        ServerSpec(
            "hypercorn",
            hypercorn_command,
            "hypercorn",
            "Access log off by hypercorn's default (no `--access-logfile`); uvloop worker class.",
        ),
        ServerSpec(
            "gunicorn-preload",
            gunicorn_preload_command,
            "gunicorn",
            "gunicorn + UvicornWorker with `--preload`: the app imported once before the fork.",
        ),
        ServerSpec(
            "ceiling",
            ceiling_command,
            "httptools",
            "Not a server: `benchmarks/ceiling.py`, uvloop + httptools answering every path with the hello "
            "body, no ASGI and no app. Its CPU/request is the transport's floor.",
            forkserve_python=True,
        ),
    )
}
# What a run without --servers measures; the memory peers (--app heavy) and the ceiling (the
# transport's floor, for benchmarks.app_floor) are asked for by name.
BY_NAME_ONLY = ("gunicorn-preload", "forkserve-zygote-exit", "ceiling")
DEFAULT_SERVERS = tuple(name for name in SERVERS if name not in BY_NAME_ONLY)

# Reported alongside the servers: they decide how fast the uvicorn-based stacks are.
SUPPORT_PACKAGES = ("uvloop", "httptools", "gunicorn-h1c")


@dataclass(frozen=True)
class Settings:
    rounds: int
    duration: int
    connections: int
    threads: int
    workers: int
    warmup: int
    cooldown: float
    start_timeout: float
    stop_timeout: float
    max_other_cpu: float
    retries: int
    quiet_timeout: float
    python: str
    forkserve_python: str
    logs_dir: Path
    app: AppSpec = APPS["hello"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="times each server is measured (default 5)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per server (default 2)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of unrecorded wrk load first (default 1)"
    )
    parser.add_argument(
        "--cooldown", type=float, default=1.0, help="seconds of idle between runs (default 1)"
    )
    parser.add_argument("--start-timeout", type=float, default=30.0, help="seconds a server has to start")
    parser.add_argument(
        "--stop-timeout", type=float, default=10.0, help="seconds before SIGTERM turns SIGKILL"
    )
    parser.add_argument(
        "--max-other-cpu",
        type=float,
        default=0.10,
        help="repeat a run if other processes used more than this share of the CPUs (default 0.10)",
    )
    parser.add_argument("--retries", type=int, default=2, help="repeats of a disturbed run (default 2)")
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=60.0,
        help="seconds to wait before each run for the CPUs to be under --max-other-cpu (default 60)",
    )
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma list, a subset of {','.join(SERVERS)} (default {','.join(DEFAULT_SERVERS)})",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter that has the peer servers")
    parser.add_argument(
        "--forkserve-python", default=None, help="interpreter that has forkserve (default: --python)"
    )
    parser.add_argument(
        "--app",
        choices=list(APPS),
        default="hello",
        help="the app every server serves (default hello): "
        + "; ".join(f"{a.name}: {a.path}" for a in APPS.values()),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 1 round of 2 s, 1 s warm-up, no waiting for a quiet machine, no repeats",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="markdown page to write (default docs/benchmarks.md, or docs/benchmarks-APP.md)",
    )
    parser.add_argument(
        "--render",
        metavar="RESULTS_JSON",
        help="only rewrite --output from a saved benchmarks/results/*.json",
    )
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = "docs/benchmarks.md" if args.app == "hello" else f"docs/benchmarks-{args.app}.md"
    if args.quick:
        args.rounds, args.duration, args.warmup, args.retries, args.quiet_timeout = 1, 2, 1, 0, 0.0
    unknown = [name for name in _split(args.servers) if name not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)}; known: {', '.join(SERVERS)}")
    return args


def _split(names: str) -> list[str]:
    return [name.strip() for name in names.split(",") if name.strip()]


def interpreter_for(spec: ServerSpec, settings: Settings) -> str:
    return settings.forkserve_python if spec.forkserve_python else settings.python


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    # Every server imports benchmarks.apps from the repository root, whatever its own sys.path rules.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    # uvicorn would take its worker count from here if --workers were ever dropped.
    env.pop("WEB_CONCURRENCY", None)
    return env


def run_once(spec: ServerSpec, round_no: int, settings: Settings, attempt: int = 0) -> RunRecord:
    port = harness.free_port()
    record = RunRecord(round=round_no, server=spec.name, port=port)
    command = spec.build(interpreter_for(spec, settings), port, settings.workers, settings.app.target)
    repeat = f"-repeat{attempt}" if attempt else ""
    log_path = settings.logs_dir / f"{round_no:02d}-{spec.name}{repeat}.log"
    proc = harness.start_server(command, REPO_ROOT, server_env(), log_path, tty=spec.tty)
    try:
        _measure(proc, port, record, settings)
    except (harness.ServerError, subprocess.SubprocessError, OSError) as exc:
        record.error = f"{exc}\n{harness.tail(log_path)}"
    finally:
        _stop(proc, port, record, settings)
    return record


def _measure(proc: subprocess.Popen[bytes], port: int, record: RunRecord, settings: Settings) -> None:
    deadline = time.monotonic() + settings.start_timeout
    harness.wait_until_serving(proc, port, settings.start_timeout)
    harness.wait_for_workers(proc.pid, settings.workers + 1, max(1.0, deadline - time.monotonic()))
    if settings.warmup > 0:
        harness.run_wrk(port, settings.threads, settings.connections, settings.warmup, settings.app.path)
    before = sampling.cpu_snapshot(proc.pid)
    result = harness.run_wrk(
        port, settings.threads, settings.connections, settings.duration, settings.app.path
    )
    after = sampling.cpu_snapshot(proc.pid, before.tree)
    record.foreign_cpu = sampling.foreign_cpu_share(before, after)
    record.cpu_us_per_request = (after.server - before.server) / max(result.requests, 1) * 1e6
    memory = sampling.tree_memory(proc.pid)
    record.requests_per_sec = result.requests_per_sec
    record.latency_ms = result.latency_ms
    record.requests = result.requests
    record.socket_errors = result.socket_errors
    record.non_2xx = result.non_2xx
    record.processes, record.rss, record.pss = memory.processes, memory.rss, memory.pss


def _stop(proc: subprocess.Popen[bytes], port: int, record: RunRecord, settings: Settings) -> None:
    harness.stop_into(record, proc, port, settings.stop_timeout)


def run_benchmark(
    specs: list[ServerSpec], settings: Settings, records: list[RunRecord] | None = None
) -> list[RunRecord]:
    """Run every server once per round, rotating the order so no server always goes first.

    Records are appended to ``records`` as they come, so a caller still has them after a Ctrl-C.
    """
    records = [] if records is None else records
    for round_no in range(1, settings.rounds + 1):
        for spec in harness.rotated(specs, round_no):
            _run_undisturbed(spec, round_no, settings, records)
    return records


def _run_undisturbed(spec: ServerSpec, round_no: int, settings: Settings, records: list[RunRecord]) -> None:
    # wrk and the servers already share the cores; a test suite or build starting meanwhile can take
    # a third of them. A median absorbs one such run, not several, so a disturbed run is repeated
    # (a bounded number of times) and kept in the raw figures for the record.
    for attempt in range(settings.retries + 1):
        sampling.wait_for_quiet(settings.max_other_cpu, settings.quiet_timeout)
        record = run_once(spec, round_no, settings, attempt)
        disturbed = record.ok and record.foreign_cpu > settings.max_other_cpu
        record.repeated = disturbed and attempt < settings.retries
        records.append(record)
        _progress(record, settings.rounds)
        time.sleep(settings.cooldown)
        if not record.repeated:
            return


def _progress(record: RunRecord, rounds: int) -> None:
    if record.ok:
        line = (
            f"{record.requests_per_sec:10,.0f} req/s  p99 {record.latency_ms['99']:7.2f} ms  "
            f"CPU {record.cpu_us_per_request:5.1f} µs/req  "
            f"RSS {record.rss / 2**20:6.1f} MiB  PSS {record.pss / 2**20:6.1f} MiB  "
            f"other CPU {record.foreign_cpu:4.0%}"
        )
        if record.socket_errors or record.non_2xx:
            line += f"  errors {record.socket_errors} non-2xx {record.non_2xx}"
    else:
        line = f"FAILED: {record.error}"
    if record.repeated:
        line += "  (disturbed: repeating)"
    print(f"[round {record.round}/{rounds}] {record.server:18} {line}", file=sys.stderr, flush=True)


_VERSIONS_SCRIPT = """
import importlib.metadata, json, platform, sys
out = {"python": platform.python_version()}
for name in sys.argv[1:]:
    try:
        out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        out[name] = None
print(json.dumps(out))
"""


def package_versions(python: str, packages: Sequence[str]) -> dict[str, str | None]:
    # Asked of the interpreter that runs the servers: the runner's own may have other versions.
    done = subprocess.run(
        [python, "-c", _VERSIONS_SCRIPT, *packages], capture_output=True, text=True, timeout=60, check=True
    )
    versions: dict[str, str | None] = json.loads(done.stdout)
    return versions


def collect_versions(specs: list[ServerSpec], settings: Settings) -> dict[str, dict[str, str | None]]:
    by_python: dict[str, list[str]] = {}
    for spec in specs:
        packages = by_python.setdefault(interpreter_for(spec, settings), [])
        app_packages = (settings.app.package,) if settings.app.package else ()
        for package in (spec.package, "uvicorn", *SUPPORT_PACKAGES, *app_packages):
            if package not in packages:
                packages.append(package)
    return {python: package_versions(python, packages) for python, packages in by_python.items()}


def missing_servers(
    specs: list[ServerSpec], versions: dict[str, dict[str, str | None]], settings: Settings
) -> list[str]:
    needed = [settings.app.package] if settings.app.package else []
    return [
        f"{spec.name} ({package} not installed in {interpreter_for(spec, settings)})"
        for spec in specs
        for package in [spec.package, *needed]
        if versions[interpreter_for(spec, settings)].get(package) is None
    ]


def machine_info() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "memory_gib": psutil.virtual_memory().total / 2**30,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def wrk_version() -> str:
    # wrk has no --version; it prints its banner and usage, and exits non-zero.
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10, check=False)
    first = (done.stdout or done.stderr).splitlines()
    return first[0].split(" Copyright")[0].strip() if first else "wrk (unknown version)"


def shown_python(python: str) -> str:
    """An interpreter as the page names it: a command a reader can run, not this machine's path.

    The runner's own interpreter is the reader's ``python``; another (``--python``) is shown as
    typed when relative, else by its file name.
    """
    if os.path.realpath(python) == os.path.realpath(sys.executable) or python == sys.executable:
        return "python"
    if not os.path.isabs(python):
        return python  # as the reader typed it: peers/bin/python
    return f"{os.path.basename(python)} (--python)"


def display_command(spec: ServerSpec, settings: Settings) -> str:
    # A fixed placeholder port keeps the command readable and the same across runs.
    argv = spec.build(interpreter_for(spec, settings), 0, settings.workers, settings.app.target)
    argv[0] = shown_python(argv[0])
    return shlex.join(argv).replace(f"{HOST}:0", f"{HOST}:PORT").replace("--port 0", "--port PORT")


def build_meta(
    args: argparse.Namespace,
    specs: list[ServerSpec],
    settings: Settings,
    versions: dict[str, dict[str, str | None]],
) -> dict[str, Any]:
    return {
        "command": f"python -m benchmarks.run {shlex.join(sys.argv[1:])}".strip(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "wrk_version": wrk_version(),
        "versions": {shown_python(python): found for python, found in versions.items()},
        "servers": {s.name: {"command": display_command(s, settings), "note": s.note} for s in specs},
        "baseline": BASELINE,
        "app": {
            "name": settings.app.name,
            "target": settings.app.target,
            "path": settings.app.path,
            "description": settings.app.description,
        },
        "rounds": settings.rounds,
        "duration": settings.duration,
        "connections": settings.connections,
        "threads": settings.threads,
        "workers": settings.workers,
        "warmup": settings.warmup,
        "output": args.output,
    }


def write_page(meta: dict[str, Any], records: list[RunRecord], output: Path) -> None:
    summaries = summarize(records, list(meta["servers"]), meta["baseline"])
    rewrite_page(output, lambda notes: render_markdown(meta, records, summaries, notes))


def write_raw(meta: dict[str, Any], records: list[RunRecord], path: Path) -> None:
    summaries = summarize(records, list(meta["servers"]), meta["baseline"])
    payload = {"meta": meta, "summary": [asdict(s) for s in summaries], "runs": [asdict(r) for r in records]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))


def rerender(raw: Path, output: Path) -> None:
    """Rewrite the page from a saved run, e.g. after changing report.py, without measuring again."""
    payload = json.loads(raw.read_text())
    records = [RunRecord(**run) for run in payload["runs"]]
    write_page(payload["meta"], records, output)


def settings_from(args: argparse.Namespace, logs_dir: Path) -> Settings:
    return Settings(
        rounds=args.rounds,
        duration=args.duration,
        connections=args.connections,
        threads=args.threads,
        workers=args.workers,
        warmup=args.warmup,
        cooldown=args.cooldown,
        start_timeout=args.start_timeout,
        stop_timeout=args.stop_timeout,
        max_other_cpu=args.max_other_cpu,
        retries=args.retries,
        quiet_timeout=args.quiet_timeout,
        python=args.python,
        forkserve_python=args.forkserve_python or args.python,
        logs_dir=logs_dir,
        app=APPS[args.app],
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        rerender(Path(args.render), Path(args.output))
        return 0
    # SIGTERM, and SIGINT even when a non-interactive shell started us in the background with it
    # ignored, unwind through the finally blocks that stop the server under test.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not on PATH: apt-get install -y wrk")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    settings = settings_from(args, RESULTS_DIR / stamp)
    specs = [SERVERS[name] for name in _split(args.servers)]
    versions = collect_versions(specs, settings)
    missing = missing_servers(specs, versions, settings)
    if missing:
        sys.exit("cannot run: " + "; ".join(missing))
    meta = build_meta(args, specs, settings, versions)
    records: list[RunRecord] = []
    try:
        run_benchmark(specs, settings, records)
    except KeyboardInterrupt:
        # A partial run must not replace the page, but its figures are worth keeping.
        partial = RESULTS_DIR / f"{stamp}-interrupted.json"
        write_raw(meta, records, partial)
        print(f"interrupted; {len(records)} runs saved to {partial.relative_to(REPO_ROOT)}", file=sys.stderr)
        return 130
    raw_path = RESULTS_DIR / f"{stamp}.json"
    write_raw(meta, records, raw_path)
    write_page(meta, records, Path(args.output))
    print(f"wrote {args.output} and {raw_path.relative_to(REPO_ROOT)}", file=sys.stderr)
    return 0 if all(r.ok for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
