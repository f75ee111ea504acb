"""A smoke run of benchmarks.ws_throughput with tiny settings: real servers, real client processes,
every figure present and every message and handshake accounted for. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_tiny_run_measures_forkserve_and_uvicorn(tmp_path: Path) -> None:
    page, results = tmp_path / "ws.md", tmp_path / "results"
    argv = [
        sys.executable, "-m", "benchmarks.ws_throughput", "--servers", "forkserve,uvicorn",
        "--rounds", "1", "--warmup", "0.2", "--duration", "0.5", "--connections", "4", "--sizes", "64,20000",
        "--cycles", "20", "--cycle-concurrency", "2", "--output", str(page), "--results", str(results),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    (raw,) = results.glob("ws-throughput-*.json")
    runs = json.loads(raw.read_text())["runs"]
    assert [r["server"] for r in runs] == ["forkserve", "uvicorn"]
    for r in runs:
        assert r["error"] is None and not r["killed"]
        assert [e["size"] for e in r["echo"]] == [64, 20000]
        for echo in r["echo"]:
            assert echo["error"] is None and echo["failures"] == {}
            assert echo["messages"] > 0 and echo["p99_ms"] >= echo["p50_ms"] > 0
            assert echo["server_cpu_us"] > 0 and echo["client_busiest"] > 0
        assert r["cycles"]["cycles"] == 20 and r["cycles"]["failures"] == {}
    text = page.read_text()
    for heading in ("## 64 B messages, 4 connections", "## 20000 B messages", "## Handshakes (20 connect"):
        assert heading in text
    assert "| forkserve |" in text and "| uvicorn |" in text and "| 1.00 |" in text
