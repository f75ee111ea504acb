"""Starting an example as its README says: ``forkserve examples.NAME.app:app ...`` from the repo root."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]


def serve_example(
    serve: Callable[..., Any], target: str, *args: str, env: dict[str, str], workers: int
) -> Any:
    server = serve(target, "--app-dir", str(REPO), "-w", str(workers), *args, app=None, env=env)
    server.wait_workers(workers, timeout=30)
    return server


def fresh_client(base_url: str, local_address: str = "127.0.0.1", **kwargs: Any) -> httpx.Client:
    """A client that opens a new connection for every request (so the balancer chooses each time)."""
    transport = httpx.HTTPTransport(
        local_address=local_address, limits=httpx.Limits(max_keepalive_connections=0)
    )
    return httpx.Client(base_url=base_url, transport=transport, timeout=10, **kwargs)
