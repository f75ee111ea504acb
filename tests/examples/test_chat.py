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
                assert received == {"kind": "message", "text": text, "worker": sender_worker}, (
                    worker,
                    received,
                )
