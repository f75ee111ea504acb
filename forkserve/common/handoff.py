"""Hand-off channels: how the master passes accepted connections to a worker.

Theory of operation (--balance round-robin, least-conn, ip-hash). The master creates one
``SOCK_SEQPACKET`` socketpair per scoreboard slot before the first zygote and keeps both ends for
the whole run; zygotes inherit the worker ends, and a worker uses the one of its slot. Each
accepted connection travels as one packet carrying its fd (SCM_RIGHTS). Because the master keeps
the worker end too, a connection never dies with a worker: one still queued when the worker
exits is either read by the next worker in that slot or taken back by the balancer (which reads
the worker end of a freed slot) and handed to another worker.

Workers never accept on the listening sockets in these modes (they do not even inherit them): a
worker takes connections from its channel in its event loop (``forkserve.worker.inbox``) and gives
each to uvicorn's protocol through ``loop.connect_accepted_socket``, so the draining protocol
(``forkserve/http/protocol.py``) applies as in kernel mode. Stopping:

* retired (reload, scale-down, recycling): the balancer stops choosing a worker as soon as its
  slot says draining; the worker keeps reading its channel until its connections are done, and
  serves what arrives meanwhile with ``Connection: close``. Anything sent after that is taken back.
* server shutdown: the balancer empties the accept queue into the workers, closes the listening
  sockets, then sends END on every channel; a worker waits for END (at most a couple of seconds)
  before it finishes, the counterpart of kernel mode emptying the accept queue.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

from forkserve.common.scoreboard import Slot

CONNECTION = b"C"
END = b"E"
# fds one receive may carry: the balancer sends one per packet, this is room for later batching.
MAX_FDS = 16


def channel_pairs(count: int) -> list[tuple[socket.socket, socket.socket]]:
    """(master end, worker end) for each slot. Both ends non-blocking, close-on-exec."""
    pairs = []
    for _ in range(count):
        master_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        master_end.setblocking(False)
        worker_end.setblocking(False)
        pairs.append((master_end, worker_end))
    return pairs


def send_connection(channel: socket.socket, fd: int) -> bool:
    """Hand FD over; False when the channel is full (the worker is far behind)."""
    try:
        socket.send_fds(channel, [CONNECTION], [fd])
    except BlockingIOError:
        return False
    return True


def take_back(worker_end: socket.socket) -> list[int]:
    """Every connection still queued in a channel whose worker is gone."""
    fds: list[int] = []
    while True:
        try:
            _, received, _, _ = socket.recv_fds(worker_end, 16, MAX_FDS)
        except (BlockingIOError, OSError):
            return fds
        fds.extend(received)


class CountedConnections(set[Any]):
    """uvicorn's set of open connections, also written live into the scoreboard slot.

    least-conn reads the count per connection it places; the heartbeat tick alone would make it
    up to a quarter of a second old, long enough for a burst to land on one worker.
    """

    def __init__(self, slot: Slot) -> None:
        super().__init__()
        self.slot = slot

    def add(self, item: Any) -> None:
        super().add(item)
        self.slot.connections = len(self)

    def discard(self, item: Any) -> None:
        super().discard(item)
        self.slot.connections = len(self)

    def remove(self, item: Any) -> None:
        super().remove(item)
        self.slot.connections = len(self)


def worker_sockets(
    mode: str,
    listeners: list[socket.socket],
    balance_fds: list[int],
    *,
    worker_id: int,
    slot: int,
) -> tuple[list[socket.socket], socket.socket | None]:
    """(sockets to accept on, hand-off channel) for one worker; closes the fds it does not need.

    BALANCE_FDS is what the balancer gave the zygote: in a hand-off mode the worker end of each
    slot's channel, by slot; in reuseport mode one row per worker id from 2 on, one fd per
    listener (-1 where the listener is not TCP and stays shared).
    """
    if not balance_fds:
        return listeners, None
    keep: set[int] = set()
    mine: list[socket.socket] = listeners
    channel: socket.socket | None = None
    if mode == "reuseport":
        width = len(listeners)
        start = (worker_id - 2) * width
        if worker_id >= 2 and start + width <= len(balance_fds):
            row = balance_fds[start : start + width]
            keep = {fd for fd in row if fd >= 0}
            mine = [
                socket.socket(fileno=fd) if fd >= 0 else shared
                for fd, shared in zip(row, listeners, strict=True)
            ]
    else:
        keep = {balance_fds[slot]}
        channel = socket.socket(fileno=balance_fds[slot])
        mine = []
    for fd in set(balance_fds) - keep:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    return mine, channel
