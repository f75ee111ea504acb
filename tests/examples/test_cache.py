"""examples/cache: LRU in front of Redis in front of PostgreSQL; each item leaves the database once."""

from __future__ import annotations

import redis

from tests.conftest import wait_until
from tests.examples.helpers import fresh_client, serve_example

ITEMS = 20


def test_each_level_catches_what_the_one_below_would_serve(serve, redis_server, postgres_server):
    env = {
        "REDIS_URL": redis_server.extra["url"],
        "DATABASE_URL": postgres_server.extra["url"],
        "DB_CONNECTIONS": "6",
    }
    redis.Redis.from_url(redis_server.extra["url"]).delete(
        *[f"example-cache:item:{n}" for n in range(1, ITEMS + 1)]
    )
    server = serve_example(
        serve, "examples.cache.app:app", "--on-starting", "examples.cache.schema:create", env=env, workers=2
    )
    sources: dict[str, int] = {}
    served_by: dict[int, set[int]] = {key: set() for key in range(1, ITEMS + 1)}
    with fresh_client(server.url) as client:

        def one_pass() -> bool:
            for key in range(1, ITEMS + 1):
                body = client.get(f"/items/{key}").json()
                assert body["name"] == f"item {key}"
                sources[body["from"]] = sources.get(body["from"], 0) + 1
                # What a worker fetched once, it keeps; a worker that never had it asks Redis.
                expected = (
                    "local" if body["worker"] in served_by[key] else ("redis" if served_by[key] else "db")
                )
                assert body["from"] == expected, (key, body, served_by[key])
                served_by[key].add(body["worker"])
            passes = sum(sources.values()) // ITEMS
            return passes >= 3 and sources.get("redis", 0) > 0  # the second worker had its turn

        wait_until(one_pass, 30, "an item served from Redis by the other worker", server.tail)
        assert client.get("/items/100000").status_code == 404

        stats: dict[int, dict] = {}

        def both_workers_reported() -> bool:
            answer = client.get("/stats").json()
            stats[answer["worker"]] = answer["counts"]
            return len(stats) == 2

        wait_until(both_workers_reported, 20, "stats from both workers", server.tail)
    total = {
        key: sum(counts.get(key, 0) for counts in stats.values())
        for key in ("local_hit", "redis_hit", "db_query")
    }
    # Every item came from the database exactly once, fleet-wide (and one query found nothing).
    assert sources["db"] == ITEMS and total["db_query"] == ITEMS + 1, (sources, total)
    assert total["local_hit"] == sources["local"] and total["redis_hit"] == sources["redis"]
