"""A smoke run of benchmarks/c10k.py: forkserve with 200 idle connections, 2 s of wrk per cell.

No timing is asserted: only that the runner opens the idle connections, keeps them, reads the
per-worker split and writes its page and raw JSON, and that it leaves no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


def test_c10k_smoke_run(tmp_path: Path) -> None:
    page, results = tmp_path / "c10k.md", tmp_path / "results"
    command = [sys.executable, "-m", "benchmarks.c10k", "--quick", "--servers", "forkserve", "--idle", "200",
               "--output", str(page), "--results", str(results)]  # fmt: skip
    log = tmp_path / "runner.log"
    with log.open("wb") as out:
        runner = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        assert runner.wait(timeout=90) == 0, log.read_text()
    finally:
        descendants = []
        if runner.poll() is None:
            descendants = psutil.Process(runner.pid).children(recursive=True)
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(10)
        for proc in descendants:
            proc.kill()  # servers and the idle client run in sessions of their own
    (raw,) = results.glob("c10k-*.json")
    cells = json.loads(raw.read_text())["cells"]
    assert [(c["server"], c["idle"], c["error"]) for c in cells] == [
        ("forkserve", 0, None),
        ("forkserve", 200, None),
    ]
    held = cells[1]
    assert held["opened"] == held["open_after"] == 200
    assert sum(held["split"]) >= 200  # the idle ones, and any of wrk's not yet closed
    assert held["requests"] > 0
    text = page.read_text()
    assert "| forkserve | 200 | 1/1 |" in text
    assert "200 / 200" in text
    # The runner checked that each server's group is gone and its port closed (else the cell has an
    # error); the idle client, started with the cell's port, is gone too.
    clients = [
        f"--port {held['port']}" in " ".join(p.info["cmdline"] or [])
        for p in psutil.process_iter(["cmdline"])
    ]
    assert not any(clients)
