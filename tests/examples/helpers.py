"""Starting an example as its README says: ``forkserve examples.NAME.app:app ...`` from the repo root."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]


def serve_example(
    serve: Callable[..., Any], target: str, *args: str, env: dict[str, str], workers: int
) -> Any:
    # At debug level the master logs each worker it counts as ready; a balancer that hashes over
    # the ready workers (--balance ip-hash) sends a client elsewhere until they all are.
    argv = [target, "--app-dir", str(REPO), "-w", str(workers), "--log-level", "debug", *args]
    server = serve(*argv, app=None, env=env)

    def serving() -> bool:
        if server.proc.poll() is not None:  # a bad flag or a broken example: say so now, not in 30 s
            raise AssertionError(f"forkserve exited with {server.proc.returncode}\n{server.tail()}")
        ready = {
            int(pid)
            for pid in re.findall(r"\[master\] \[DEBUG\] worker \d+ \(pid (\d+)\) ready", server.log())
        }
        alive = set(server.workers())
        return len(alive) == workers and alive <= ready

    wait_until(serving, 30, f"{workers} ready workers", server.tail)
    return server


def fresh_client(base_url: str, local_address: str = "127.0.0.1", **kwargs: Any) -> httpx.Client:
    """A client that opens a new connection for every request (so the balancer chooses each time)."""
    transport = httpx.HTTPTransport(
        local_address=local_address, limits=httpx.Limits(max_keepalive_connections=0)
    )
    return httpx.Client(base_url=base_url, transport=transport, timeout=10, **kwargs)
