"""The WebSocket hand-off of every --http class, over real sockets: uvicorn's WebSocket protocol
gets the real transport (not the HTTP side's lingering wrapper, which cost a Python attribute
miss twice per message: docs/benchmarks-ws-throughput.md), echoes messages, and closes cleanly.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
import uvloop
from uvicorn.server import ServerState
from websockets.asyncio.client import connect

from benchmarks.apps_ws import echo
from forkserve.http.choice import http_protocol_class
from forkserve.http.protocol import LingeringTransport


async def _exchange(http: str) -> tuple[list[Any], int | None]:
    config = uvicorn.Config(echo, ws="websockets-sansio", log_config=None, lifespan="off")
    config.load()
    state = ServerState()
    protocol_class = http_protocol_class(http)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: protocol_class(config=config, server_state=state, app_state={}), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with connect(f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None) as ws:
            for message in ("a", "b" * 200, "c" * 70_000):
                await ws.send(message)
                assert await ws.recv() == message
            await ws.send(b"\x00\x01")
            assert await ws.recv() == b"\x00\x01"
            transports = [c.transport for c in state.connections if isinstance(c, config.ws_protocol_class)]
        return transports, ws.close_code
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("http", ["fast", "httptools", "h11"])
def test_the_websocket_protocol_gets_the_real_transport_and_echoes(http: str) -> None:
    transports, close_code = uvloop.run(asyncio.wait_for(_exchange(http), 20))
    assert len(transports) == 1
    assert not isinstance(transports[0], LingeringTransport)
    assert transports[0].get_extra_info("peername") is not None
    assert close_code == 1000  # the closing handshake went through both ways
