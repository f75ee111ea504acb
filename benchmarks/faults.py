"""Fault injection: what forkserve and its peers do when workers die, hang, leak, or clients misbehave.

Run from the repository root:

    python -m benchmarks.faults --output docs/reliability.md \\
        --python peers/bin/python --forkserve-python forkserve-venv/bin/python

``--quick`` runs shorter scenarios (a few minutes); ``--scenarios 1,2`` and ``--servers forkserve``
pick a subset. The scenarios are in ``benchmarks/faults_scenarios.py``, the clients in
``benchmarks/faults_clients.py``, the servers' command lines in ``benchmarks/faults_servers.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from benchmarks.faults_report import DEFAULT_INTRO, render, split_page
from benchmarks.faults_scenarios import SCENARIOS, Ctx, Row, run_scenario
from benchmarks.faults_servers import (
    DEFAULT_SERVERS,
    SERVERS,
    FaultServer,
    Knobs,
    cmdline_of,
    group_members,
)
from benchmarks.run import REPO_ROOT, RESULTS_DIR, SUPPORT_PACKAGES, machine_info, package_versions

APP_MODULE = "benchmarks.apps_faults"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="docs/reliability.md", help="markdown page to write")
    parser.add_argument("--quick", action="store_true", help="shorter scenarios, fewer connections")
    parser.add_argument(
        "--scenarios", default=",".join(str(n) for n in SCENARIOS), help="comma list of 1..10 (default all)"
    )
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma list of {','.join(SERVERS)} (default {','.join(DEFAULT_SERVERS)})",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter that has the peer servers")
    parser.add_argument(
        "--forkserve-python", default=None, help="interpreter with forkserve (default --python)"
    )
    parser.add_argument("--render", metavar="RESULTS_JSON", help="only rewrite --output from a saved run")
    args = parser.parse_args(argv)
    for name in _split(args.servers):
        if name not in SERVERS:
            parser.error(f"unknown server {name}; known: {', '.join(SERVERS)}")
    for number in _split(args.scenarios):
        if not number.isdigit() or int(number) not in SCENARIOS:
            parser.error(f"unknown scenario {number}; known: 1..{len(SCENARIOS)}")
    return args


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


_DEFAULTS_SCRIPT = """
import dataclasses, json
from forkserve.config import Config
print(json.dumps({f.name: f.default for f in dataclasses.fields(Config)}, default=str))
"""


def header_timeout(forkserve_python: str) -> str | None:
    """forkserve's --header-timeout default, in words, if this version has the option."""
    done = subprocess.run(
        [forkserve_python, "-m", "forkserve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )
    if "--header-timeout" not in done.stdout:
        return None
    defaults = subprocess.run(
        [forkserve_python, "-c", _DEFAULTS_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )
    try:
        value = json.loads(defaults.stdout)["header_timeout"]
    except (ValueError, KeyError):
        return "present (default unknown)"
    return f"{value} s (its default)"


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    return done.stdout.strip()


def forkserve_git() -> str:
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "forkserve")
    return f"commit {commit}" + (" with uncommitted changes in forkserve/" if dirty else "")


def forkserve_code() -> str:
    """What identifies the code under test: forkserve/'s tree and its uncommitted changes, so that a
    commit touching only other files does not count as a change."""
    return _git("rev-parse", "HEAD:forkserve") + _git("diff", "HEAD", "--", "forkserve")


def display_command(server: FaultServer, python: str) -> str:
    argv = server.build(python, 0, Knobs()).argv
    text = shlex.join(argv).replace(f"{python} -m ", "")
    return text.replace("127.0.0.1:0", "127.0.0.1:PORT").replace("--port 0", "--port PORT")


def scenario_extras(server: FaultServer, python: str) -> str:
    knobs = {
        "2": Knobs(hung_timeout=True),
        "3": Knobs(max_memory_mb=200),
        "9": Knobs(backlog=16),
        "10": Knobs(log_file="FILE", access_log=True),
    }
    parts = []
    base = set(server.build(python, 0, Knobs()).applied)
    for number, k in knobs.items():
        cmd = server.build(python, 0, k)
        added = [a for a in cmd.applied if a not in base]
        missing = list(cmd.missing.values())
        if added or missing:
            parts.append(f"{number}: " + ", ".join(added + [f"n/a: {m}" for m in missing]))
    return "; ".join(parts) or "—"


def build_meta(args: argparse.Namespace, ctx: Ctx, servers: list[FaultServer]) -> dict[str, Any]:
    by_python: dict[str, list[str]] = {}
    for server in servers:
        packages = by_python.setdefault(ctx.interp(server), [])
        for package in (server.package, "uvicorn", *SUPPORT_PACKAGES):
            if package not in packages:
                packages.append(package)
    return {
        "command": f"python -m benchmarks.faults {shlex.join(sys.argv[1:])}".strip(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "versions": {python: package_versions(python, pkgs) for python, pkgs in by_python.items()},
        "forkserve_git": forkserve_git(),
        "header_timeout": ctx.header_timeout,
        "quick": ctx.quick,
        "took_s": 0.0,
        "servers": {
            s.name: {
                "command": display_command(s, ctx.interp(s)),
                "expected": s.expected_processes,
                "note": s.note,
                "extra": scenario_extras(s, ctx.interp(s)),
            }
            for s in servers
        },
        "scenarios": {str(n): {"title": sc.title, "what": sc.what} for n, sc in SCENARIOS.items()},
    }


def write_page(meta: dict[str, Any], rows: list[dict[str, Any]], output: Path) -> None:
    intro, notes = split_page(output.read_text()) if output.exists() else (DEFAULT_INTRO, "\n")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(meta, rows, intro, notes))


def _progress(row: Row) -> None:
    status = "ERROR " + (row.error or "").splitlines()[0] if row.error else row.recovery
    failed = "" if row.ok is None else f"ok {row.ok} failed {row.failed} "
    print(
        f"[{row.scenario:2d}] {row.server:17} {row.seconds:5.1f}s {failed}| {status} | {row.leftovers}"
        + (f" | {'; '.join(row.notes)}" if row.notes else ""),
        file=sys.stderr,
        flush=True,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    output = Path(args.output)
    if args.render:
        payload = json.loads(Path(args.render).read_text())
        write_page(payload["meta"], payload["rows"], output)
        return 0
    # TERM and INT unwind through the finally blocks that stop the servers and clients.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    logs_dir = RESULTS_DIR / f"faults-{stamp}"
    logs_dir.mkdir(parents=True, exist_ok=True)
    forkserve_python = args.forkserve_python or args.python
    servers = [SERVERS[name] for name in _split(args.servers)]
    ctx = Ctx(
        python=args.python,
        forkserve_python=forkserve_python,
        logs_dir=logs_dir,
        quick=args.quick,
        header_timeout=header_timeout(forkserve_python) if "forkserve" in args.servers else None,
    )
    meta = build_meta(args, ctx, servers)
    code_at_start = forkserve_code()
    missing = [
        f"{s.name} ({s.package} not installed in {ctx.interp(s)})"
        for s in servers
        if meta["versions"][ctx.interp(s)].get(s.package) is None
    ]
    if missing:
        sys.exit("cannot run: " + "; ".join(missing))
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    raw = logs_dir / "results.json"
    try:
        for number in (int(n) for n in _split(args.scenarios)):
            for server in servers:
                row = run_scenario(ctx, SCENARIOS[number], server)
                _check_clean(ctx, row)
                _progress(row)
                rows.append(asdict(row))
                meta["took_s"] = time.monotonic() - t0
                raw.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    except KeyboardInterrupt:
        print(f"interrupted; {len(rows)} rows saved to {raw}", file=sys.stderr)
        return 130
    meta["took_s"] = time.monotonic() - t0
    if forkserve_code() != code_at_start:
        # Someone changed forkserve during the run: the figures mix two versions.
        meta["forkserve_git"] += f"; forkserve/ **changed during the run**, now {forkserve_git()}"
        print(f"warning: forkserve changed during the run: {meta['forkserve_git']}", file=sys.stderr)
    raw.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    write_page(meta, rows, output)
    print(f"wrote {output} and {raw.relative_to(REPO_ROOT)}", file=sys.stderr)
    return 0 if not any(r["error"] for r in rows) else 1


def _check_clean(ctx: Ctx, row: Row) -> None:
    """Nothing of ours may outlive a scenario: a leftover would disturb every later one."""
    left = []
    for pgid in ctx.pgids:
        for proc in group_members(pgid):
            left.append(f"{proc.pid} {cmdline_of(proc)[:80]}")
            with contextlib.suppress(psutil.Error):
                proc.kill()
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if APP_MODULE in cmdline_of(proc) and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {cmdline_of(proc)[:80]}")
                proc.kill()
    if left:
        row.notes.append(f"runner killed leftovers after the scenario: {'; '.join(left)}")
        print(f"    warning: leftovers killed: {'; '.join(left)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
