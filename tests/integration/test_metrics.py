"""--metrics-bind: /metrics, /health and /ready from the master, merged app metrics, worker health."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def start(serve, *args: str, app: str = "hello:app", workers: int = 1):
    metrics = f"127.0.0.1:{free_port()}"
    server = serve("-w", str(workers), "--metrics-bind", metrics, *args, app=app, wait=workers)
    server.metrics_url = f"http://{metrics}"
    return server


def scrape(server) -> Samples:
    response = httpx.get(server.metrics_url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (n, got), value in samples.items() if n == name and wanted <= got)


def wait_total(server, name: str, expected: float, timeout: float = 10.0, **labels: str) -> Samples:
    def reached() -> Samples | None:
        samples = scrape(server)
        return samples if total(samples, name, **labels) == expected else None

    def explain() -> str:
        return f"{name}{labels} is {total(scrape(server), name, **labels)}\n{server.tail()}"

    result: Samples = wait_until(reached, timeout, f"{name}{labels} == {expected}", explain)
    return result


def status(server) -> dict:
    response = httpx.get(server.metrics_url + "/api/status", timeout=10)
    assert response.status_code == 200
    return response.json()


def get_each(url: str, paths: Iterable[str]) -> list[str]:
    bodies = []
    for path in paths:
        response = httpx.get(url + path, timeout=10)
        assert response.status_code in (200, 404), response
        bodies.append(response.text)
    return bodies


def test_metrics_parse_and_the_request_counter_moves_with_traffic(serve):
    server = start(serve, workers=2)
    samples = scrape(server)
    assert total(samples, "forkserve_workers", state="ready") == 2
    assert total(samples, "forkserve_workers_desired") == 2
    assert total(samples, "forkserve_generation") == 1
    assert total(samples, "forkserve_accept_queue_limit", listener=f"127.0.0.1:{server.port}") == 2048
    assert {labels for name, labels in samples if name == "forkserve_worker_rss_bytes"} == {
        frozenset({("worker", "1")}),
        frozenset({("worker", "2")}),
    }
    # Sampled once a second by each worker.
    wait_until(
        lambda: all(total(scrape(server), "forkserve_worker_rss_bytes", worker=w) > 0 for w in ("1", "2")),
        5,
        "both workers' RSS",
    )
    before = total(samples, "forkserve_requests_total")

    get_each(server.url, ["/"] * 25)
    samples = wait_total(server, "forkserve_requests_total", before + 25)
    assert total(samples, "forkserve_requests_total", status="2xx") == before + 25
    assert total(samples, "forkserve_request_duration_seconds_count") == before + 25
    assert total(samples, "forkserve_request_duration_seconds_bucket", le="+Inf") == before + 25
    assert 0 < total(samples, "forkserve_request_duration_seconds_sum") < 25 * 1.0
    # The per-worker label adds up to the total.
    by_worker = [total(samples, "forkserve_requests_total", worker=w) for w in ("1", "2")]
    assert sum(by_worker) == before + 25

    assert httpx.get(server.metrics_url + "/health").status_code == 200
    assert httpx.get(server.metrics_url + "/ready").status_code == 200
    assert httpx.get(server.metrics_url + "/nothing").status_code == 404


def test_the_apps_own_counter_is_summed_over_workers_and_status_classes_split(serve):
    server = start(serve, app="prom_app:app", workers=2)
    pids: set[str] = set()
    served = 0

    def both_workers_served() -> bool:
        nonlocal served
        pids.update(get_each(server.url, ["/"] * 4))
        served += 4
        return len(pids) == 2

    wait_until(both_workers_served, 20, "both workers to answer", server.tail)
    get_each(server.url, ["/missing"] * 3)
    samples = wait_total(server, "app_hits_total", served, path="/")
    assert total(samples, "app_hits_total", path="/missing") == 3
    samples = wait_total(server, "forkserve_requests_total", 3, status="4xx")
    assert total(samples, "forkserve_requests_total", status="2xx") == served
    # The app's metric comes once, merged, not once per worker process.
    assert len([key for key in samples if key[0] == "app_hits_total"]) == 2


def test_counts_survive_a_killed_worker_and_the_directory_stays_bounded(serve):
    server = start(serve, "--max-requests", "3")
    directory = status(server)["multiprocess_dir"]
    assert directory and os.path.isdir(directory)

    # Every few requests the worker is recycled: a new process, new metric files, every time.
    sent = 0

    def recycled_four_times() -> bool:
        nonlocal sent
        get_each(server.url, ["/"] * 3)
        sent += 3
        return total(scrape(server), "forkserve_worker_exits_total", reason="recycle") >= 4

    wait_until(recycled_four_times, 20, "four recycled workers", server.tail)
    wait_total(server, "forkserve_requests_total", sent)

    def one_ready_worker(other_than: int = 0) -> int | None:
        rows = status(server)["workers"]
        settled = len(rows) == 1 and rows[0]["state"] == "ready" and rows[0]["pid"] != other_than
        return rows[0]["pid"] if settled else None

    victim = wait_until(one_ready_worker, 10, "the recycling to settle", server.tail)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: one_ready_worker(other_than=victim), 10, "a replacement", server.tail)
    samples = scrape(server)
    assert total(samples, "forkserve_requests_total") == sent
    assert total(samples, "forkserve_worker_exits_total", reason="crash") == 1
    get_each(server.url, ["/"] * 2)
    wait_total(server, "forkserve_requests_total", sent + 2)

    # At most: one archive per folded type, and the files of the processes alive now (a worker
    # and a replacement that may be booting: two files each).
    def bounded() -> bool:
        scrape(server)
        return len(os.listdir(directory)) <= 2 + 2 * 2

    wait_until(bounded, 10, "the directory to shrink", lambda: str(sorted(os.listdir(directory))))
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not os.path.exists(directory)


def test_health_and_ready_follow_the_fleet_and_ready_turns_503_on_shutdown(serve):
    server = start(serve, "--shutdown-delay", "3")
    assert httpx.get(server.metrics_url + "/health").status_code == 200
    assert httpx.get(server.metrics_url + "/ready").text == "ready\n"
    server.signal(signal.SIGTERM)
    wait_until(
        lambda: httpx.get(server.metrics_url + "/ready").status_code == 503,
        5,
        "/ready to say 503",
        server.tail,
    )
    # Still serving through the shutdown delay: healthy, but not taking new traffic.
    assert httpx.get(server.metrics_url + "/health").status_code == 200
    assert server.get("/").status_code == 200
    assert server.wait_exit(15) == 0


def test_metrics_address_in_use_exits_4_with_one_line(serve):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = serve("--metrics-bind", f"127.0.0.1:{port}")
        assert server.wait_exit() == 4
    errors = [line for line in server.log().splitlines() if "error" in line.lower()]
    assert errors == [
        f"forkserve: error: 127.0.0.1:{port} is already in use; "
        "pick another --metrics-bind or stop the other server"
    ]


def test_worker_health_path_turns_503_while_that_worker_drains(serve):
    """A reload retires the old worker: its kept-alive clients are told 503 on the health path."""
    # A long keep-alive: however slowly the new worker boots, the kept connection stays open.
    server = serve("-w", "1", "--health-path", "/healthz", "--keep-alive", "60", wait=1)
    [old] = server.wait_workers(1)
    with httpx.Client(base_url=server.url, timeout=10) as kept:
        assert kept.get("/healthz").status_code == 200
        assert kept.get("/").text.split()[0] == str(old)
        slow: dict[str, httpx.Response] = {}
        # A request in flight keeps the old worker draining while we look at it.
        holder = threading.Thread(
            target=lambda: slow.setdefault("r", httpx.get(server.url + "/slow?s=4", timeout=10))
        )
        holder.start()
        wait_until(lambda: server.accepted() >= 2, 5, "the slow request to be accepted", server.tail)
        server.signal(signal.SIGHUP)
        server.wait_log(rf"retiring worker 1 \(pid {old}\)", timeout=15)
        answer = kept.get("/healthz")
        assert answer.status_code == 503
        assert answer.text == "stopping\n"
        holder.join(10)
    assert slow["r"].status_code == 200
    # The new worker says 200.
    assert server.get("/healthz").status_code == 200


def test_usr2_hands_the_metrics_address_to_the_new_master(serve, tmp_path):
    pidfile = tmp_path / "app.pid"
    server = start(serve, "--pid", str(pidfile))
    old_workers = set(server.workers())
    server.signal(signal.SIGUSR2)

    def new_master() -> int:
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        return int(text) if text.isdigit() and int(text) != server.pid else 0

    successor = wait_until(new_master, 15, "the new master's pid file", server.tail)
    server.seen.add(successor)
    # It started (the port was handed over, not bound twice) and its workers serve.
    wait_until(lambda: set(server.workers()) - old_workers, 15, "the new master's workers", server.tail)
    assert "already in use" not in server.log()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(15) == 0

    def new_workers_only() -> bool:
        rows = status(server)["workers"]
        return bool(rows) and all(row["pid"] not in old_workers and row["state"] == "ready" for row in rows)

    wait_until(new_workers_only, 15, "/api/status from the new master", server.tail)
    assert httpx.get(server.metrics_url + "/health").status_code == 200
    get_each(server.url, ["/"] * 3)
    wait_total(server, "forkserve_requests_total", 3)
    os.kill(successor, signal.SIGTERM)
    wait_until(lambda: not pidfile.exists(), 15, "the new master to stop", server.tail)
