"""Held responses on a real server: many clients pipelining to a slow app each get their own
answers, in order (the hold writes a turn's responses together; it must never mix or reorder them).

h11 reads the responses, as an independent client would.
"""

from __future__ import annotations

import asyncio

import h11

CONNECTIONS = 24
PIPELINED = 8


async def client(port: int, number: int) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    paths = [f"/c{number}/r{index}" for index in range(PIPELINED)]

    # Two bursts: a whole pipeline in one write, then one request at a time.
    def request(path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()

    # A pipeline in one write, then the last two one at a time, each once the one before is answered.
    burst = PIPELINED - 2
    writer.write(b"".join(request(path) for path in paths[:burst]))
    sent = burst
    bodies: list[bytes] = []
    peer = h11.Connection(h11.CLIENT)
    for _ in paths:  # h11 must see each request it is to read a response for
        peer.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        peer.send(h11.EndOfMessage())
        if sent == len(bodies):
            writer.write(request(paths[sent]))
            sent += 1
        current = b""
        while True:
            event = peer.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                assert data, f"connection {number} closed after {len(bodies)} responses"
                peer.receive_data(data)
            elif isinstance(event, h11.Response):
                assert event.status_code == 200
            elif isinstance(event, h11.Data):
                current += event.data
            elif isinstance(event, h11.EndOfMessage):
                bodies.append(current)
                peer.start_next_cycle()
                break
    writer.close()
    assert bodies == [path.encode() for path in paths]
    return bodies


def test_clients_pipelining_to_a_slow_app_each_get_their_own_answers_in_order(serve):
    server = serve("-w", "2", "--no-access-log", app="slowecho:app", wait=2)

    async def everyone() -> None:
        await asyncio.wait_for(
            asyncio.gather(*(client(server.port, number) for number in range(CONNECTIONS))), 60
        )

    for _ in range(3):
        asyncio.run(everyone())
    assert "Traceback" not in server.log()
