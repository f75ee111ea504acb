"""Where a worker's time goes per request: py-spy samples of one forkserve worker under wrk.

Starts forkserve with one worker, loads it with wrk, samples the worker with py-spy (non-blocking,
so the worker runs at full speed) and reads the worker's CPU time from /proc. Each sample is
charged to a layer by its innermost frame, and the layer's share of samples times the worker's
CPU time per request gives microseconds per request. With ``--native`` the C frames count too
(the parser, uvloop, the kernel's socket calls); without it their time lands on the Python
function that called them.

    python -m benchmarks.profile_http --http fast --app hello --seconds 8
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

from benchmarks import harness
from benchmarks.harness import HOST
from benchmarks.run import REPO_ROOT, module_argv, server_env

APPS = {"hello": ("benchmarks.apps:app", "/"), "starlette": ("benchmarks.apps_starlette:app", "/json")}

# (layer, substrings of a frame, any of which puts the sample in the layer); first match wins,
# tried from the innermost frame outwards, so a C frame under a Python one is charged to C.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("kernel: socket send", ("sendmsg", "__send", "__libc_send", "uv__write", "uv__try_write", "writev")),
    ("kernel: socket receive", ("recv", "uv__read")),
    ("epoll/event loop (C)", ("epoll", "uv__io_poll", "uv_run", "uv__run")),
    ("httptools parser (C)", ("llhttp", "parser.cpython", "cb_on_")),
    ("app", ("benchmarks/apps", "starlette/", "anyio/")),
    ("proxy-headers middleware", ("proxy_headers.py",)),
    ("forkserve health/metrics wrappers", ("forkserve/worker.py",)),
    ("ASGI send (response head and body)", ("send (", "_head (", "_flush_head (", "send_500_response (")),
    ("ASGI receive", ("receive (",)),
    ("task start/finish (run_asgi, create_task)", ("run_asgi (", "_start_asgi_task (")),
    (
        "request parsing callbacks and scope",
        (
            "on_url (",
            "on_header (",
            "on_headers_complete (",
            "on_message_begin (",
            "on_message_complete (",
            "on_body (",
        ),
    ),
    (
        "response complete, keep-alive timer",
        ("on_response_complete (", "_unset_keepalive", "timeout_keep_alive"),
    ),
    ("data_received (head limits, parser call)", ("data_received (",)),
    ("asyncio tasks/events (Python)", ("asyncio/",)),
    ("connection setup/teardown", ("connection_made (", "connection_lost (", "__init__ (")),
]


def layer_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for layer, needles in LAYERS:
            if any(needle in frame for needle in needles):
                return layer
    return "other (event loop and uvloop, not attributed)"


def worker_pid(master: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in harness.process_tree(master):
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
        spy += ["--duration", str(args.seconds), "--rate", str(args.rate), "--nonblocking"]
        if args.native:
            spy.append("--native")
        cpu_before = sum(psutil.Process(pid).cpu_times()[:2])
        sampler = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        result = harness.run_wrk(port, 1, args.connections, args.seconds, path)
        cpu = sum(psutil.Process(pid).cpu_times()[:2]) - cpu_before
        _, errors = sampler.communicate(timeout=args.seconds + 60)
        if sampler.returncode != 0 or not raw.exists():
            raise harness.ServerError(f"py-spy failed: {errors.strip()[-500:]}")
    finally:
        harness.stop_and_check(proc, port, 10.0)
    return report(args, raw, cpu, result)


def report(args: argparse.Namespace, raw: Path, cpu: float, result: harness.WrkResult) -> str:
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[layer_of(stack.split(";"))] += int(count)
    total = sum(counts.values()) or 1
    per_request = cpu / max(result.requests, 1) * 1e6
    lines = [
        f"`--http {args.http}`, app `{args.app}`: {result.requests_per_sec:,.0f} req/s on one worker "
        f"(wrk -t1 -c{args.connections}), worker CPU {per_request:.1f} µs per request, {total} samples"
        + (" (native frames)" if args.native else ""),
        "",
        "| layer | share | µs/request |",
        "| --- | ---: | ---: |",
    ]
    for layer, count in counts.most_common():
        lines.append(f"| {layer} | {count / total:.0%} | {count / total * per_request:.1f} |")
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
