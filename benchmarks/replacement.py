"""How long a killed worker's replacement takes to serve, with the zygote kept and with
``--zygote-idle-exit`` (where the replacement waits for a fresh zygote to import the app).

Run from the repository root:

    python -m benchmarks.replacement --app heavy --kills 3

For each setting it starts forkserve, waits until the workers have lived past the crash back-off's
"stable" age (so a replacement is started at once) and, with the setting, until the zygote has
exited; then it SIGKILLs one worker by pid and times, from the kill, until the worker that replaces
it logs its lifespan startup complete and answers. Prints one line per kill and the medians.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import harness, sampling
from benchmarks.run import APPS, REPO_ROOT, forkserve_command, server_env
from forkserve.policy.backoff import STABLE_AFTER

SETTINGS: dict[str, list[str]] = {"zygote kept": [], "--zygote-idle-exit 1": ["--zygote-idle-exit", "1"]}
POLL = 0.005


def titles(pid: int) -> dict[int, str]:
    found = {}
    for process in sampling.process_tree(pid)[1:]:
        try:
            found[process.pid] = " ".join(process.cmdline())
        except Exception:  # gone between the listing and the look
            continue
    return found


def workers(pid: int) -> set[int]:
    return {child for child, title in titles(pid).items() if "forkserve: worker" in title}


def wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(POLL)
    raise harness.ServerError(f"timed out after {timeout:g} s waiting for {what}")


def startup_complete(log: Path, pid: int) -> bool:
    return (
        re.search(rf"^\S+ \S+ \S+ \[{pid}\] .*Application startup complete", log.read_text(), re.M)
        is not None
    )


def kill_one(proc: subprocess.Popen[bytes], port: int, log: Path, count: int, zygote_exits: bool) -> float:
    """Kill one settled worker; seconds until its replacement has started up and the server answers."""

    def settled() -> set[int]:
        found = workers(proc.pid)
        return found if len(found) == count else set()

    current = wait(settled, 60, "the workers")
    if zygote_exits:
        wait(lambda: not any("zygote" in t for t in titles(proc.pid).values()), 60, "the zygote to exit")
    # A worker younger than this is a crash loop's: its replacement would wait out a back-off.
    time.sleep(STABLE_AFTER + 0.5)
    started = time.monotonic()
    os.kill(min(current), signal.SIGKILL)
    (replacement,) = wait(lambda: workers(proc.pid) - current, 120, "the replacement's process")
    wait(lambda: startup_complete(log, replacement), 120, "the replacement's startup")
    wait(lambda: harness.answers(port), 10, "an answer")
    return time.monotonic() - started


def measure(flags: list[str], app: str, count: int, kills: int, logs: Path) -> list[float]:
    port = harness.free_port()
    command = [*forkserve_command(sys.executable, port, count, app), *flags]
    log = logs / f"replacement-{len(flags)}.log"
    proc = harness.start_server(command, REPO_ROOT, server_env(), log)
    seconds = []
    try:
        harness.wait_until_serving(proc, port, 60)
        for _ in range(kills):
            seconds.append(kill_one(proc, port, log, count, zygote_exits=bool(flags)))
            name = " ".join(flags) or "zygote kept"
            print(f"  {name:24} replacement served {seconds[-1]:.3f} s after the kill", flush=True)
    finally:
        harness.stop_and_check(proc, port, 30)
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--app", default="heavy", choices=sorted(APPS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as logs:
        for name, flags in SETTINGS.items():
            results[name] = measure(flags, APPS[args.app].target, args.workers, args.kills, Path(logs))
    for name, seconds in results.items():
        print(
            f"{name:24} median {statistics.median(seconds):.3f} s over {len(seconds)} kills "
            f"(min {min(seconds):.3f}, max {max(seconds):.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
