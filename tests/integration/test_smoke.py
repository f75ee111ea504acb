"""The bundled demo end to end, as a user first meets it: serve, a request, HUP, a request, TERM.

The dependency matrix (noxfile.py) runs this with the oldest and the newest dependencies the
ranges in pyproject.toml admit: the one test that says "it really serves" on both ends.
"""

from __future__ import annotations

import signal

from tests.conftest import wait_until


def _generations(server) -> set[str]:
    return {str(server.get().json()["generation"]) for _ in range(4)}


def test_the_demo_serves_reloads_and_stops(serve):
    server = serve("-w", "2", app="forkserve.demo:app", wait=2)
    first = server.get()
    assert first.status_code == 200 and first.json()["hello"] == "forkserve"
    assert first.json()["generation"] == "1"
    old_workers = set(server.workers())
    server.signal(signal.SIGHUP)
    # Every answer comes from generation 2 once the old workers are gone.
    wait_until(lambda: not old_workers & set(server.workers()), 30, "generation 1 to retire", server.tail)
    wait_until(lambda: _generations(server) == {"2"}, 15, "answers from generation 2", server.tail)
    server.signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0, server.tail()
