"""A bounded background load of real HTTP clients that counts every failure (no retries)."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

import httpx

# Every load stops by itself after this long, whatever the test does.
HARD_LIMIT = 60.0


@dataclass
class Outcome:
    ok: int = 0
    failed: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    bodies: set[str] = field(default_factory=set)

    def __str__(self) -> str:
        return f"{self.ok} ok, {self.failed} failed {dict(self.errors)}"


class Load:
    """KEEP_ALIVE clients reusing one connection each, and FRESH clients opening one per request."""

    def __init__(self, url: str, *, keep_alive: int = 16, fresh: int = 4, path: str = "/") -> None:
        self.url = url + path
        self.keep_alive = keep_alive
        self.fresh = fresh
        self.outcome = Outcome()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._deadline = time.monotonic() + HARD_LIMIT

    def __enter__(self) -> Load:
        for index in range(self.keep_alive + self.fresh):
            thread = threading.Thread(target=self._client, args=(index < self.keep_alive,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> Outcome:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        return self.outcome

    @property
    def ok(self) -> int:
        return self.outcome.ok

    def _record(self, response: httpx.Response | None, error: BaseException | None) -> None:
        with self._lock:
            if error is None and response is not None and response.status_code == 200:
                self.outcome.ok += 1
                self.outcome.bodies.add(response.text)
            else:
                self.outcome.failed += 1
                self.outcome.errors[type(error).__name__ if error else f"HTTP {response.status_code}"] += 1

    def _client(self, keep_alive: bool) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1 if keep_alive else 0)
        with httpx.Client(limits=limits, timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                try:
                    response = client.get(self.url)
                except httpx.HTTPError as error:
                    self._record(None, error)
                else:
                    self._record(response, None)


__all__ = ["Load", "Outcome"]
