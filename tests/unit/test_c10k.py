"""benchmarks/c10k.py's pure parts: the per-connection arithmetic, the medians and ratios, the table,
and the flags each server is given. The page's figures come from here, so these tables pin them."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import c10k
from benchmarks.c10k import Cell, Row, per_connection_kib, render_table, summarize, worker_split

MIB = 2**20


@pytest.mark.parametrize(
    ("pss_n", "pss_0", "idle", "kib"),
    [
        (60 * MIB + 10_000 * 8 * 1024, 60 * MIB, 10_000, 8.0),
        (40 * MIB + 1000 * 1024, 40 * MIB, 1000, 1.0),
        (40 * MIB, 41 * MIB, 1024, -1.0),  # noise can make it negative; it is shown, not hidden
        (40 * MIB, 40 * MIB, 0, None),  # N = 0 is the base, it has no per-connection figure
        (None, 40 * MIB, 1000, None),  # every run at N failed
        (40 * MIB, None, 1000, None),  # every run at 0 failed
    ],
)
def test_per_connection_kib(pss_n: float | None, pss_0: float | None, idle: int, kib: float | None) -> None:
    assert per_connection_kib(pss_n, pss_0, idle) == kib


@pytest.mark.parametrize(
    ("split", "workers", "expected"),
    [
        ([], 2, [0, 0]),  # N = 0: nobody holds an idle connection
        ([4000, 6000], 2, [6000, 4000]),
        ([10_000], 2, [10_000, 0]),  # one worker took them all
        ([5, 3000, 7000], 2, [7000, 3000]),  # a third process (a master holding a few) is left out
    ],
)
def test_worker_split(split: list[int], workers: int, expected: list[int]) -> None:
    assert worker_split(split, workers) == expected


def _cell(server: str, idle: int, round_no: int, rps: float, p99: float, pss_mib: float,
          open_after: int = 0, split: list[int] | None = None, error: str | None = None) -> Cell:  # fmt: skip
    return Cell(
        round=round_no,
        server=server,
        port=0,
        requests_per_sec=rps,
        latency_ms={"50": p99 / 2, "99": p99},
        pss=int(pss_mib * MIB),
        idle=idle,
        opened=idle,
        open_after=open_after,
        split=split or [],
        error=error,
    )


CELLS = [
    # forkserve: 3 rounds at each N; the middle value is the median.
    _cell("forkserve", 0, 1, 30_000, 5.0, 60.0),
    _cell("forkserve", 0, 2, 32_000, 4.0, 61.0),
    _cell("forkserve", 0, 3, 31_000, 6.0, 59.0),
    _cell("forkserve", 1000, 1, 29_000, 6.0, 70.0, 1000, [600, 400]),
    _cell("forkserve", 1000, 2, 28_000, 7.0, 69.0, 998, [520, 478]),
    _cell("forkserve", 1000, 3, 27_000, 8.0, 71.0, 1000, [700, 300]),
    # the baseline: one failed run at N, left out of the medians.
    _cell("gunicorn-uvicorn", 0, 1, 20_000, 10.0, 40.0),
    _cell("gunicorn-uvicorn", 0, 2, 20_000, 10.0, 40.0),
    _cell("gunicorn-uvicorn", 1000, 1, 14_000, 14.0, 45.0, 1000, [1000]),
    _cell("gunicorn-uvicorn", 1000, 2, 0, 0.0, 0.0, error="wrk got no response"),
]


def test_summarize_takes_medians_per_server_and_n_and_ratios_to_the_baseline_at_the_same_n() -> None:
    rows = summarize(CELLS, ["forkserve", "gunicorn-uvicorn"], [0, 1000], workers=2)
    by = {(r.server, r.idle): r for r in rows}
    assert [(r.server, r.idle) for r in rows] == [
        ("forkserve", 0),
        ("forkserve", 1000),
        ("gunicorn-uvicorn", 0),
        ("gunicorn-uvicorn", 1000),
    ]
    fs0, fs1, gu0, gu1 = (
        by["forkserve", 0],
        by["forkserve", 1000],
        by["gunicorn-uvicorn", 0],
        by["gunicorn-uvicorn", 1000],
    )
    assert (fs0.rps, fs0.p99_ms, fs0.pss_mib) == (31_000, 5.0, 60.0)
    assert fs0.kib_per_connection is None and fs0.kib_ratio is None
    # (70 - 60) MiB over 1,000 connections
    assert fs1.kib_per_connection == pytest.approx(10 * 1024 / 1000)
    assert fs1.open_after == 1000
    assert fs1.split == [600, 400]  # the median of each worker's rank, not one round's pair
    assert (gu1.runs, gu1.ok, gu1.rps) == (2, 1, 14_000)
    assert gu1.kib_per_connection == pytest.approx(5 * 1024 / 1000)
    assert gu1.split == [1000, 0]
    assert fs1.rps_ratio == pytest.approx(28_000 / 14_000)
    assert fs1.p99_ratio == pytest.approx(7.0 / 14.0)
    assert fs1.kib_ratio == pytest.approx(2.0)
    assert (gu0.rps_ratio, gu1.kib_ratio) == (1.0, 1.0)


def test_a_server_with_no_good_run_has_a_failed_row_and_no_ratios() -> None:
    cells = [*CELLS, _cell("uvicorn", 1000, 1, 0, 0, 0, error="did not answer")]
    rows = summarize(cells, ["uvicorn", "gunicorn-uvicorn"], [0, 1000], workers=2)
    uvicorn = {r.idle: r for r in rows if r.server == "uvicorn"}
    assert (uvicorn[0].runs, uvicorn[0].ok, uvicorn[0].rps) == (0, 0, None)
    assert (uvicorn[1000].runs, uvicorn[1000].ok) == (1, 0)
    assert uvicorn[1000].rps_ratio is None and uvicorn[1000].kib_per_connection is None
    table = render_table(rows)
    assert "| uvicorn | 1,000 | 0/1 | failed |" in table


def test_render_table_rows() -> None:
    row = Row("forkserve", 10_000, 3, 3, 31_234.4, 7.125, 152.04, 9.51, 9_998, [5_058, 4_942], 1.5, 0.8, 1.1)
    base = Row("forkserve", 0, 3, 3, 30_000, 5.0, 60.0, None, None, [0, 0], 1.0, 1.0, None)
    lines = render_table([base, row]).splitlines()
    assert lines[0].startswith("| server | idle N | ok runs | req/s | p99 | PSS | KiB per idle connection |")
    assert lines[2] == "| forkserve | 0 | 3/3 | 30,000 | 5.00 ms | 60.0 MiB |  |  |  | 1.00x | 1.00x |  |"
    assert lines[3] == (
        "| forkserve | 10,000 | 3/3 | 31,234 | 7.12 ms | 152.0 MiB | 9.5 | 9,998 / 10,000 | 5,058 / 4,942 "
        "| 1.50x | 0.80x | 1.10x |"
    )


def _settings(**changes: object) -> c10k.Settings:
    base: dict[str, object] = dict(
        rounds=1, duration=1, warmup=0, connections=8, threads=1, workers=2, keep_alive=120, refresh=30.0,
        open_timeout=10.0, server_nofile=0, capacity=0, quiet_timeout=0.0, max_other_cpu=1.0,
        python="python", forkserve_python="python", logs_dir=Path("logs"),
    )  # fmt: skip
    base.update(changes)
    return c10k.Settings(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("server", "flags"),
    [
        ("forkserve", ["--keep-alive", "120"]),
        ("gunicorn-uvicorn", ["--keep-alive", "120"]),
        ("uvicorn", ["--timeout-keep-alive", "120"]),
        ("granian", ["--http1-header-read-timeout", "60000"]),  # granian's most: 60 s
    ],
)
def test_every_server_keeps_idle_connections_with_its_own_flag(server: str, flags: list[str]) -> None:
    command = c10k.server_command(server, _settings(), 8000)
    assert command[-len(flags) :] == flags
    assert "127.0.0.1:8000" in " ".join(command) or "--port 8000" in " ".join(command)


def test_granian_alone_gets_a_connection_cap_and_nofile_wraps_every_server() -> None:
    settings = _settings(capacity=11_024, server_nofile=1024)
    for server in c10k.SERVERS:
        command = c10k.server_command(server, settings, 8000)
        assert command[:3] == ["prlimit", "--nofile=1024", "--"]
        assert ("--backpressure" in command) == (server == "granian")
    assert c10k.server_command("granian", _settings(), 8000)[-2:] == ["--http1-header-read-timeout", "60000"]


def test_n_zero_is_always_measured() -> None:
    assert c10k.parse_args(["--idle", "1000,200"]).idle_counts == [0, 200, 1000]
    assert c10k.parse_args(["--quick"]).idle_counts == [0, 1000]
