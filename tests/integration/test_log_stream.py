"""The one log stream: JSON lines that parse, lifecycle events as data, access latency, whole lines."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import wait_until

LINE = re.compile(r"^chatty pid=(\d+) (\d{4}) x{300} end$")


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_log_lines_parse_and_carry_role_pid_worker_generation(serve, tmp_path):
    sock = tmp_path / "ctl.sock"
    server = serve("-w", "2", "--log-format", "json", "--access-log", "--control-socket", str(sock))

    def started() -> list[dict]:
        lines = json_lines(server.log())
        return [line for line in lines if line["message"] == "Application startup complete."]

    wait_until(lambda: len(started()) >= 2, 15, "two workers in the JSON log", server.tail)
    assert server.get("/json").status_code == 200
    done = subprocess.run(
        [sys.executable, "-m", "forkserve", "ctl", "--control-socket", str(sock), "scale", "+1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    wait_until(
        lambda: any(line.get("path") == "/json" for line in json_lines(server.log())), 5, "access line"
    )
    lines = json_lines(server.log())  # every line of the stream is one JSON object
    for line in lines:
        assert {"time", "level", "role", "pid", "worker", "generation", "logger", "message"} <= line.keys()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", line["time"])
    roles = {line["role"] for line in lines}
    assert {"master", "worker"} <= roles
    workers = [line for line in lines if line["role"] == "worker"]
    assert {line["worker"] for line in workers} == {1, 2, 3}
    assert {line["generation"] for line in workers} == {1}
    assert all(line["pid"] != server.pid for line in workers)
    [access] = [line for line in lines if line.get("path") == "/json"]
    assert access["status"] == 200 and access["method"] == "GET"
    assert isinstance(access["latency_ms"], float) and access["latency_ms"] >= 0
    [scaled] = [line for line in lines if line.get("event") == "scaled"]
    assert (scaled["before"], scaled["after"], scaled["reason"], scaled["pid"]) == (
        2,
        3,
        "control",
        server.pid,
    )
    ready = [line for line in lines if line.get("event") == "worker_ready"]
    assert sorted(line["worker_id"] for line in ready) == [1, 2, 3]
    assert all(line["generation"] == 1 and line["worker_pid"] != server.pid for line in ready)


def test_text_lines_name_worker_and_generation_and_access_lines_have_latency(serve):
    server = serve("-w", "1", "--access-log", wait=1)
    assert server.get("/timed").status_code == 200
    server.wait_log(
        r'^.*\[worker 1 gen 1\] \[INFO\] 127\.0\.0\.1:\d+ - "GET /timed HTTP/1\.1" 200 \d+\.\d\dms$'
    )
    assert "[master] [INFO]" in server.log()


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["PYTHONUNBUFFERED", "buffered"])
def test_print_output_of_workers_never_tears_mid_line(serve, unbuffered):
    server = serve("-w", "3", app="chatty:app", env={"PYTHONUNBUFFERED": unbuffered}, wait=3)
    server.wait_log(r"^chatty pid=\d+ done$", count=3)
    printed = [line for line in server.log().splitlines() if "chatty pid=" in line or "xxxxxxxxxx" in line]
    torn = [line for line in printed if not LINE.match(line) and not line.endswith(" done")]
    assert not torn, f"{len(torn)} torn lines, e.g. {torn[:2]}"
    per_worker: dict[str, list[int]] = {}
    for line in printed:
        match = LINE.match(line)
        if match:
            per_worker.setdefault(match[1], []).append(int(match[2]))
    assert len(per_worker) == 3
    assert all(numbers == list(range(400)) for numbers in per_worker.values())
