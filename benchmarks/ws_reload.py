"""WebSockets through a reload: N reconnecting clients, one SIGHUP, how many stay connected.

Each server runs ``benchmarks.apps_ws:app`` with 2 workers. N asyncio clients (the ``websockets``
package, in a process of their own) connect, learn the pid of their worker, and reconnect as
soon as they are closed (after 0-100 ms of jitter, with back-off on a failed attempt). Once all
are connected the master gets SIGHUP; the client process samples how many clients are connected
every 10 ms until every client is connected to a worker that did not exist before the signal (or
``--limit`` seconds pass). Reported per server:

* lowest connected: the fewest clients connected at one moment during the reload (goal: >= 90% N);
* all moved: seconds from the signal until every client is on a new worker;
* failures: connection attempts that did not get through (goal 0);
* spread: clients per new worker once all have moved.

Run from the repository root (both the server and the clients raise RLIMIT_NOFILE to its hard
limit; 4,000 clients need about 4,100 descriptors on each side):

    python -m benchmarks.ws_reload --clients 1000,4000 --output docs/benchmarks-ws.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import resource
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.harness import HOST
from benchmarks.run import REPO_ROOT, machine_info, module_argv, package_versions, server_env

APP = "benchmarks.apps_ws:app"
WORKERS = 2
SERVERS = {
    # forkserve's defaults (kernel balancing, --ws-drain-period auto: a window of 1 s per 100
    # WebSockets each worker holds) and with least-conn balancing.
    "forkserve": f"forkserve {APP} -w {WORKERS} -b {HOST}:{{port}} --no-access-log",
    "forkserve least-conn": f"forkserve {APP} -w {WORKERS} -b {HOST}:{{port}} --no-access-log "
    "--balance least-conn",
    "gunicorn-uvicorn": f"gunicorn -k uvicorn.workers.UvicornWorker -w {WORKERS} -b {HOST}:{{port}} "
    f"--no-control-socket {APP}",
    "uvicorn": f"uvicorn {APP} --workers {WORKERS} --no-access-log --host {HOST} --port {{port}}",
}


@dataclass
class Result:
    server: str
    clients: int
    lowest: int = 0
    moved_after: float | None = None  # None: not every client moved within --limit
    failures: int = 0
    spread: tuple[int, ...] = ()
    closes: int = 0
    close_codes: dict[str, int] | None = None
    error: str = ""


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ------------------------------------------------------------------ the client process


async def _fleet(
    url: str, count: int, conn: multiprocessing.connection.Connection, limit: float
) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    on: dict[int, int] = {}  # client -> worker pid it is connected to now
    failures = 0
    codes: dict[str, int] = {}
    stop_at = time.monotonic() + 60 + limit  # every client loop ends by itself

    async def client(index: int) -> None:
        nonlocal failures
        backoff = 0.05
        await asyncio.sleep(random.uniform(0, 2.0))  # do not open N connections in one burst
        while time.monotonic() < stop_at:
            try:
                async with connect(url, open_timeout=10, close_timeout=5, ping_interval=None) as ws:
                    on[index] = int(await ws.recv())
                    backoff = 0.05
                    with contextlib.suppress(Exception):
                        await ws.wait_closed()
                    on.pop(index, None)
                    rcvd = ws.protocol.close_rcvd
                    key = str(rcvd.code) if rcvd is not None else "none"
                    codes[key] = codes.get(key, 0) + 1
            except Exception:
                on.pop(index, None)
                failures += 1
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(2.0, backoff * 2)
                continue
            await asyncio.sleep(random.uniform(0, 0.1))

    tasks = [asyncio.create_task(client(i)) for i in range(count)]
    loop = asyncio.get_running_loop()
    try:
        deadline = time.monotonic() + 60
        while len(on) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        old = set(on.values())
        codes.clear()
        failures = 0
        conn.send({"connected": len(on), "old": sorted(old)})
        await loop.run_in_executor(None, conn.recv)  # the signal has been sent
        start = time.monotonic()
        lowest = len(on)
        moved_after = None
        while time.monotonic() - start < limit:
            current = len(on)
            lowest = min(lowest, current)
            if current == count and not old & set(on.values()):
                moved_after = time.monotonic() - start
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)  # let stragglers settle before counting the spread
        spread: dict[int, int] = {}
        for pid in on.values():
            spread[pid] = spread.get(pid, 0) + 1
        return {
            "lowest": lowest,
            "moved_after": moved_after,
            "failures": failures,
            "spread": sorted(spread.values()),
            "closes": sum(codes.values()),
            "close_codes": dict(codes),
        }
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _client_main(url: str, count: int, conn: multiprocessing.connection.Connection, limit: float) -> None:
    raise_fd_limit()
    try:
        conn.send(asyncio.run(_fleet(url, count, conn, limit)))
    except Exception as exc:  # reported, not raised: the parent prints it beside the server's log
        conn.send({"error": f"{type(exc).__name__}: {exc}"})


# ------------------------------------------------------------------ one run


def run_one(name: str, count: int, python: str, workdir: Path, limit: float) -> Result:
    result = Result(name, count)
    port = harness.free_port()
    command = module_argv(python, SERVERS[name].format(port=port))
    log_path = workdir / f"{name.replace(' ', '-')}-{count}.log"
    raise_fd_limit()  # inherited by the server and its workers
    proc = harness.start_server(command, REPO_ROOT, server_env(), log_path)
    try:
        harness.wait_until_serving(proc, port, 30)
        harness.wait_for_workers(proc.pid, WORKERS + 1, 30)
        parent, child = multiprocessing.Pipe()
        clients = multiprocessing.get_context("spawn").Process(
            target=_client_main, args=(f"ws://{HOST}:{port}/", count, child, limit)
        )
        clients.start()
        try:
            if not parent.poll(90):
                raise RuntimeError("clients did not report")
            ready = parent.recv()
            if "error" in ready or ready["connected"] < count:
                raise RuntimeError(
                    f"only {ready.get('connected')} of {count} connected {ready.get('error', '')}"
                )
            os.kill(proc.pid, signal.SIGHUP)
            parent.send("sent")
            if not parent.poll(limit + 60):
                raise RuntimeError("clients did not finish")
            report = parent.recv()
            if "error" in report:
                raise RuntimeError(report["error"])
            result.lowest = report["lowest"]
            result.moved_after = report["moved_after"]
            result.failures = report["failures"]
            result.spread = tuple(report["spread"])
            result.closes = report["closes"]
            result.close_codes = report["close_codes"]
        finally:
            clients.join(30)
            if clients.is_alive():
                clients.kill()
    except Exception as exc:
        result.error = f"{exc}\n{harness.tail(log_path)}"
    finally:
        harness.stop_and_check(proc, port, 40)
    return result


# ------------------------------------------------------------------ the page


def render(results: list[Result], meta: dict[str, Any]) -> str:
    lines = [
        "# Benchmark: WebSockets through a reload",
        "",
        "Generated by `python -m benchmarks.ws_reload "
        f"--clients {','.join(str(n) for n in meta['clients'])}` on {meta['date']}. "
        f"{meta['machine']}. **A busy machine**: other sessions were running builds and tests at the "
        "same time, so read the shape of the numbers rather than their last digit; each figure is one run.",
        "",
        f"Each server: `benchmarks.apps_ws:app`, {WORKERS} workers; N clients that reconnect when closed "
        "(0-100 ms jitter, back-off on a failed attempt), then one SIGHUP to the master. The commands:",
        "",
    ]
    lines += [f"- {name}: `python -m {cmd.format(port='PORT')}`" for name, cmd in SERVERS.items()]
    lines += [
        "",
        "| server | N | lowest connected | lowest % of N | all on new workers after | reconnect failures | "
        "clients per new worker after | closes (codes) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.server} | {r.clients} | failed: {r.error.splitlines()[0]} | | | | | |")
            continue
        moved = f"{r.moved_after:.2f} s" if r.moved_after is not None else f"not within {meta['limit']:.0f} s"
        codes = ", ".join(f"{code}: {n}" for code, n in sorted((r.close_codes or {}).items()))
        lines.append(
            f"| {r.server} | {r.clients} | {r.lowest} | {100 * r.lowest / r.clients:.1f}% | {moved} | "
            f"{r.failures} | {' / '.join(map(str, r.spread))} | {r.closes} ({codes}) |"
        )
    lines += ["", f"Versions: {meta['versions']}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", default="1000,4000", help="comma list of N")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma list")
    parser.add_argument("--python", default=sys.executable, help="interpreter that has every server")
    parser.add_argument("--limit", type=float, default=30.0, help="seconds to wait for every client to move")
    parser.add_argument("--output", default="docs/benchmarks-ws.md")
    args = parser.parse_args()
    counts = [int(n) for n in args.clients.split(",")]
    names = [n.strip() for n in args.servers.split(",")]
    workdir = REPO_ROOT / "benchmarks" / "results" / "ws"
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for count in counts:
        for name in names:
            result = run_one(name, count, args.python, workdir, args.limit)
            print(json.dumps(asdict(result)), flush=True)
            results.append(result)
    meta = {
        "clients": counts,
        "date": time.strftime("%Y-%m-%d"),
        "machine": "{nproc} CPUs ({cpu_model}), Linux {kernel}".format(**machine_info()),
        "limit": args.limit,
        "versions": ", ".join(
            f"{k} {v}"
            for k, v in package_versions(
                args.python, ["forkserve", "gunicorn", "uvicorn", "websockets"]
            ).items()
        ),
    }
    Path(args.output).write_text(render(results, meta))
    with contextlib.suppress(OSError):
        (workdir / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=1))


if __name__ == "__main__":
    main()
