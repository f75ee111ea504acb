"""WebSockets through a reload and a shutdown: closes spread over --ws-drain-period, all 1012,
every client reconnects, and the open WebSockets show in /metrics and `ctl status`."""

from __future__ import annotations

import re
import signal
import time

import pytest

from tests.conftest import free_port, wait_until
from tests.integration.test_control import status as ctl_status
from tests.integration.test_metrics import scrape, total
from tests.integration.wsload import Clients

CLIENTS = 60
WINDOW = 3.0


def connected(clients: Clients, count: int, server) -> None:
    wait_until(lambda: clients.record.connected == count, 20, f"{count} clients connected", server.tail)


def assert_spread(clients: Clients, since: float, server) -> None:
    closes = [when - since for when, _ in clients.record.closes]
    assert len(closes) >= CLIENTS, server.tail()
    # Gradual: the closes cover most of the window, not one instant (a burst spans milliseconds).
    assert max(closes) - min(closes) >= WINDOW / 2, f"closes from {min(closes):.2f} to {max(closes):.2f} s"
    assert {code for _, code in clients.record.closes} == {1012}
    assert clients.record.failures == []
    # The app saw each goodbye, with its code.
    saw = re.findall(r"app saw websocket.disconnect (\d+)", server.log())
    assert len(saw) >= CLIENTS and set(saw) == {"1012"}, server.tail()


@pytest.mark.parametrize("balance", ["kernel", "least-conn"])
def test_a_reload_moves_websockets_to_the_new_generation_gradually(serve, tmp_path, balance):
    metrics = f"127.0.0.1:{free_port()}"
    sock = tmp_path / "ctl.sock"
    server = serve(
        "-w", "2", "--ws-drain-period", str(WINDOW), "--metrics-bind", metrics,
        "--control-socket", str(sock), "--balance", balance, app="wsapp:app", wait=2,
    )  # fmt: skip
    server.metrics_url = f"http://{metrics}"
    with Clients(CLIENTS, f"ws://127.0.0.1:{server.port}/") as clients:
        connected(clients, CLIENTS, server)
        wait_until(lambda: total(scrape(server), "forkserve_websockets") == CLIENTS, 10, "websockets gauge")
        per_worker = {w["pid"]: w["websockets"] for w in ctl_status(sock)["workers"]}
        assert sum(per_worker.values()) == CLIENTS and len(per_worker) == 2

        hup = time.monotonic()
        server.signal(signal.SIGHUP)
        wait_until(
            lambda: clients.generations() == {2: CLIENTS}, 30, "every client on generation 2", server.tail
        )
        assert_spread(clients, hup, server)
        assert len({pid for _, pid, gen in clients.record.connects if gen == 2}) == 2
        if balance == "least-conn":
            # It counts open WebSockets: the reconnecting clients end up evenly spread.
            def spread() -> list[int]:
                counts = [w["websockets"] for w in ctl_status(sock)["workers"]]
                return counts if len(counts) == 2 and sum(counts) == CLIENTS else []

            counts = wait_until(spread, 10, "the new workers' counts")
            assert min(counts) >= CLIENTS * 0.4, counts


def test_term_drains_websockets_over_the_same_window_after_the_shutdown_delay(serve):
    leaving = serve(
        "-w", "1", "--ws-drain-period", str(WINDOW), "--shutdown-delay", "0.5", app="wsapp:app", wait=1
    )
    staying = serve("-w", "1", app="wsapp:app", wait=1)
    urls = [f"ws://127.0.0.1:{s.port}/" for s in (leaving, staying)]
    with Clients(CLIENTS, *urls) as clients:
        connected(clients, CLIENTS, leaving)
        assert {pid for _, pid, _ in clients.record.connects} == set(leaving.workers())
        term = time.monotonic()
        leaving.signal(signal.SIGTERM)
        assert leaving.wait_exit(20) == 0
        wait_until(lambda: len(clients.record.connects) >= 2 * CLIENTS, 10, "every client on the other host")
        assert min(when for when, _ in clients.record.closes) - term >= 0.5  # --shutdown-delay first
        assert_spread(clients, term, leaving)
        assert {pid for _, pid, _ in clients.record.connects[CLIENTS:]} == set(staying.workers())


def test_the_default_window_grows_with_the_websockets_a_worker_holds(serve):
    """--ws-drain-period auto (the default): a worker paces its closes to the WebSockets it holds."""
    few, many = 20, 250
    server = serve("-w", "1", app="wsapp:app", wait=1)
    url = f"ws://127.0.0.1:{server.port}/"
    with Clients(few, url) as first:
        connected(first, few, server)
        server.signal(signal.SIGHUP)
        wait_until(lambda: first.generations() == {2: few}, 20, "the few on generation 2", server.tail)
        with Clients(many - few, url) as rest:
            connected(rest, many - few, server)
            hup = time.monotonic()
            server.signal(signal.SIGHUP)
            wait_until(
                lambda: first.generations() == {3: few} and rest.generations() == {3: many - few},
                30, "every client on generation 3", server.tail,
            )  # fmt: skip
    chosen = re.findall(
        r"closing (\d+) WebSockets with 1012 over ([\d.]+) s \(--ws-drain-period auto\)", server.log()
    )
    # 1 s per 100 held, at least 1 s: the few get the floor, the many a window 2.5 times as long.
    assert [(int(n), float(w)) for n, w in chosen] == [(few, 1.0), (many, 2.5)], server.tail()
    # ... and the closes really are spread over it, all with 1012, with no failed reconnect.
    closes = [when - hup for when, _ in rest.record.closes]
    assert max(closes) - min(closes) >= 2.5 / 2, f"closes from {min(closes):.2f} to {max(closes):.2f} s"
    assert {code for _, code in first.record.closes + rest.record.closes} == {1012}
    assert first.record.failures == rest.record.failures == []
