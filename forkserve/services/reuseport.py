"""--balance reuseport: one SO_REUSEPORT socket per worker id, and a steering program for the group.

Theory of operation. The master binds, for every TCP address, one listening socket per worker id
(the ``--bind`` socket itself is worker 1's) with SO_REUSEPORT, so each has its own accept queue
and the kernel picks a queue per new connection. The sockets live in the master for the whole run:
a worker replaced in a reload or a recycling has the same worker id, so its replacement accepts on
the very socket, and whatever waited in its queue is served, not reset.

The kernel's own pick is a hash of the connection's addresses and ports over every socket of the
group, including the sockets of worker ids that have no worker (the autoscaler's spare ids, a
scaled-down id) and of a worker that hangs: connections hashed there would wait for nobody. So the
master attaches a classic BPF program to the group (SO_ATTACH_REUSEPORT_CBPF) that spreads
connections over the sockets of the worker ids serving now, by a hash of the client's address and
port, and re-attaches it whenever that set changes (``policy.balance.reuseport_targets``). A hung
worker's socket is dropped from the program once its heartbeat is older than ``--timeout``, the
moment the master's hung check also fires; what is already queued there waits for the replacement,
which accepts on the same socket.

The rejected alternative, closing a hung or retired worker's socket and binding a fresh one for its
replacement, resets every connection in the old queue.

A group's sockets are numbered in the order they started listening, and a socket leaves the group
only when its last copy closes; the master holds a copy of each until it stops, so index = worker
id - 1 holds for the whole run.
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct
from collections.abc import Sequence

SO_ATTACH_REUSEPORT_CBPF = 51
# Classic BPF: loads relative to the network header (the packet data starts past the TCP header).
_SKF_NET_OFF = -0x100000
_LD_W_ABS, _LD_H_ABS, _LD_B_ABS = 0x20, 0x28, 0x30
_TAX = 0x07
_ADD_X, _MUL_K, _RSH_K, _MOD_K, _AND_K = 0x0C, 0x24, 0x74, 0x94, 0x54
_JEQ_K, _JA = 0x15, 0x05
_RET_K = 0x06

Instruction = tuple[int, int, int, int]


def steering_program(targets: Sequence[int]) -> list[Instruction]:
    """A cBPF program returning one of TARGETS (socket indices) by a hash of source address and port.

    With no target it returns 0 (worker 1's socket), so a connection made while no worker serves
    waits in a queue that a worker will empty, as it would in kernel mode.
    """
    if not targets:
        return [(_RET_K, 0, 0, 0)]
    net = _SKF_NET_OFF & 0xFFFFFFFF
    program: list[Instruction] = [
        (_LD_B_ABS, 0, 0, net),  # IP version nibble
        (_AND_K, 0, 0, 0xF0),
        (_JEQ_K, 0, 4, 0x60),
        # IPv6: last word of the source address, then the source port.
        (_LD_W_ABS, 0, 0, (net + 20) & 0xFFFFFFFF),
        (_TAX, 0, 0, 0),
        (_LD_H_ABS, 0, 0, (net + 40) & 0xFFFFFFFF),
        (_JA, 0, 0, 3),
        # IPv4 (a SYN carries no IP options): source address, then the source port.
        (_LD_W_ABS, 0, 0, (net + 12) & 0xFFFFFFFF),
        (_TAX, 0, 0, 0),
        (_LD_H_ABS, 0, 0, (net + 20) & 0xFFFFFFFF),
        # Mix (Linux picks client ports in steps of 2: port % n alone would use half the sockets).
        (_ADD_X, 0, 0, 0),
        (_MUL_K, 0, 0, 0x9E3779B1),
        (_RSH_K, 0, 0, 16),
        (_MOD_K, 0, 0, len(targets)),
    ]
    for number, target in enumerate(targets):
        program += [(_JEQ_K, 0, 1, number), (_RET_K, 0, 0, target)]
    program.append((_RET_K, 0, 0, targets[0]))
    return program


def attach(sock: socket.socket, program: Sequence[Instruction]) -> None:
    """Replace the steering program of SOCK's whole reuseport group."""
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("HP", len(program), ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def bind_like(primary: socket.socket, backlog: int) -> socket.socket:
    """Another listening socket in PRIMARY's reuseport group (same family and address)."""
    sock = socket.socket(primary.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if primary.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(primary.getsockname())
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def close_quietly(socks: Sequence[socket.socket]) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.close()
