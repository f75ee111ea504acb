"""examples/sessions: a login that holds whichever worker answers (Redis), or by sticking (ip-hash)."""

from __future__ import annotations

import time

from tests.conftest import wait_until
from tests.examples.helpers import fresh_client, serve_example


def test_a_redis_session_holds_on_every_worker(serve, redis_server):
    server = serve_example(
        serve, "examples.sessions.app:app", env={"REDIS_URL": redis_server.extra["url"]}, workers=2
    )
    with fresh_client(server.url) as client:
        assert client.post("/login", json={"user": "ada"}).json()["user"] == "ada"
        answers: list[dict] = []

        def both_workers_answered() -> bool:
            answers.append(client.get("/me").json())
            return len({answer["worker"] for answer in answers}) == 2

        wait_until(both_workers_answered, 20, "both workers to answer", server.tail)
        assert all(answer["user"] == "ada" for answer in answers), answers
        # One session, shared: the count goes up by one whichever worker wrote it last.
        assert [answer["visits"] for answer in answers] == list(range(1, len(answers) + 1))
        client.post("/logout")
        assert client.get("/me").json()["user"] is None


def check_sticky(url: str, addresses: list[str], requests: int = 12) -> dict[str, int]:
    """Log each client address in, then check every later request of it reaches the same worker."""
    worker_of: dict[str, int] = {}
    for address in addresses:
        with fresh_client(url, local_address=address) as client:
            login = client.post("/login", json={"user": address}).json()
            answers = [client.get("/me").json() for _ in range(requests)]
        assert {answer["worker"] for answer in answers} == {login["worker"]}, (address, answers)
        assert all(answer["user"] == address for answer in answers), answers
        assert [answer["visits"] for answer in answers] == list(range(1, requests + 1))
        worker_of[address] = login["worker"]
    return worker_of


def settled_mapping(url: str, addresses: list[str]) -> dict[str, int]:
    """Which worker each address reaches, once two rounds 0.1 s apart agree.

    The balancer re-reads which workers are ready every few tens of milliseconds, so for a moment
    after the last worker is ready a client may still hash over the ones before it.
    """

    def round_of_answers() -> dict[str, int]:
        mapping = {}
        for address in addresses:
            with fresh_client(url, local_address=address) as client:
                mapping[address] = client.get("/me").json()["worker"]
        return mapping

    rounds = [round_of_answers()]

    def agrees() -> dict[str, int]:
        time.sleep(0.1)
        rounds.append(round_of_answers())
        return rounds[-1] if rounds[-1] == rounds[-2] else {}

    mapping: dict[str, int] = wait_until(agrees, 10, "a settled ip-hash mapping")
    return mapping


def test_in_process_sessions_stick_to_one_worker_with_ip_hash(serve):
    # Needs --balance ip-hash (the master accepts and hands each connection to the worker its
    # client address hashes to). The sessions live in each worker's memory: no Redis at all.
    server = serve_example(
        serve, "examples.sessions.app:app", "--balance", "ip-hash", env={"SESSION_STORE": "memory"}, workers=3
    )
    addresses = [f"127.0.0.{n}" for n in range(2, 10)]
    settled = settled_mapping(server.url, addresses)
    worker_of = check_sticky(server.url, addresses)
    assert worker_of == settled
    assert len(set(worker_of.values())) >= 2, f"8 client addresses all hashed to one worker: {worker_of}"
