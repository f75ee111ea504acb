"""The servers at the end of a resource: a process limit at start and on HUP, the fd limit on HUP,
a lifespan startup that never ends. Prints one Markdown table (docs/reliability.md, "Resource limits").

    python -m benchmarks.resource_limits            # as root (setpriv, prlimit); ~3 min

Each row: the server with 2 workers, the harm, then a bounded window in which the runner requests
``/`` every 0.1 s and counts ok and failed, the log lines per second, and whether the server exited
(and with what code). Processes are started in their own session and killed by group at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.harness import free_port

REPO = Path(__file__).resolve().parents[1]
APPS = REPO / "tests" / "integration" / "apps"
UNPRIVILEGED = 61999  # a uid no process runs as: RLIMIT_NPROC counts all of a uid's tasks


def argv(server: str, app: str, port: int, python: str) -> list[str]:
    if server == "forkserve":
        return [python, "-m", "forkserve", app, "--app-dir", str(APPS), "-w", "2", "-b", f"127.0.0.1:{port}",
                "--timeout", "5"]  # fmt: skip
    if server == "gunicorn-uvicorn":
        return [python, "-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "2",
                "--chdir", str(APPS), "-b", f"127.0.0.1:{port}", "--timeout", "5", "--no-control-socket",
                app]  # fmt: skip
    return [python, "-m", "uvicorn", app, "--app-dir", str(APPS), "--workers", "2", "--port", str(port),
            "--host", "127.0.0.1"]  # fmt: skip


class Run:
    def __init__(self, server: str, app: str, *, nproc: int = 0) -> None:
        self.port = free_port()
        self.log_path = Path(tempfile.mkstemp(prefix=f"limits-{server}-", suffix=".log")[1])
        python = sys.executable
        env = dict(os.environ)
        prefix: list[str] = []
        if nproc:
            # A system interpreter the unprivileged uid can run, importing this checkout and our packages.
            python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
            env["PYTHONPATH"] = os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"]])
            prefix = ["setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups",
                      "env", "-C", "/"]  # fmt: skip

        def limit() -> None:
            if nproc:
                resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                prefix + argv(server, app, self.port, python), stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True, preexec_fn=limit,
            )  # fmt: skip
        self.ok = self.failed = 0

    def lines(self) -> int:
        return len(self.log_path.read_bytes().splitlines())

    def request(self) -> bool:
        try:
            good = httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1).status_code == 200
        except httpx.HTTPError:
            good = False
        if good:
            self.ok += 1
        else:
            self.failed += 1
        return good

    def watch(self, seconds: float) -> tuple[float, int | None]:
        """Request every 0.1 s for SECONDS (or until the server exits): (log lines/s, exit code)."""
        start, lines = time.monotonic(), self.lines()
        while time.monotonic() - start < seconds and self.proc.poll() is None:
            self.request()
            time.sleep(0.1)
        return (self.lines() - lines) / (time.monotonic() - start), self.proc.poll()

    def wait_serving(self, seconds: float = 15) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log_path.unlink()


def outcome(rate: float, code: int | None, run: Run) -> str:
    ended = "still running" if code is None else f"exited {code}"
    return f"{ended}; {rate:.1f} log lines/s; requests ok {run.ok}, failed {run.failed}"


# Room for the server's own tasks before its first worker, and none for a worker: forkserve's master
# and its control-socket thread, and the zygote; gunicorn's arbiter; uvicorn's supervisor and
# multiprocessing's resource tracker.
ROOM_BEFORE_WORKERS = {"forkserve": 3, "gunicorn-uvicorn": 1, "uvicorn": 2}


def nproc_at_start(server: str) -> str:
    nproc = ROOM_BEFORE_WORKERS[server]
    run = Run(server, "hello:app", nproc=nproc)
    try:
        rate, code = run.watch(10)
        return f"{outcome(rate, code, run)} (limit {nproc})"
    finally:
        run.stop()


# The server's tasks with 2 workers, and one more (a reload needs more than one). forkserve's double
# fork needs one more than its steady state while a worker is forked.
ROOM_FOR_TWO_WORKERS = {"forkserve": 6, "gunicorn-uvicorn": 4, "uvicorn": 5}


def nproc_on_hup(server: str) -> str:
    nproc = ROOM_FOR_TWO_WORKERS[server]
    run = Run(server, "hello:app", nproc=nproc)
    try:
        if not run.wait_serving():
            return f"did not start (limit {nproc})"
        time.sleep(2)  # every worker up
        ps = ["ps", "-L", "-u", str(UNPRIVILEGED), "-o", "lwp="]
        tasks = len(subprocess.run(ps, capture_output=True, text=True).stdout.split())
        os.kill(run.proc.pid, signal.SIGHUP)
        rate, code = run.watch(15)
        return f"{outcome(rate, code, run)} (limit {nproc}; {tasks} tasks before the HUP)"
    finally:
        run.stop()


def fds_on_hup(server: str) -> str:
    run = Run(server, "hello:app")
    try:
        if not run.wait_serving():
            return "did not start"
        soft, hard = resource.prlimit(run.proc.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(
            run.proc.pid, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{run.proc.pid}/fd")), hard)
        )
        os.kill(run.proc.pid, signal.SIGHUP)
        rate, code = run.watch(10)
        if code is not None:
            return outcome(rate, code, run)
        resource.prlimit(run.proc.pid, resource.RLIMIT_NOFILE, (soft, hard))
        os.kill(run.proc.pid, signal.SIGHUP)
        _, code = run.watch(5)
        after = "serving" if code is None and run.request() else "not serving"
        return f"{outcome(rate, None, run)}; limit raised, HUP: {after}"
    finally:
        run.stop()


def never_ending_startup(server: str) -> str:
    run = Run(server, "startup_never_ends:app")
    try:
        rate, code = run.watch(30)
        return outcome(rate, code, run)
    finally:
        run.stop()


SCENARIOS = {
    "RLIMIT_NPROC at start (no room for a worker), 10 s": nproc_at_start,
    "RLIMIT_NPROC reached, then HUP, 15 s": nproc_on_hup,
    "fd limit reached, then HUP, 10 s": fds_on_hup,
    "lifespan startup never ends (`--timeout 5` where there is one), 30 s": never_ending_startup,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="forkserve,gunicorn-uvicorn,uvicorn")
    parser.add_argument("--scenarios", default="", help="substrings of scenario names; all when empty")
    args = parser.parse_args()
    print("| scenario | server | outcome |\n| --- | --- | --- |")
    for name, scenario in SCENARIOS.items():
        if args.scenarios and not any(part in name for part in args.scenarios.split(",")):
            continue
        for server in args.servers.split(","):
            print(f"| {name} | {server} | {scenario(server)} |", flush=True)


if __name__ == "__main__":
    main()
