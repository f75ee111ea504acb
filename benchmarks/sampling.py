"""CPU and memory of a server's process tree, and of the machine around it: the one sampling helper.

A benchmark on a shared 2-core machine needs two figures beside its own: what the server used
(its live processes plus the workers its master already reaped, which a reload replaces), and what
everything else used meanwhile (``foreign_cpu_share``), to tell a noisy run from a slow server.
"""

from __future__ import annotations

import contextlib
import resource
import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Memory:
    processes: int
    rss: int
    pss: int


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and its descendants, the process first; empty when it is gone."""
    try:
        leader = psutil.Process(pid)
        return [leader, *leader.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_memory(pid: int) -> Memory:
    """Sum RSS and PSS over the server's whole tree.

    RSS counts pages shared between a pre-fork master and its workers once per process; PSS splits
    them, so the two together show how much a fork model really shares.
    """
    rss = pss = processes = 0
    for proc in process_tree(pid):
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += info.pss
        processes += 1
    return Memory(processes=processes, rss=rss, pss=pss)


@dataclass(frozen=True)
class CpuSnapshot:
    wall: float
    busy: float  # CPU seconds the whole machine spent not idle
    server: float  # CPU seconds of the server's tree, reaped children of its leader included
    ours: float  # CPU seconds of this runner and its reaped children (wrk, load generators)
    tree: tuple[psutil.Process, ...]


def cpu_snapshot(pid: int | None, tree: tuple[psutil.Process, ...] | None = None) -> CpuSnapshot:
    """The machine's, the server's (``pid``'s tree, or the given ``tree``) and our CPU time now."""
    if tree is None:
        tree = tuple(process_tree(pid)) if pid is not None else ()
    times = psutil.cpu_times()
    busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    return CpuSnapshot(time.monotonic(), busy, tree_cpu(tree), ours, tree)


def tree_cpu(tree: tuple[psutil.Process, ...]) -> float:
    """CPU seconds of the live processes, plus those the first one (the leader) reaped.

    A reload or a recycle replaces workers; summing only the live tree would lose the old ones.
    """
    total = 0.0
    for index, proc in enumerate(tree):
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system
            if index == 0:
                total += t.children_user + t.children_system
    return total


def foreign_cpu_share(before: CpuSnapshot, after: CpuSnapshot, helpers: float = 0.0) -> float:
    """Share of the machine's CPU capacity used by neither the server, our children nor this runner.

    Servers and load generators fight for the same cores here, so anything else running (a test
    suite, a build) lowers the figures; this says how much it did. HELPERS is the CPU seconds our
    own live child processes (load clients not yet reaped, so not in ``ours``) used meanwhile.
    """
    ours = after.ours - before.ours + helpers
    other = (after.busy - before.busy) - (after.server - before.server) - ours
    capacity = (after.wall - before.wall) * (psutil.cpu_count() or 1)
    return max(0.0, other / capacity) if capacity > 0 else 0.0


def wait_for_quiet(max_share: float, timeout: float) -> float:
    """Wait until the machine's CPUs are at most ``max_share`` busy, or ``timeout`` has passed.

    Called between runs, when no server of ours is up: whatever CPU is in use is someone else's, and
    waiting it out is cheaper than running a server only to throw its figures away.
    """
    deadline = time.monotonic() + timeout
    share = psutil.cpu_percent(interval=1.0) / 100
    while share > max_share and time.monotonic() < deadline:
        share = psutil.cpu_percent(interval=1.0) / 100
    return share
