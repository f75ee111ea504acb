"""examples/chat: a message sent through one worker reaches the clients of every worker (Redis pub/sub)."""

from __future__ import annotations

import json
from contextlib import ExitStack

from websockets.sync.client import connect

from tests.conftest import wait_until
from tests.examples.helpers import serve_example


def test_a_message_reaches_clients_on_every_worker(serve, redis_server):
    server = serve_example(
        serve, "examples.chat.app:app", env={"REDIS_URL": redis_server.extra["url"]}, workers=2
    )
    url = f"ws://127.0.0.1:{server.port}/ws"
    with ExitStack() as stack:
        clients: list[tuple[object, int]] = []

        def connect_one() -> bool:
            websocket = stack.enter_context(connect(url, open_timeout=10))
            hello = json.loads(websocket.recv(timeout=10))
            clients.append((websocket, hello["worker"]))
            return len({worker for _, worker in clients}) == 2 and len(clients) >= 4

        wait_until(connect_one, 20, "clients on both workers", server.tail)
        for sender_worker in {worker for _, worker in clients}:
            sender = next(ws for ws, worker in clients if worker == sender_worker)
            text = f"hello from a client of {sender_worker}"
            sender.send(text)
            for websocket, worker in clients:
                received = json.loads(websocket.recv(timeout=10))
                received.pop("id")
                assert received == {"kind": "message", "text": text, "worker": str(sender_worker)}, (
                    worker,
                    received,
                )


def test_a_client_that_reconnects_gets_what_it_missed(serve, redis_server):
    server = serve_example(
        serve, "examples.chat.app:app", env={"REDIS_URL": redis_server.extra["url"]}, workers=2
    )
    url = f"ws://127.0.0.1:{server.port}/ws"
    with connect(url, open_timeout=10) as leaving:
        assert json.loads(leaving.recv(timeout=10))["kind"] == "hello"
        leaving.send("before")
        seen = json.loads(leaving.recv(timeout=10))
        assert seen["text"] == "before"
    # While it is away (as between a 1012 close and its reconnect), two messages are sent.
    with connect(url, open_timeout=10) as other:
        json.loads(other.recv(timeout=10))
        for text in ("missed 1", "missed 2"):
            other.send(text)
            assert json.loads(other.recv(timeout=10))["text"] == text
    with connect(f"{url}?after={seen['id']}", open_timeout=10) as back:
        texts = [json.loads(back.recv(timeout=10)) for _ in range(3)]
        assert [m["text"] for m in texts if m["kind"] == "message"] == ["missed 1", "missed 2"]
        back.send("live")
        assert json.loads(back.recv(timeout=10))["text"] == "live"
