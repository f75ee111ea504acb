"""Huge trailer fields and chunk extensions against forkserve's protocols, uvicorn and gunicorn.

Prints one Markdown table (docs/reliability.md, "Hostile input"): per server and attack, what the
client got back and how much the serving process's peak RSS grew.

    python -m benchmarks.hostile_limits         # ~1 min; gunicorn rows need gunicorn installed

Each row starts the server with one worker, sends a chunked POST whose trailer field (or chunk
extension) is 40 MiB, from a thread, while reading the answer for at most 20 s, then compares the
peak RSS (``VmHWM``) of every process of the server with its value before. Processes are started
in their own session and killed by group at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from benchmarks.harness import free_port

REPO = Path(__file__).resolve().parents[1]
APPS = REPO / "tests" / "integration" / "apps"
HUGE = 40 << 20
POST = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
ATTACKS = {
    "40 MiB trailer field": POST + b"5\r\nhello\r\n0\r\nX-Huge: " + b"v" * HUGE,
    "40 MiB chunk extension": POST + b"5;ext=" + b"e" * HUGE,
}
ANSWER_WINDOW = 20.0


def argv(server: str, port: int) -> list[str]:
    python, app = sys.executable, "http_edges:app"
    if server.startswith("forkserve"):
        http = server.split()[1]
        return [python, "-m", "forkserve", app, "--app-dir", str(APPS), "-w", "1", "-b", f"127.0.0.1:{port}",
                "--http", http]  # fmt: skip
    if server.startswith("gunicorn"):
        return [python, "-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", "1", "--chdir",
                str(APPS), "-b", f"127.0.0.1:{port}", "--no-control-socket", app]  # fmt: skip
    http = server.split()[1]
    return [python, "-m", "uvicorn", app, "--app-dir", str(APPS), "--port", str(port), "--host", "127.0.0.1",
            "--http", http]  # fmt: skip


def peaks(root: psutil.Process) -> dict[int, int]:
    """Peak RSS in KiB of ROOT and its descendants, by pid."""
    found = {}
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(OSError, psutil.Error), open(f"/proc/{process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    found[process.pid] = int(line.split()[1])
    return found


def attack(port: int, data: bytes) -> str:
    sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WINDOW)
    sent = threading.Event()

    def flood() -> None:
        with contextlib.suppress(OSError):
            sock.sendall(data)
            sent.set()

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    try:
        answer = sock.recv(4096)
    except TimeoutError:
        return f"no answer in {ANSWER_WINDOW:.0f} s" + ("; all 40 MiB read" if sent.is_set() else "")
    except OSError as exc:
        return f"reset ({exc.strerror})"
    finally:
        sock.close()
    if not answer:
        return "closed, no answer"
    status = answer.split(b"\r\n", 1)[0].decode("latin1")
    return status + ("; all 40 MiB read" if sent.is_set() else "")


def row(server: str, name: str, data: bytes) -> str:
    port = free_port()
    with tempfile.TemporaryFile() as log:
        command = argv(server, port)
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return measure(server, name, data, port, psutil.Process(proc.pid))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def measure(server: str, name: str, data: bytes, port: int, root: psutil.Process) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                break
        time.sleep(0.1)
    else:
        return f"| {server} | {name} | did not start | |"
    before = peaks(root)
    answer = attack(port, data)
    after = peaks(root)
    grown = max((after[pid] - before.get(pid, 0) for pid in after), default=0)
    return f"| {server} | {name} | {answer} | +{grown / 1024:.0f} MiB |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    servers = ["forkserve fast", "forkserve httptools", "forkserve h11", "forkserve zttp"]
    servers += ["uvicorn httptools", "uvicorn h11"]
    if importlib.util.find_spec("gunicorn") is not None:
        servers.append("gunicorn + UvicornWorker")
    print("| server | attack | answer | peak RSS |")
    print("| --- | --- | --- | ---: |")
    for server in servers:
        for name, data in ATTACKS.items():
            print(row(server, name, data), flush=True)


if __name__ == "__main__":
    main()
