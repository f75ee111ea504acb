"""The scoreboard: one fixed-size slot per worker process, in memory shared by every process.

Theory of operation. The master creates the scoreboard before the first zygote as a memfd (an
anonymous ``MAP_SHARED`` mapping would not survive the zygote's ``exec``) and passes its fd down;
each process maps it. A slot belongs to one worker from the moment the master assigns it until the
master has reaped that worker. Workers write only their own slot, from inside their event loop, so
a blocked loop shows up as a stale heartbeat; the master writes a slot only while no worker owns
it, except ``stop_mode``, which the master sets just before it signals the worker to stop, and
``rebalance``, which it bumps after adding a worker (see ``WorkerServer._rebalance``), and the
``Header`` after the slots, which only the master writes. Fields
are plain machine words: a reader may see a counter one tick old, never a torn value
that matters (each field is written whole and read whole).

Heartbeats use ``time.monotonic()``: CLOCK_MONOTONIC is system-wide on Linux, so the values of
different processes compare, and a wall-clock jump cannot make every worker look hung.
"""

from __future__ import annotations

import ctypes
import enum
import mmap
import os


class SlotState(enum.IntEnum):
    FREE = 0
    BOOTING = 1
    READY = 2
    DRAINING = 3


class StopMode(enum.IntEnum):
    """Written by the master into a worker's slot just before it sends TERM."""

    RETIRE = 0  # reload, scale-down, recycling: other workers keep serving
    SHUTDOWN = 1  # the whole server stops: --shutdown-delay applies, the accept queue is emptied


class Slot(ctypes.Structure):
    _fields_ = [
        ("pid", ctypes.c_int32),
        ("worker_id", ctypes.c_int32),
        ("generation", ctypes.c_uint32),
        ("state", ctypes.c_uint32),
        ("boot_time", ctypes.c_double),
        ("heartbeat", ctypes.c_double),
        ("requests", ctypes.c_uint64),
        ("in_flight", ctypes.c_uint32),
        ("connections", ctypes.c_uint32),
        ("rss", ctypes.c_uint64),
        ("busy", ctypes.c_double),
        # The two fields the master writes while a worker owns the slot: how to stop (StopMode), and
        # a counter it bumps to ask the worker to move some keep-alive clients elsewhere.
        ("stop_mode", ctypes.c_uint32),
        ("rebalance", ctypes.c_uint32),
        # Connections this worker has taken from its hand-off channel (--balance round-robin,
        # least-conn, ip-hash): the balancer counts what it sent, so the difference is in transit.
        ("handoffs_taken", ctypes.c_uint64),
        # Open WebSocket connections (also counted in ``connections``), as of the last tick.
        ("websockets", ctypes.c_uint32),
        # Room for the fields later features add, so the layout's size stays put.
        ("_reserved", ctypes.c_uint8 * 36),
    ]


class Header(ctypes.Structure):
    """Fleet-wide words the master writes and every worker may read (``forkserve.worker_info()``).

    It sits after the slots, so adding it moved no slot's offset.
    """

    _fields_ = [
        ("workers", ctypes.c_uint32),  # the number of workers the master wants now
        ("max_workers", ctypes.c_uint32),  # the most it may want: the autoscaler's ceiling, or -w
        ("_reserved", ctypes.c_uint8 * 56),
    ]


SLOT_SIZE = ctypes.sizeof(Slot)
HEADER_SIZE = ctypes.sizeof(Header)


class Scoreboard:
    def __init__(self, fd: int, capacity: int) -> None:
        self.fd = fd
        self.capacity = capacity
        size = capacity * SLOT_SIZE + HEADER_SIZE
        self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._slots = (Slot * capacity).from_buffer(self._map)
        self.header = Header.from_buffer(self._map, capacity * SLOT_SIZE)

    @classmethod
    def create(cls, capacity: int) -> Scoreboard:
        fd = os.memfd_create("forkserve-scoreboard", os.MFD_CLOEXEC)
        os.ftruncate(fd, capacity * SLOT_SIZE + HEADER_SIZE)
        return cls(fd, capacity)

    def __getitem__(self, index: int) -> Slot:
        slot: Slot = self._slots[index]
        return slot

    def __len__(self) -> int:
        return self.capacity

    def reset(self, index: int) -> None:
        ctypes.memset(ctypes.addressof(self._slots[index]), 0, SLOT_SIZE)

    def close(self) -> None:
        # The ctypes array exports the mmap's buffer; it must go before the mmap can close.
        del self._slots
        del self.header
        try:
            self._map.close()
        finally:
            os.close(self.fd)
