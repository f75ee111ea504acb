"""The real components the examples run against, one of each per test session."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from tests.examples.components import Component, start_postgres, start_redis

# Small on purpose: the pools example must prove it stays inside it through a rolling reload.
POSTGRES_MAX_CONNECTIONS = 20


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Component]:
    server = start_redis()
    yield server
    server.stop(signal.SIGTERM)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Component]:
    server = start_postgres(POSTGRES_MAX_CONNECTIONS)
    yield server
    server.stop(signal.SIGINT)  # fast shutdown: clients are cut off, not waited for
