"""examples/pools: per-worker pools sized from worker_info(), inside the database's limit through reloads."""

from __future__ import annotations

import signal
import threading
import time

import psycopg

from tests.conftest import wait_until
from tests.examples.conftest import POSTGRES_MAX_CONNECTIONS
from tests.examples.helpers import serve_example
from tests.integration.load import background_load

APPLICATION = "forkserve-pools-test"


class ConnectionWatch:
    """Samples how many connections the app holds in PostgreSQL, every 20 ms, on one connection of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConnectionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as db:
            deadline = time.monotonic() + 120
            while not self._stop.is_set() and time.monotonic() < deadline:
                row = db.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (APPLICATION,)
                ).fetchone()
                self.samples.append(int(row[0]) if row else 0)
                self._stop.wait(0.02)


def only_generation(server, generation: int, workers: int) -> bool:
    titles = list(server.processes().values())
    serving = [title for title in titles if "forkserve: worker" in title]
    return len(serving) == workers and all(title.endswith(f"gen {generation}") for title in titles)


def test_pools_stay_inside_the_connection_limit_through_rolling_reloads(serve, postgres_server):
    # One connection is the watcher's: the app's budget is what is left.
    budget = POSTGRES_MAX_CONNECTIONS - 2
    env = {
        "DATABASE_URL": postgres_server.extra["url"],
        "DB_CONNECTIONS": str(budget),
        "DB_APPLICATION_NAME": APPLICATION,
    }
    server = serve_example(serve, "examples.pools.app:app", env=env, workers=3)
    first = server.get("/").json()
    assert first["pool_size"] == budget // 6  # 3 workers, each possibly beside its replacement
    with (
        ConnectionWatch(postgres_server.extra["url"]) as watch,
        background_load(server.url, path="/?sleep=0.005") as load,
    ):
        for generation in (2, 3):
            mark = load.ok
            server.signal(signal.SIGHUP)
            wait_until(
                lambda generation=generation: only_generation(server, generation, 3),
                30,
                "reload",
                server.tail,
            )
            wait_until(
                lambda mark=mark: load.ok > mark + 50, 15, "requests on the new generation", server.tail
            )
    assert load.failed == 0, f"{load}\n{server.tail()}"
    assert load.ok > 200, load
    assert watch.samples and max(watch.samples) <= budget, (max(watch.samples), budget)
    # It did use the database: every worker's pool was open while the load ran.
    assert max(watch.samples) >= 3 * first["pool_size"], max(watch.samples)
    assert "too many clients" not in server.log()
