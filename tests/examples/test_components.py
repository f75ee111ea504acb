"""The components themselves start, answer, and go away."""

from __future__ import annotations

import psycopg
import pytest
import redis

from tests.conftest import free_port
from tests.examples.components import port_open, require, start_nginx


def test_redis_and_postgres_answer(redis_server, postgres_server):
    client = redis.Redis.from_url(redis_server.extra["url"])
    assert client.ping()
    client.close()
    with psycopg.connect(postgres_server.extra["url"]) as db:
        assert db.execute("SHOW max_connections").fetchone() == ("20",)


def test_nginx_starts_and_stops():
    port = free_port()
    nginx = start_nginx(f"server {{ listen 127.0.0.1:{port}; location / {{ return 204; }} }}", port)
    try:
        assert port_open("127.0.0.1", port)
    finally:
        nginx.stop()
    assert nginx.proc.returncode is not None
    assert not port_open("127.0.0.1", port)


def test_a_missing_component_fails_with_what_to_install():
    with pytest.raises(
        pytest.fail.Exception,
        match=r"^no-such-server not found: install no-such-pkg \(apt-get install -y no-such-pkg\)",
    ):
        require("no-such-server", "no-such-pkg", ("/nonexistent/*/bin/no-such-server",))
