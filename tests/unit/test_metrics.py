"""Metrics, pure parts: status classes, buckets, the multiprocess directory's sweep and fold,
bounded labels, and the fleet's metric families."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from forkserve.common import promdir
from forkserve.common.promdir import DbFile, MultiprocDir, fold, parse_db_name, plan_sweep, stale_dirs
from forkserve.config.sources import Source, resolve
from forkserve.errors import ConfigError
from forkserve.services import events
from forkserve.services.fleetmetrics import (
    exit_reason,
    fleet_families,
    one_row_per_worker,
    request_totals,
)
from forkserve.services.status import FleetStatus, QueueStatus, WorkerStatus
from forkserve.worker.reqstats import (
    BUCKETS,
    DURATION,
    REQUESTS,
    STATUS_CLASSES,
    RequestStats,
    bucket_index,
    status_class,
)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(101, "1xx"), (200, "2xx"), (204, "2xx"), (302, "3xx"), (404, "4xx"), (500, "5xx"), (599, "5xx"),
     (0, "5xx"), (600, "5xx"), (99, "5xx")],
)  # fmt: skip
def test_status_class(status: int, expected: str) -> None:
    assert STATUS_CLASSES[status_class(status)] == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0.0, 0), (0.001, 0), (0.005, 2), (0.0051, 3), (0.3, 8), (10.0, len(BUCKETS) - 1), (11.0, len(BUCKETS))],
)
def test_bucket_index_matches_prometheus_le(seconds: float, expected: int) -> None:
    assert bucket_index(BUCKETS, seconds) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("counter_123.db", DbFile("counter_123.db", "counter", 123)),
        ("histogram_7.db", DbFile("histogram_7.db", "histogram", 7)),
        ("gauge_livesum_42.db", DbFile("gauge_livesum_42.db", "gauge", 42)),
        ("gauge_all_42.db", DbFile("gauge_all_42.db", "gauge", 42)),
        ("counter_archive.db", DbFile("counter_archive.db", "counter", None)),
        ("counter_archive.db.new", None),
        ("notes.txt", None),
        ("counter_12x.db", None),
    ],
)
def test_parse_db_name(name: str, expected: DbFile | None) -> None:
    assert parse_db_name(name) == expected


def test_plan_sweep_folds_sums_of_the_dead_and_drops_their_gauges() -> None:
    names = [
        "counter_10.db", "histogram_10.db", "summary_10.db", "gauge_all_10.db", "gauge_livesum_10.db",
        "counter_11.db", "gauge_max_11.db", "counter_archive.db", "readme",
    ]  # fmt: skip
    sweep = plan_sweep(names, is_alive=lambda pid: pid == 11)
    assert sweep.fold == {
        "counter": ["counter_10.db"],
        "histogram": ["histogram_10.db"],
        "summary": ["summary_10.db"],
    }
    assert sweep.drop == ["gauge_all_10.db", "gauge_livesum_10.db"]
    assert not plan_sweep(names, is_alive=lambda pid: True)


def test_stale_dirs_are_those_of_dead_masters() -> None:
    names = ["forkserve-metrics-100-abc", "forkserve-metrics-200-def", "other-300-x", "forkserve-metrics-x"]
    assert stale_dirs(names, is_alive=lambda pid: pid == 200) == ["forkserve-metrics-100-abc"]


def write_db(path: Path, entries: list[tuple[str, str, dict[str, str], float]], help_text: str = "h") -> None:
    db = MmapedDict(str(path))
    for metric, sample, labels, value in entries:
        db.write_value(mmap_key(metric, sample, list(labels), list(labels.values()), help_text), value, 0.0)
    db.close()


def merged_values(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for metric in MultiprocDir(str(directory)).collect():
        for sample in metric.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_fold_keeps_totals_and_removes_the_files(tmp_path: Path) -> None:
    write_db(tmp_path / "counter_archive.db", [("hits", "hits_total", {"path": "/"}, 5.0)])
    write_db(tmp_path / "counter_1001.db", [("hits", "hits_total", {"path": "/"}, 2.0)])
    write_db(tmp_path / "counter_1002.db", [("hits", "hits_total", {"path": "/x"}, 1.0)])
    le = [("0.1", 3.0), ("+Inf", 1.0)]
    write_db(tmp_path / "histogram_1001.db", [("lat", "lat_bucket", {"le": b}, n) for b, n in le])
    write_db(tmp_path / "histogram_1002.db", [("lat", "lat_bucket", {"le": b}, n) for b, n in le])
    write_db(tmp_path / "histogram_1002.db", [("lat", "lat_sum", {}, 0.5)])
    before = merged_values(tmp_path)  # (pids 1001 and 1002 do not exist: collect() folds them)
    assert sorted(os.listdir(tmp_path)) == ["counter_archive.db", "histogram_archive.db"]
    assert before[("hits_total", (("path", "/"),))] == 7.0
    assert before[("hits_total", (("path", "/x"),))] == 1.0
    assert before[("lat_bucket", (("le", "0.1"),))] == 6.0
    assert before[("lat_bucket", (("le", "+Inf"),))] == 8.0
    assert before[("lat_count", ())] == 8.0
    # Folding again (a later worker's files) adds to the archive, never double counts it.
    write_db(tmp_path / "counter_1003.db", [("hits", "hits_total", {"path": "/"}, 1.0)])
    fold(str(tmp_path), "counter", ["counter_1003.db"])
    assert merged_values(tmp_path)[("hits_total", (("path", "/"),))] == 8.0


def test_request_stats_count_and_flush_into_multiprocess_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(promdir.ENV, str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        status = 404 if scope["path"] == "/missing" else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def ignore(message: Any) -> None:
        pass

    async def nothing() -> Any:
        return {}

    stats = RequestStats(app, worker_id=3)

    async def serve(paths: list[str]) -> None:
        for path in paths:
            with contextlib.suppress(RuntimeError):
                await stats({"type": "http", "path": path}, nothing, ignore)

    asyncio.run(serve(["/", "/", "/missing", "/boom"]))
    assert stats.by_class == [0, 2, 0, 1, 1]
    assert sum(stats.buckets) == 4
    stats.flush()
    stats.flush()  # nothing new: nothing written twice
    asyncio.run(serve(["/"]))
    stats.flush()
    totals = request_totals(MultiprocDir(str(tmp_path)).collect())
    assert totals.by_status == {"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 1, "5xx": 1}
    assert totals.by_worker == {"3": 5}
    assert totals.count == 5
    assert totals.buckets[-1] == ("+Inf", 5.0)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("crash", "crash"),
        ("killed as hung", "hung"),
        ("replaced by generation 7", "reload"),
        ("replaced (recycled)", "recycle"),
        ("scaled down", "scale_down"),
        ("server stopping", "shutdown"),
        ("reload aborted", "reload_aborted"),
        ("planned", "other"),
        ("something new", "other"),
    ],
)
def test_exit_reasons_are_a_fixed_set(reason: str, expected: str) -> None:
    assert exit_reason(reason) == expected


def row(worker_id: int, state: str, generation: int = 1, slot: int = 0, **fields: Any) -> WorkerStatus:
    values = {
        "uptime": 1.0,
        "requests": 0,
        "in_flight": 0,
        "connections": 0,
        "websockets": 0,
        "rss": 0,
        "busy": 0.0,
        **fields,
    }
    return WorkerStatus(worker_id, slot, 1000 + slot, generation, state, **values)


def fleet(**fields: Any) -> FleetStatus:
    values: dict[str, Any] = {
        "master_pid": 1, "app": "main:app", "generation": 1, "desired": 1, "stopping": None,
        "reloading": None, "uptime": 0.0, "workers": (), "listeners": (), "queues": (), "events": (),
        "counts": (), **fields,
    }  # fmt: skip
    return FleetStatus(**values)


@pytest.mark.parametrize(
    ("rows", "chosen_slots"),
    [
        ([row(1, "ready", slot=0), row(2, "ready", slot=1)], [0, 1]),
        # A reload: the old process drains while the new one boots, then serves.
        ([row(1, "draining", 1, slot=0), row(1, "booting", 2, slot=1)], [1]),
        ([row(1, "ready", 1, slot=0), row(1, "booting", 2, slot=1)], [0]),
        # A recycle: same generation, the newer slot of two serving processes.
        ([row(1, "ready", 1, slot=0), row(1, "ready", 1, slot=4)], [4]),
        ([row(1, "killing", slot=0), row(1, "spawning", slot=2)], [2]),
    ],
)
def test_one_row_speaks_for_each_worker_number(rows: list[WorkerStatus], chosen_slots: list[int]) -> None:
    assert [r.slot for r in one_row_per_worker(rows)] == chosen_slots


def test_fleet_families_totals_and_bounded_labels() -> None:
    snapshot = fleet(
        generation=2,
        desired=2,
        stopping=None,
        workers=(
            row(1, "draining", 1, slot=0, in_flight=2, rss=100),
            row(1, "ready", 2, slot=1, in_flight=1, rss=50),
            row(2, "ready", 2, slot=2, in_flight=0, rss=60),
        ),
        queues=(QueueStatus("127.0.0.1:8000", 3, 2048),),
        counts=(
            (events.WORKER_EXITED, "replaced by generation 2", 1),
            (events.WORKER_EXITED, "replaced by generation 3", 2),
            (events.WORKER_EXITED, "crash", 1),
            (events.RELOAD_STARTED, "", 2),
            (events.RELOAD_ABORTED, "failed to load: SyntaxError", 1),
            (events.SCALED, "signal", 2),
        ),
    )
    families = {f.name: f for f in fleet_families(snapshot)}

    def samples(name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {tuple(sorted(labels.items())): value for labels, value in families[name].samples}

    assert samples("forkserve_in_flight") == {(): 3}
    assert samples("forkserve_rss_bytes") == {(): 210}
    assert samples("forkserve_workers")[(("state", "draining"),)] == 1
    assert samples("forkserve_workers")[(("state", "ready"),)] == 2
    assert samples("forkserve_worker_in_flight") == {(("worker", "1"),): 1, (("worker", "2"),): 0}
    assert samples("forkserve_accept_queue") == {(("listener", "127.0.0.1:8000"),): 3}
    exits = samples("forkserve_worker_exits")
    assert exits[(("reason", "reload"),)] == 3
    assert exits[(("reason", "crash"),)] == 1
    assert len(exits) == 8
    assert samples("forkserve_reloads") == {
        (("outcome", "started"),): 2, (("outcome", "finished"),): 0, (("outcome", "aborted"),): 1,
    }  # fmt: skip
    assert samples("forkserve_scale_events") == {(("reason", "signal"),): 2}
    assert families["forkserve_worker_exits"].kind == "counter"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1:9100", "127.0.0.1:9100"),
        (":9100", "0.0.0.0:9100"),
        ("[::1]:9100", "[::1]:9100"),
        ("", None),
    ],
)
def test_metrics_bind_accepts(raw: str, expected: str | None) -> None:
    config, _ = resolve([Source("kwargs", {"metrics_bind": raw})])
    assert config.metrics_bind == expected


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"metrics_bind": "unix:/tmp/m.sock"}, "the metrics server listens on TCP"),
        ({"metrics_bind": "127.0.0.1:99999"}, "port '99999'"),
        ({"metrics_bind": "127.0.0.1:8000", "bind": "127.0.0.1:8000"}, "also a --bind address"),
    ],
)
def test_metrics_bind_rejects(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve([Source("kwargs", settings)])


def test_the_docs_list_every_metric_forkserve_exports() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(forkserve_[a-z_]+)` \|", page, re.M))
    snapshot = fleet()
    exported = {
        family.name + ("_total" if family.kind == "counter" else "") for family in fleet_families(snapshot)
    }
    exported |= {REQUESTS + "_total", DURATION}
    assert documented == exported
