"""Where a worker's time goes per request: py-spy samples of one forkserve worker under wrk.

Starts forkserve with one worker, loads it with wrk, samples the worker with py-spy and reads
the worker's CPU time from /proc. Each sample is charged to a layer: a system call or the parser
by its C frame (with ``--native``), anything else by its innermost Python function. Samples
waiting in epoll are idle and left out; a layer's share of the busy samples times the worker's
CPU time per request gives microseconds per request.

    python -m benchmarks.profile_http --http fast --app hello --seconds 8 --native
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks import harness, sampling
from benchmarks.harness import HOST
from benchmarks.run import REPO_ROOT, module_argv, server_env

APPS = {
    "hello": ("benchmarks.apps:app", "/"),
    "starlette": ("benchmarks.apps_starlette:app", "/json"),
    "fastapi": ("benchmarks.apps_fastapi:app", "/items/42?q=widgets"),
}

IDLE = "idle: waiting in epoll (not CPU, left out)"
# Native (C) frames that are a layer of their own wherever they are called from: the system calls
# and the parser. Matched against the innermost frames first.
C_LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (IDLE, ("epoll_wait", "epoll_pwait")),
    ("system call: send (write)", ("UVStream__try_write", "UVStream__exec_write", "writev (", "sendmsg (")),
    ("system call: receive (read)", ("uv__read", "recv (")),
    ("httptools parser (C)", ("llhttp",)),
]
# Everything else is charged to the innermost Python function, by its name or file.
PY_LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("app", ("benchmarks/apps", "starlette/", "anyio/", "fastapi/", "pydantic")),
    ("proxy-headers middleware (uvicorn)", ("proxy_headers.py",)),
    ("forkserve health check", ("HealthCheck",)),
    ("ASGI send: response head and body", (".send ", "._head ", "send_500_response")),
    ("ASGI receive", (".receive ",)),
    (
        "task per request: create, run, finish",
        ("run_asgi", "_start_asgi_task", "asyncio/tasks.py", "_weakrefset"),
    ),
    (
        "parser callbacks and scope",
        (".on_url ", ".on_header ", ".on_headers_complete ", ".on_message_begin ", ".on_message_complete "),
    ),
    ("response complete, keep-alive timer", ("on_response_complete", "keep_alive", "keepalive")),
    ("data_received (head checks, parser call)", (".data_received ",)),
    ("transport wrapper (lingering close)", ("LingeringTransport",)),
    ("other asyncio (events, locks)", ("asyncio/",)),
    ("connection setup and teardown", ("connection_made", "connection_lost", ".__init__ ")),
]
UNATTRIBUTED = "event loop (uvloop, C) and other"


def layer_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for layer, needles in C_LAYERS:
            if any(needle in frame for needle in needles):
                return layer
        if ".py:" in frame:
            for layer, needles in PY_LAYERS:
                if any(needle in frame for needle in needles):
                    return layer
            return f"other Python ({frame.split(' (')[0]})"
    return UNATTRIBUTED


def worker_pid(master: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in sampling.process_tree(master):
            try:
                if "forkserve: worker" in " ".join(child.cmdline()):
                    return child.pid
            except psutil.Error:
                continue
        time.sleep(0.1)
    raise harness.ServerError("no worker appeared")


def profile(args: argparse.Namespace) -> str:
    app, path = APPS[args.app]
    port = harness.free_port()
    command = module_argv(
        sys.executable, f"forkserve {app} -w 1 -b {HOST}:{port} --no-access-log --http {args.http}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="profile-http-"))
    proc = harness.start_server(command, REPO_ROOT, server_env(), workdir / "server.log")
    try:
        harness.wait_until_serving(proc, port, 30.0)
        pid = worker_pid(proc.pid)
        harness.run_wrk(port, 1, args.connections, 1, path)  # warm up
        raw = workdir / "samples.txt"
        spy = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--output", str(raw)]
        spy += ["--duration", str(args.seconds), "--rate", str(args.rate)]
        # Native stacks need the worker paused for each sample (a few µs, a few hundred times a
        # second); Python-only sampling reads it while it runs.
        spy.append("--native" if args.native else "--nonblocking")
        cpu_before = sum(psutil.Process(pid).cpu_times()[:2])
        sampler = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        result = harness.run_wrk(port, 1, args.connections, args.seconds, path)
        cpu = sum(psutil.Process(pid).cpu_times()[:2]) - cpu_before
        _, errors = sampler.communicate(timeout=args.seconds + 60)
        if sampler.returncode != 0 or not raw.exists():
            raise harness.ServerError(f"py-spy failed: {errors.strip()[-500:]}")
    finally:
        harness.stop_and_check(proc, port, 10.0)
    print(f"samples: {raw}", file=sys.stderr)
    return report(args, raw, cpu, result)


def report(args: argparse.Namespace, raw: Path, cpu: float, result: harness.WrkResult) -> str:
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[layer_of(stack.split(";"))] += int(count)
    idle = counts.pop(IDLE, 0)
    busy = sum(counts.values()) or 1
    per_request = cpu / max(result.requests, 1) * 1e6
    lines = [
        f"`--http {args.http}`, app `{args.app}`: {result.requests_per_sec:,.0f} req/s on one worker "
        f"(wrk -t1 -c{args.connections}), worker CPU {per_request:.1f} µs per request; {busy} busy "
        f"samples ({idle} idle left out)" + (", native frames" if args.native else ""),
        "",
        "| layer | share of busy samples | µs/request |",
        "| --- | ---: | ---: |",
    ]
    for layer, n in counts.most_common():
        if n / busy >= 0.005:
            lines.append(f"| {layer} | {n / busy:.0%} | {n / busy * per_request:.1f} |")
    rest = sum(n for n in counts.values() if n / busy < 0.005)
    if rest:
        lines.append(f"| (layers under 0.5% each) | {rest / busy:.0%} | {rest / busy * per_request:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", default="fast")
    parser.add_argument("--app", choices=sorted(APPS), default="hello")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rate", type=int, default=500, help="samples per second")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--native", action="store_true", help="sample C frames too")
    print(profile(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
