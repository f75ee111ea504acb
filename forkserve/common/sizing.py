"""How many workers ``-w auto`` starts: one per CPU this process may really use.

The count is the CPUs in the process's affinity mask, capped by the CPU quota of its cgroup (v2
``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``). ``os.cpu_count()`` alone counts the
host's CPUs, so in a container limited to 2 CPUs on a 64-CPU host it would start 64 workers that
fight over 2 CPUs' worth of time and get throttled.

The CPUs the cgroup's cpuset allows (v2 ``cpuset.cpus.effective``, v1 ``cpuset.effective_cpus``)
cap the affinity count too. The kernel normally narrows a process's affinity mask to its cpuset
already, so this only matters where the two disagree (a mask widened by hand, a runtime that pins
CPUs after start); reading both costs nothing and never counts more CPUs than either allows.

A fractional quota is rounded up (1.5 CPUs -> 2 workers): with one worker the extra half CPU of time
could never be used, while two workers merely share it. The result is never below 1, and never
above the affinity count, since a quota is time, not CPUs to run on.

A limit set on any ancestor cgroup binds every cgroup below it, so the walk goes from the process's
own cgroup up to the mount root and keeps the smallest quota found. Inside a container the cgroup
mount's root often *is* the container's cgroup, while /proc/self/cgroup says ``/`` (a cgroup
namespace) or a host path such as ``/docker/abc`` that does not exist under the mount; either way
the walk reaches the mount root and reads the container's own files there.

Parsing is pure (text in, numbers out); only ``cpu_budget`` and ``usable_cpu_count`` touch files,
under a ``root`` that tests point at a fake tree. A missing, unreadable or malformed file means "no
limit": sizing must never stop the server from starting.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NamedTuple

__all__ = [
    "CgroupPaths",
    "CpuBudget",
    "affinity_count",
    "cpu_budget",
    "parse_cgroup_v1_quota",
    "parse_cgroup_v2_cpu_max",
    "parse_cpu_list",
    "parse_proc_self_cgroup",
    "usable_cpu_count",
    "workers_for",
]

# Where the hierarchies are mounted, relative to the filesystem root. On hybrid hosts (systemd's
# default before cgroup v2 became the norm) the v2 tree sits at .../unified; on such hosts the cpu
# controller lives in v1, so the unified tree has no cpu.max and costs nothing to look at.
_V2_MOUNTS = ("sys/fs/cgroup", "sys/fs/cgroup/unified")
_V1_ROOT = "sys/fs/cgroup"
_V1_CPU_DIRS = ("cpu,cpuacct", "cpuacct,cpu", "cpu")


class CgroupPaths(NamedTuple):
    """The process's cgroup in each hierarchy that can hold a CPU quota (None: not listed)."""

    v2: str | None
    v1_cpu: str | None
    # The v1 controller list as written (``cpu,cpuacct``): distros name the mount directory after it.
    v1_cpu_controllers: str | None = None
    v1_cpuset: str | None = None


@dataclass(frozen=True)
class CpuBudget:
    """Why ``auto`` chose ``workers``: the affinity count, and the tightest quota with its file."""

    affinity: int
    quota: float | None
    source: str | None
    workers: int
    # CPUs in the cgroup's cpuset, when a cpuset file was found (and the file).
    cpuset: int | None = None
    cpuset_source: str | None = None

    def describe(self) -> str:
        cpus = f"{self.affinity} CPUs in the affinity mask"
        if self.cpuset is not None and self.cpuset < self.affinity:
            cpus += f", {self.cpuset} in the cpuset ({self.cpuset_source})"
        if self.quota is None:
            return f"{self.workers} workers: {cpus}, no cgroup CPU quota"
        return f"{self.workers} workers: {cpus}, quota {self.quota:g} CPUs from {self.source}"


def parse_cgroup_v2_cpu_max(text: str) -> float | None:
    """CPUs allowed by a v2 ``cpu.max`` (``"150000 100000"`` -> 1.5); None for ``max`` or garbage."""
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def parse_cgroup_v1_quota(quota_text: str, period_text: str) -> float | None:
    """CPUs allowed by v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; None for -1 or garbage."""
    return _ratio(quota_text.strip(), period_text.strip())


def _ratio(quota_text: str, period_text: str) -> float | None:
    try:
        quota, period = int(quota_text), int(period_text)
    except ValueError:
        return None
    # -1 is v1's "unlimited"; zero or other negatives are not values the kernel writes.
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def parse_cpu_list(text: str) -> int | None:
    """How many CPUs a cpuset list names (``"0-3,8"`` -> 5); None for an empty list or garbage."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            return None
        if low < 0 or high < low:
            return None
        cpus.update(range(low, high + 1))
    return len(cpus) or None


def parse_proc_self_cgroup(text: str) -> CgroupPaths:
    """The v2 path (``0::/x``) and the v1 cpu path (``4:cpu,cpuacct:/x``) from /proc/self/cgroup."""
    v2: str | None = None
    v1_cpu: str | None = None
    v1_controllers: str | None = None
    v1_cpuset: str | None = None
    for line in text.splitlines():
        # The path is last and may itself contain ':', hence maxsplit.
        parts = line.strip().split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1_cpu, v1_controllers = path, controllers
        if "cpuset" in controllers.split(","):
            v1_cpuset = path
    return CgroupPaths(v2=v2, v1_cpu=v1_cpu, v1_cpu_controllers=v1_controllers, v1_cpuset=v1_cpuset)


def workers_for(affinity: int, quota: float | None) -> int:
    """Workers for ``affinity`` usable CPUs under ``quota`` CPUs of time (None: unlimited)."""
    affinity = max(1, affinity)
    if quota is None or not math.isfinite(quota) or quota <= 0:
        return affinity
    return min(affinity, max(1, math.ceil(quota)))


def affinity_count() -> int:
    """CPUs this process may run on; os.cpu_count() where sched_getaffinity does not exist."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            return max(1, len(getaffinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def cpu_budget(root: Path = Path("/"), *, affinity: int | None = None) -> CpuBudget:
    """Read the cgroup files under ``root`` and decide; ``affinity`` overrides the real mask (tests)."""
    if affinity is None:
        affinity = affinity_count()
    paths = parse_proc_self_cgroup(_read(root / "proc/self/cgroup") or "")
    limits: list[tuple[float, str]] = []

    if paths.v2 is not None:
        for mount in _V2_MOUNTS:
            for directory in _walk_up(root / mount, paths.v2):
                file = directory / "cpu.max"
                quota = parse_cgroup_v2_cpu_max(_read(file) or "")
                if quota is not None:
                    limits.append((quota, f"cgroup v2 {_display(root, file)}"))

    if paths.v1_cpu is not None:
        v1_mount = _v1_cpu_mount(root, paths.v1_cpu_controllers)
        if v1_mount is not None:
            for directory in _walk_up(v1_mount, paths.v1_cpu):
                quota_file = directory / "cpu.cfs_quota_us"
                quota = parse_cgroup_v1_quota(
                    _read(quota_file) or "", _read(directory / "cpu.cfs_period_us") or ""
                )
                if quota is not None:
                    limits.append((quota, f"cgroup v1 {_display(root, quota_file)}"))

    cpuset, cpuset_source = _cpuset(root, paths)
    usable = affinity if cpuset is None else min(affinity, cpuset)
    quota, source = min(limits, key=lambda limit: limit[0]) if limits else (None, None)
    return CpuBudget(
        affinity=affinity, quota=quota, source=source, workers=workers_for(usable, quota),
        cpuset=cpuset, cpuset_source=cpuset_source,
    )  # fmt: skip


def _cpuset(root: Path, paths: CgroupPaths) -> tuple[int | None, str | None]:
    """CPUs of the nearest cgroup (own, else an ancestor) that has a cpuset file, and the file."""
    candidates: list[Path] = []
    if paths.v2 is not None:
        for mount in _V2_MOUNTS:
            candidates += [d / "cpuset.cpus.effective" for d in _walk_up(root / mount, paths.v2)]
    if paths.v1_cpuset is not None:
        for directory in _walk_up(root / _V1_ROOT / "cpuset", paths.v1_cpuset):
            candidates += [directory / "cpuset.effective_cpus", directory / "cpuset.cpus"]
    for file in candidates:
        count = parse_cpu_list(_read(file) or "")
        if count is not None:
            return count, f"cgroup {_display(root, file)}"
    return None, None


def usable_cpu_count(root: Path = Path("/")) -> int:
    """The worker count for ``-w auto``: see the module docstring."""
    return cpu_budget(root).workers


def _walk_up(mount: Path, cgroup: str) -> list[Path]:
    """The directories of ``cgroup`` and its ancestors under ``mount``, deepest first."""
    parts = PurePosixPath(cgroup).parts[1:]
    # A '..' means the process sits outside the cgroup namespace's root, so what the mount shows
    # is not its ancestry; better to impose no limit than someone else's.
    if ".." in parts:
        return []
    return [mount.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _v1_cpu_mount(root: Path, controllers: str | None) -> Path | None:
    names = (controllers, *_V1_CPU_DIRS) if controllers else _V1_CPU_DIRS
    for name in names:
        candidate = root / _V1_ROOT / name
        if candidate.is_dir():
            return candidate
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _display(root: Path, path: Path) -> str:
    """``path`` as it would read under the real ``/``, so messages do not depend on ``root``."""
    try:
        return "/" + path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
