"""The ceiling for Python HTTP serving: uvloop + httptools, parse each request, write a fixed answer.

No ASGI, no scope, no task per request: what is left is the event loop, the socket calls and the
parser, which every server in the HTTP benchmark pays too. ``-w N`` forks N processes that
accept on one shared socket, like the pre-fork servers it is compared with.

    python -m benchmarks.ceiling -w 2 -b 127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
from typing import Any

import httptools
import uvloop

from benchmarks.apps import BODY

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%b" % (len(BODY), BODY)


class CeilingProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self) -> None:
        self.transport.write(RESPONSE)


async def serve(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(CeilingProtocol, sock=sock, backlog=2048)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-w", "--workers", type=int, default=1)
    parser.add_argument("-b", "--bind", default="127.0.0.1:8000")
    args = parser.parse_args()
    host, _, port = args.bind.rpartition(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(2048)
    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            uvloop.run(serve(sock))
            os._exit(0)
        children.append(pid)
    # The parent only waits; SIGTERM to the process group ends everyone.
    for pid in children:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
