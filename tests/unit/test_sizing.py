"""``-w auto`` sizing: pure parsers over text, then fake /proc and /sys trees under tmp_path."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from forkserve.common.sizing import (
    CgroupPaths,
    CpuBudget,
    affinity_count,
    cpu_budget,
    parse_cgroup_v1_quota,
    parse_cgroup_v2_cpu_max,
    parse_cpu_list,
    parse_proc_self_cgroup,
    usable_cpu_count,
    workers_for,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max 100000\n", None),
        ("max 100000", None),
        ("50000 100000\n", 0.5),
        ("150000 100000\n", 1.5),
        ("400000 100000\n", 4.0),
        ("200000 50000\n", 4.0),
        ("", None),
        ("max", None),
        ("150000", None),
        ("abc 100000", None),
        ("150000 abc", None),
        ("150000 0", None),
        ("0 100000", None),
        ("-1 100000", None),
        ("1.5 1", None),
        ("150000 100000 7", None),
        ("\x00\x01garbage", None),
    ],
)
def test_parse_cgroup_v2_cpu_max(text: str, expected: float | None) -> None:
    assert parse_cgroup_v2_cpu_max(text) == expected


@pytest.mark.parametrize(
    ("quota", "period", "expected"),
    [
        ("-1\n", "100000\n", None),
        ("50000\n", "100000\n", 0.5),
        ("150000\n", "100000\n", 1.5),
        ("300000", "100000", 3.0),
        ("0", "100000", None),
        ("-5", "100000", None),
        ("150000", "0", None),
        ("150000", "", None),
        ("", "100000", None),
        ("max", "100000", None),
        ("garbage", "junk", None),
    ],
)
def test_parse_cgroup_v1_quota(quota: str, period: str, expected: float | None) -> None:
    assert parse_cgroup_v1_quota(quota, period) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0::/\n", CgroupPaths(v2="/", v1_cpu=None)),
        ("0::/system.slice/app.service\n", CgroupPaths(v2="/system.slice/app.service", v1_cpu=None)),
        (
            "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/docker/abc\n",
            CgroupPaths(v2="/docker/abc", v1_cpu="/docker/abc", v1_cpu_controllers="cpu,cpuacct"),
        ),
        # cpuacct and cpuset alone are not the cpu controller.
        (
            "3:cpuset:/a\n2:cpuacct:/b\n1:cpu:/c\n",
            CgroupPaths(v2=None, v1_cpu="/c", v1_cpu_controllers="cpu", v1_cpuset="/a"),
        ),
        ("3:cpuset:/a\n2:cpuacct:/b\n", CgroupPaths(v2=None, v1_cpu=None, v1_cpuset="/a")),
        ("0::/odd:name\n", CgroupPaths(v2="/odd:name", v1_cpu=None)),
        ("", CgroupPaths(v2=None, v1_cpu=None)),
        ("garbage\n::\n0::relative\n", CgroupPaths(v2=None, v1_cpu=None)),
    ],
)
def test_parse_proc_self_cgroup(text: str, expected: CgroupPaths) -> None:
    assert parse_proc_self_cgroup(text) == expected


@pytest.mark.parametrize(
    ("affinity", "quota", "expected"),
    [
        (8, None, 8),
        (8, 0.5, 1),
        (8, 0.01, 1),
        (8, 1.0, 1),
        (8, 1.5, 2),
        (8, 2.0, 2),
        (8, 3.2, 4),
        (2, 4.0, 2),
        (1, 0.5, 1),
        (0, None, 1),
        (4, math.inf, 4),
        (4, math.nan, 4),
        (4, 0.0, 4),
    ],
)
def test_workers_for(affinity: int, quota: float | None, expected: int) -> None:
    assert workers_for(affinity, quota) == expected


def _tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


V2 = "sys/fs/cgroup"
V1 = "sys/fs/cgroup/cpu,cpuacct"
CG = "proc/self/cgroup"


def _v1(directory: str, quota: str, period: str = "100000\n") -> dict[str, str]:
    return {f"{directory}/cpu.cfs_quota_us": quota, f"{directory}/cpu.cfs_period_us": period}


def _limited(affinity: int, quota: float, source: str, workers: int) -> CpuBudget:
    return CpuBudget(affinity=affinity, quota=quota, source=source, workers=workers)


def _unlimited(affinity: int) -> CpuBudget:
    return CpuBudget(affinity=affinity, quota=None, source=None, workers=affinity)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {CG: "0::/app\n", f"{V2}/app/cpu.max": "max 100000\n"},
            _unlimited(8),
            id="v2-max",
        ),
        pytest.param(
            {CG: "0::/app\n", f"{V2}/app/cpu.max": "50000 100000\n"},
            _limited(8, 0.5, "cgroup v2 /sys/fs/cgroup/app/cpu.max", 1),
            id="v2-half",
        ),
        pytest.param(
            {CG: "0::/app\n", f"{V2}/app/cpu.max": "150000 100000\n"},
            _limited(8, 1.5, "cgroup v2 /sys/fs/cgroup/app/cpu.max", 2),
            id="v2-one-and-a-half",
        ),
        pytest.param(
            {CG: "0::/app\n", f"{V2}/app/cpu.max": "400000 100000\n"},
            _limited(2, 4.0, "cgroup v2 /sys/fs/cgroup/app/cpu.max", 2),
            id="v2-quota-above-affinity",
        ),
        pytest.param(
            {
                CG: "0::/parent/child\n",
                f"{V2}/parent/cpu.max": "100000 100000\n",
                f"{V2}/parent/child/cpu.max": "300000 100000\n",
            },
            _limited(8, 1.0, "cgroup v2 /sys/fs/cgroup/parent/cpu.max", 1),
            id="v2-parent-tighter",
        ),
        pytest.param(
            {
                CG: "0::/parent/child\n",
                f"{V2}/parent/cpu.max": "max 100000\n",
                f"{V2}/parent/child/cpu.max": "250000 100000\n",
            },
            _limited(8, 2.5, "cgroup v2 /sys/fs/cgroup/parent/child/cpu.max", 3),
            id="v2-child-tighter",
        ),
        pytest.param(
            {CG: "0::/\n", f"{V2}/cpu.max": "200000 100000\n"},
            _limited(8, 2.0, "cgroup v2 /sys/fs/cgroup/cpu.max", 2),
            id="v2-container-namespace-root",
        ),
        pytest.param(
            # No cgroup namespace: the host's path does not exist under the container's mount.
            {CG: "0::/docker/abc\n", f"{V2}/cpu.max": "300000 100000\n"},
            _limited(8, 3.0, "cgroup v2 /sys/fs/cgroup/cpu.max", 3),
            id="v2-container-host-path",
        ),
        pytest.param(
            {CG: "0::/\n", f"{V2}/unified/cpu.max": "100000 100000\n"},
            _limited(8, 1.0, "cgroup v2 /sys/fs/cgroup/unified/cpu.max", 1),
            id="v2-hybrid-unified",
        ),
        pytest.param(
            {CG: "0::/app\n", f"{V2}/app/cpu.max": "garbage"},
            _unlimited(8),
            id="v2-garbage",
        ),
        pytest.param(
            {CG: "0::/../elsewhere\n", f"{V2}/cpu.max": "100000 100000\n"},
            _unlimited(8),
            id="v2-outside-namespace",
        ),
        pytest.param(
            {CG: "4:cpu,cpuacct:/app\n", **_v1(f"{V1}/app", "-1\n")},
            _unlimited(8),
            id="v1-unlimited",
        ),
        pytest.param(
            {CG: "4:cpu,cpuacct:/app\n", **_v1(f"{V1}/app", "150000\n")},
            _limited(8, 1.5, "cgroup v1 /sys/fs/cgroup/cpu,cpuacct/app/cpu.cfs_quota_us", 2),
            id="v1-quota",
        ),
        pytest.param(
            {CG: "4:cpu,cpuacct:/app\n", **_v1(f"{V1}/app", "50000\n")},
            _limited(8, 0.5, "cgroup v1 /sys/fs/cgroup/cpu,cpuacct/app/cpu.cfs_quota_us", 1),
            id="v1-half",
        ),
        pytest.param(
            {CG: "4:cpu,cpuacct:/app\n", **_v1(f"{V1}/app", "400000\n")},
            _limited(2, 4.0, "cgroup v1 /sys/fs/cgroup/cpu,cpuacct/app/cpu.cfs_quota_us", 2),
            id="v1-quota-above-affinity",
        ),
        pytest.param(
            {CG: "1:cpu:/\n", **_v1(f"{V2}/cpu", "200000\n")},
            _limited(8, 2.0, "cgroup v1 /sys/fs/cgroup/cpu/cpu.cfs_quota_us", 2),
            id="v1-mount-named-cpu",
        ),
        pytest.param(
            {
                CG: "4:cpu,cpuacct:/parent/child\n",
                **_v1(V1, "-1\n"),
                **_v1(f"{V1}/parent", "100000\n"),
                **_v1(f"{V1}/parent/child", "-1\n"),
            },
            _limited(8, 1.0, "cgroup v1 /sys/fs/cgroup/cpu,cpuacct/parent/cpu.cfs_quota_us", 1),
            id="v1-parent-tighter",
        ),
        pytest.param(
            {CG: "4:cpu,cpuacct:/docker/abc\n", **_v1(V1, "300000\n")},
            _limited(8, 3.0, "cgroup v1 /sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", 3),
            id="v1-container-host-path",
        ),
        pytest.param(
            {CG: "4:cpu,cpuacct:/app\n", f"{V1}/app/cpu.cfs_quota_us": "150000\n"},
            _unlimited(8),
            id="v1-period-missing",
        ),
        pytest.param(
            {CG: "4:cpu,cpuacct:/app\n", **_v1(f"{V1}/app", "lots\n")},
            _unlimited(8),
            id="v1-garbage",
        ),
        pytest.param({}, _unlimited(8), id="nothing-at-all"),
        pytest.param({CG: "0::/app\n"}, _unlimited(8), id="cgroup-files-missing"),
        pytest.param({CG: "\x00 not a cgroup file \x00"}, _unlimited(8), id="proc-garbage"),
        pytest.param({f"{V2}/cpu.max": "100000 100000\n"}, _unlimited(8), id="proc-missing"),
    ],
)
def test_cpu_budget_from_fake_tree(tmp_path: Path, files: dict[str, str], expected: CpuBudget) -> None:
    budget = cpu_budget(_tree(tmp_path, files), affinity=expected.affinity)
    assert budget == expected
    assert budget.describe().startswith(f"{expected.workers} workers: ")


def test_unreadable_file_means_no_limit(tmp_path: Path) -> None:
    # A directory where the file should be makes the read fail even for root.
    _tree(tmp_path, {CG: "0::/app\n"})
    (tmp_path / V2 / "app" / "cpu.max").mkdir(parents=True)
    assert cpu_budget(tmp_path, affinity=4) == CpuBudget(affinity=4, quota=None, source=None, workers=4)


def test_non_utf8_file_means_no_limit(tmp_path: Path) -> None:
    _tree(tmp_path, {CG: "0::/app\n"})
    (tmp_path / V2 / "app").mkdir(parents=True)
    (tmp_path / V2 / "app" / "cpu.max").write_bytes(b"\xff\xfe 100000\n")
    assert cpu_budget(tmp_path, affinity=4).quota is None


def test_usable_cpu_count_uses_real_affinity_on_fake_tree(tmp_path: Path) -> None:
    _tree(tmp_path, {CG: "0::/\n", f"{V2}/cpu.max": "100000 100000\n"})
    assert usable_cpu_count(tmp_path) == 1
    assert usable_cpu_count(tmp_path / "empty") == affinity_count()


def test_describe_names_the_source(tmp_path: Path) -> None:
    _tree(tmp_path, {CG: "0::/app\n", f"{V2}/app/cpu.max": "150000 100000\n"})
    line = cpu_budget(tmp_path, affinity=8).describe()
    assert line == (
        "2 workers: 8 CPUs in the affinity mask, quota 1.5 CPUs from cgroup v2 /sys/fs/cgroup/app/cpu.max"
    )


def _real_quota() -> float | None:
    """This machine's tightest CPU quota, read directly: the own cgroup and each ancestor."""
    quotas: list[float] = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0":
            mounts = [Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")]
        elif "cpu" in controllers.split(","):
            candidates = [Path("/sys/fs/cgroup") / name for name in ("cpu,cpuacct", "cpuacct,cpu", "cpu")]
            mounts = [m for m in candidates if m.is_dir()][:1]
        else:
            continue
        for mount in mounts:
            directory = mount / path.lstrip("/")
            while True:
                cpu_max = directory / "cpu.max"
                v1_quota = directory / "cpu.cfs_quota_us"
                if cpu_max.is_file():
                    quota, period = cpu_max.read_text().split()
                    if quota != "max":
                        quotas.append(int(quota) / int(period))
                elif v1_quota.is_file():
                    quota_us = int(v1_quota.read_text())
                    if quota_us > 0:
                        quotas.append(quota_us / int((directory / "cpu.cfs_period_us").read_text()))
                if directory == mount:
                    break
                directory = directory.parent
    return min(quotas, default=None)


def test_real_machine() -> None:
    affinity = len(os.sched_getaffinity(0))
    quota = _real_quota()
    expected = affinity if quota is None else min(affinity, max(1, math.ceil(quota)))
    budget = cpu_budget()
    assert budget.affinity == affinity
    assert usable_cpu_count() == expected
    print(budget.describe())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0-3\n", 4),
        ("0-3,8,10-11\n", 7),
        ("5", 1),
        ("0,0-1", 2),  # overlaps counted once
        ("", None),
        ("\n", None),
        ("3-1", None),
        ("a-b", None),
        ("0-3,", None),
        ("-1", None),
    ],
)
def test_parse_cpu_list(text: str, expected: int | None) -> None:
    assert parse_cpu_list(text) == expected


@pytest.mark.parametrize(
    ("files", "affinity", "workers", "cpuset"),
    [
        # v2: the own cgroup's effective cpuset narrows an 8-CPU mask to 2.
        ({CG: "0::/app\n", f"{V2}/app/cpuset.cpus.effective": "2-3\n"}, 8, 2, 2),
        # v2: no cpuset file at the own level: the nearest ancestor's counts.
        ({CG: "0::/a/b\n", f"{V2}/a/cpuset.cpus.effective": "0-2\n"}, 8, 3, 3),
        # v2: a cpuset wider than the mask changes nothing.
        ({CG: "0::/\n", f"{V2}/cpuset.cpus.effective": "0-63\n"}, 4, 4, 64),
        # v2: cpuset and quota together: the tighter wins (quota 1.5 -> 2 of 3 cpuset CPUs).
        (
            {CG: "0::/app\n", f"{V2}/app/cpuset.cpus.effective": "0-2", f"{V2}/app/cpu.max": "150000 100000"},
            8, 2, 3,
        ),
        # v1: effective_cpus first, cpuset.cpus where the kernel has no effective file.
        (
            {CG: "3:cpuset:/docker/x\n", "sys/fs/cgroup/cpuset/docker/x/cpuset.effective_cpus": "4,6\n"},
            8, 2, 2,
        ),
        ({CG: "3:cpuset:/docker/x\n", "sys/fs/cgroup/cpuset/docker/x/cpuset.cpus": "0\n"}, 8, 1, 1),
        # An empty or garbled cpuset means "not known": the mask alone decides.
        ({CG: "0::/app\n", f"{V2}/app/cpuset.cpus.effective": "\n"}, 8, 8, None),
        ({CG: "3:cpuset:/x\n", "sys/fs/cgroup/cpuset/x/cpuset.cpus": "zz"}, 8, 8, None),
    ],
)  # fmt: skip
def test_cpuset_caps_the_worker_count(
    tmp_path: Path, files: dict[str, str], affinity: int, workers: int, cpuset: int | None
) -> None:
    budget = cpu_budget(_tree(tmp_path, files), affinity=affinity)
    assert (budget.workers, budget.cpuset) == (workers, cpuset)


def test_describe_names_the_cpuset(tmp_path: Path) -> None:
    _tree(tmp_path, {CG: "0::/app\n", f"{V2}/app/cpuset.cpus.effective": "0-1\n"})
    assert cpu_budget(tmp_path, affinity=8).describe() == (
        "2 workers: 8 CPUs in the affinity mask, 2 in the cpuset "
        "(cgroup /sys/fs/cgroup/app/cpuset.cpus.effective), no cgroup CPU quota"
    )
