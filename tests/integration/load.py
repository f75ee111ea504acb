"""A bounded background load of real HTTP clients that counts every failure (no retries).

A thin use of the benchmarks' one load client (benchmarks/client.py), so a test and a benchmark
name the same failure with the same word.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from benchmarks.client import BackgroundLoad, LoadPlan

# Every load stops by itself after this long, whatever the test does.
HARD_LIMIT = 60.0


def background_load(url: str, *, keep_alive: int = 16, fresh: int = 4, path: str = "/") -> BackgroundLoad:
    """KEEP_ALIVE clients reusing one connection each, and FRESH clients opening one per request."""
    parts = urlsplit(url)
    assert parts.port is not None, url
    plan = LoadPlan(
        port=parts.port,
        host=parts.hostname or "127.0.0.1",
        path=path,
        keep_alive=keep_alive,
        fresh=fresh,
        duration=HARD_LIMIT,
        timeout=10.0,
    )
    return BackgroundLoad(plan)


__all__ = ["HARD_LIMIT", "background_load"]
