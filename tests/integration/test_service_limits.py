"""The master's side doors under hostile clients and exhausted fds: the control socket and --metrics-bind.

Each test runs a real master and measures it from outside: its threads (/proc/PID/task) and fds
(/proc/PID/fd) while hundreds of clients idle or trickle, its answers to malformed requests, and
how it comes back after its fd limit (lowered with prlimit) was reached.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, wait_until

IDLE_CLIENTS = 300


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def start(serve, tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    metrics = f"127.0.0.1:{free_port()}"
    sock = tmp_path / "ctl.sock"
    server = serve(
        "-w", "1", "--metrics-bind", metrics, "--control-socket", str(sock), *args, env=env, wait=1
    )  # fmt: skip
    server.wait_log("Control socket")
    server.metrics = ("127.0.0.1", int(metrics.rpartition(":")[2]))
    server.metrics_url = f"http://{metrics}"
    server.control = sock
    return server


def ask(sock_path: Path, *requests: bytes, timeout: float = 10.0) -> list[dict]:
    """Send each request line on one connection; the answers, one per line."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(timeout)
        conn.connect(str(sock_path))
        stream = conn.makefile("rwb")
        answers = []
        for request in requests:
            stream.write(request)
            stream.flush()
            answers.append(json.loads(stream.readline()))
        return answers


def raw_http(address: tuple[str, int], data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(address, timeout=timeout) as conn:
        conn.sendall(data)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@contextlib.contextmanager
def clients(count: int, family: int, address: object) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            conn = socket.socket(family, socket.SOCK_STREAM)
            # Blocking: a unix socket's connect fails at once (EAGAIN) on a full queue otherwise.
            conn.connect(address)
            conn.settimeout(10)
            opened.append(conn)
        yield opened
    finally:
        for conn in opened:
            conn.close()


def closed_by_server(conn: socket.socket) -> bool:
    conn.setblocking(False)
    try:
        return conn.recv(4096) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        conn.setblocking(True)


def test_hundreds_of_idle_and_trickling_clients_cost_bounded_threads_and_fds(serve, tmp_path):
    server = start(serve, tmp_path)
    # Warm both doors, so the service thread and a pool thread exist before the baseline.
    assert httpx.get(server.metrics_url + "/health").status_code == 200
    assert ask(server.control, b'{"op": "status"}\n')[0]["ok"]
    base_threads, base_fds = threads(server.pid), fds(server.pid)
    with (
        clients(IDLE_CLIENTS, socket.AF_INET, server.metrics) as web,
        clients(IDLE_CLIENTS, socket.AF_UNIX, str(server.control)) as ctl,
    ):
        # Some send a byte at a time, as a slowloris would.
        for _ in range(3):
            for conn in web[-5:]:
                with contextlib.suppress(OSError):
                    conn.send(b"G")
            for conn in ctl[-5:]:
                with contextlib.suppress(OSError):
                    conn.send(b"{")
            # Others are still served, each at once.
            assert httpx.get(server.metrics_url + "/health", timeout=5).status_code == 200
            assert ask(server.control, b'{"op": "status"}\n', timeout=5)[0]["ok"]
            time.sleep(0.3)
        loaded_threads, loaded_fds = threads(server.pid), fds(server.pid)
    # One service thread and two small pools (control: 4, metrics: 2), whatever the clients do.
    assert loaded_threads <= base_threads + 6, (base_threads, loaded_threads)
    # At most 64 metrics and 32 control connections are kept; the oldest idle ones make room.
    assert loaded_fds <= base_fds + 64 + 32 + 4, (base_fds, loaded_fds)
    assert "Traceback" not in server.log(), server.tail()


def test_a_request_head_has_a_total_deadline_not_one_per_byte(serve, tmp_path):
    server = start(serve, tmp_path)
    with socket.create_connection(server.metrics, timeout=10) as slow:
        started = time.monotonic()
        closed = False
        # A byte every 0.3 s: a per-recv timeout would keep this connection forever.
        for byte in b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 200:
            try:
                slow.send(bytes([byte]))
            except OSError:
                closed = True
                break
            if closed_by_server(slow):
                closed = True
                break
            time.sleep(0.3)
        assert closed, "the trickling client was never closed"
        assert time.monotonic() - started < 30


def test_the_metrics_server_speaks_http_1_1_only_and_names_itself_forkserve(serve, tmp_path):
    server = start(serve, tmp_path)
    answer = httpx.get(server.metrics_url + "/health")
    assert answer.headers["server"] == "forkserve"
    assert "BaseHTTP" not in str(answer.headers)
    # HTTP/0.9: no version on the request line.
    old = raw_http(server.metrics, b"GET /metrics\r\n\r\n")
    assert old.startswith(b"HTTP/1.1 400 Bad Request\r\n"), old[:200]
    garbage = raw_http(
        server.metrics, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 50 + b"\r\n\r\n"
    )
    assert garbage.startswith(b"HTTP/1.1 400 "), garbage[:200]
    huge = raw_http(server.metrics, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
    assert re.match(rb"HTTP/1.1 4(00|31) ", huge), huge[:200]
    post = raw_http(server.metrics, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert post.startswith(b"HTTP/1.1 405 "), post[:200]
    assert b"\r\nAllow: GET, HEAD\r\n" in post
    head = raw_http(server.metrics, b"HEAD /health HTTP/1.0\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n"), head
    # Clients that leave before the answer (a reset, even): no traceback, no BrokenPipeError.
    for _ in range(20):
        conn = socket.create_connection(server.metrics, timeout=5)
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()
    assert httpx.get(server.metrics_url + "/health").status_code == 200
    assert "Traceback" not in server.log() and "BrokenPipe" not in server.log(), server.tail()


@pytest.mark.parametrize(
    ("request_line", "error"),
    [
        (b"[" * 60_000 + b"\n", r"^a request nests at most \d+ levels deep$"),
        (
            b'{"op": "status", "x": ' + b"[" * 9 + b"]" * 9 + b"}\n",
            r"^a request nests at most 8 levels deep$",
        ),
        (b'{"op": "reload", "timeout": "nan"}\n', r'^"timeout" is a number of seconds, not "nan"$'),
        (b'{"op": "reload", "timeout": NaN}\n', r'^"timeout" must be above 0 and at most 86400 seconds'),
        (b'{"op": "reload", "timeout": 1e999}\n', r'^"timeout" must be above 0 and at most 86400 seconds'),
        (b'{"op": "scale", "delta": 1, "timeout": -5}\n', r'^"timeout" must be above 0'),
        (b'{"op": "scale", "to": true}\n', r'^scale takes "to": N or "delta": K'),
        (b'{"op": "stop", "graceful": "no"}\n', r'^"graceful" is true or false$'),
        (b'{"op": "explode"}\n', r"^unknown op 'explode': one of status, reload, scale, stop$"),
        (b"\xff\xfe garbage\n", r"^unreadable request: "),
        (b"[1, 2]\n", r'^a request is a JSON object such as \{"op": "status"\}$'),
    ],
)
def test_malformed_control_requests_get_a_clean_error_and_change_nothing(
    serve, tmp_path, request_line, error
):
    server = start(serve, tmp_path)
    bad, after = ask(server.control, request_line, b'{"op": "status"}\n')
    assert bad["ok"] is False and bad["code"] == "bad-request", bad
    assert re.search(error, bad["error"]), bad["error"]
    # The same connection still serves, and nothing was started.
    assert after["ok"] is True
    assert after["status"]["generation"] == 1 and after["status"]["desired"] == 1
    assert "reload" not in server.log() and "Traceback" not in server.log(), server.tail()


@pytest.mark.parametrize("line", [b"[" * 100_000 + b"\n", b'{"op": "status", "pad": "' + b"a" * 70_000])
def test_an_over_long_control_line_is_answered_then_closed(serve, tmp_path, line):
    server = start(serve, tmp_path)
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(10)
        conn.connect(str(server.control))
        conn.sendall(line)
        stream = conn.makefile("rb")
        answer = json.loads(stream.readline())
        assert stream.readline() == b""  # closed: the rest of such a line is not worth reading
    assert answer == {
        "ok": False,
        "code": "bad-request",
        "error": "a request is one line of at most 65536 bytes",
    }
    assert ask(server.control, b'{"op": "status"}\n')[0]["ok"]


FAULTS = "control.accept=3,metrics.accept=3,metrics.sweep=3"


def test_injected_accept_and_listdir_errors_are_logged_once_and_survived(serve, tmp_path):
    server = start(serve, tmp_path, env={"FORKSERVE_FAULTS": FAULTS})
    # The first accepts fail; clients wait in the queue meanwhile and are then served.
    assert httpx.get(server.metrics_url + "/health", timeout=10).status_code == 200
    # The control socket's first client is accepted by the thread that starts its loop (the
    # doorbell); the loop's own accepts, where the faults are injected, serve the next one.
    for _ in range(2):
        assert ask(server.control, b'{"op": "status"}\n')[0]["ok"]
    for what in (
        "accepting on --metrics-bind",
        "accepting on the control socket",
        "sweeping the metrics directory",
    ):
        injected = r" failed: Too many open files \(injected at [a-z.]+\); pausing and retrying"
        failed = server.wait_log(re.escape(what) + injected)
        server.wait_log(re.escape(what) + r" works again after 3 failures")
        assert len(failed) == 1, server.tail()
    assert "Traceback" not in server.log(), server.tail()


def test_round_robin_balancer_survives_accept_errors(serve, tmp_path):
    server = serve(
        "-w", "2", "--balance", "round-robin", env={"FORKSERVE_FAULTS": "balancer.accept=3"}, wait=2
    )
    for _ in range(6):
        assert server.get("/").status_code == 200
    failed = server.wait_log(
        r"the round-robin balancer.s accept failed: Too many open files \(injected at [a-z.]+\); pausing"
    )
    server.wait_log(r"the round-robin balancer's accept works again after 3 failures")
    assert len(failed) == 1 and "Traceback" not in server.log(), server.tail()


def test_after_the_fd_limit_health_and_control_answer_again(serve, tmp_path):
    server = start(serve, tmp_path)
    assert httpx.get(server.metrics_url + "/health").status_code == 200
    assert ask(server.control, b'{"op": "status"}\n')[0]["ok"]
    _, hard = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)
    # Room for a dozen more fds only: the fillers below take them all.
    resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (fds(server.pid) + 12, hard))
    try:
        with clients(40, socket.AF_INET, server.metrics):
            server.wait_log(r"accepting on --metrics-bind failed: Too many open files; pausing and retrying")
            # Queued behind the fillers: answered once fds are free again.
            waiting = socket.socket(socket.AF_UNIX)
            waiting.settimeout(30)
            waiting.connect(str(server.control))
            waiting.sendall(b'{"op": "status"}\n')
            time.sleep(1)  # let the paused accept loops fail a few more times (they must not log each)
        answer = json.loads(waiting.makefile("rb").readline())
        waiting.close()
        assert answer["ok"] is True
        wait_until(
            lambda: httpx.get(server.metrics_url + "/health", timeout=5).status_code == 200,
            20, "/health to answer again", server.tail,
        )  # fmt: skip
        server.wait_log(r"accepting on --metrics-bind works again after \d+ failures")
        assert httpx.get(server.metrics_url + "/metrics", timeout=5).status_code == 200
        assert ask(server.control, b'{"op": "status"}\n')[0]["ok"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (hard, hard))
    log = server.log()
    # Logged once per run of failures, not once per try.
    assert len(re.findall(r"accepting on --metrics-bind failed", log)) == 1, server.tail()
    assert len(re.findall(r"accepting on the control socket failed", log)) <= 1, server.tail()
    assert "Traceback" not in log, server.tail()
