"""The control socket's pure parts: scale targets, when a scale is done, who may steer, paths, drawing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from forkserve.cli import statusview
from forkserve.cli.ctl import Client
from forkserve.services import controlpath
from forkserve.services.control import may_steer
from forkserve.services.status import settled


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3", {"to": 3}), ("+1", {"delta": 1}), ("-2", {"delta": -2}), (" 12 ", {"to": 12})],
)
def test_scale_targets(text: str, expected: dict[str, int]) -> None:
    assert statusview.parse_scale(text) == expected


@pytest.mark.parametrize("text", ["", "+", "-x", "two", "+0", "1.5", "++1"])
def test_bad_scale_targets(text: str) -> None:
    with pytest.raises(ValueError):
        statusview.parse_scale(text)


def _w(state: str = "ready", generation: int = 1) -> dict[str, Any]:
    return {"state": state, "generation": generation}


@pytest.mark.parametrize(
    ("workers", "desired", "generation", "done"),
    [
        ([_w(), _w()], 2, 1, True),
        ([_w(), _w("booting")], 2, 1, False),  # the added one is not serving yet
        ([_w(), _w(), _w("draining")], 2, 1, False),  # the retired one has not gone yet
        ([_w()], 2, 1, False),  # the added one was not even forked yet
        ([_w(), _w(generation=2)], 2, 2, False),  # a reload is rolling
        ([_w(generation=2)], 1, 2, True),
    ],
)
def test_a_scale_is_settled_when_exactly_that_many_serve(
    workers: list[dict[str, Any]], desired: int, generation: int, done: bool
) -> None:
    assert settled(workers, desired, generation) is done


@pytest.mark.parametrize(
    ("uid", "owner", "allowed"), [(1000, 1000, True), (0, 1000, True), (1001, 1000, False), (65534, 0, False)]
)
def test_only_the_owner_or_root_may_steer(uid: int, owner: int, allowed: bool) -> None:
    assert may_steer(uid, owner) is allowed


@pytest.mark.parametrize(
    ("environ", "uid", "expected"),
    [
        ({"XDG_RUNTIME_DIR": "/run/user/1000"}, 1000, "/run/user/1000/forkserve"),
        # A systemd unit's RuntimeDirectory= wins: PrivateTmp= would hide /tmp from `forkserve ctl`.
        ({"RUNTIME_DIRECTORY": "/run/forkserve", "XDG_RUNTIME_DIR": "/run/user/33"}, 33, "/run/forkserve"),
        ({"RUNTIME_DIRECTORY": "/run/app:/run/app-extra"}, 33, "/run/app"),
        ({"RUNTIME_DIRECTORY": ""}, 0, "/run/forkserve"),
        ({}, 0, "/run/forkserve"),
        ({}, 1000, "/tmp/forkserve-1000"),
        ({"XDG_RUNTIME_DIR": ""}, 1000, "/tmp/forkserve-1000"),
    ],
)
def test_default_directory(environ: dict[str, str], uid: int, expected: str) -> None:
    assert controlpath.default_dir(environ, uid) == Path(expected)


@pytest.mark.parametrize(
    ("name", "pid"), [("1234.sock", 1234), ("1234-2.sock", 1234), ("x.sock", None), ("1234.pid", None)]
)
def test_the_pid_in_a_default_socket_name(name: str, pid: int | None) -> None:
    assert controlpath.pid_of(Path("/run/forkserve") / name) == pid


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.9, "59s"), (61, "1m01s"), (3600 * 2 + 60, "2h01m"), (90000, "1d01h")]
)
def test_durations(seconds: float, text: str) -> None:
    assert statusview.human_duration(seconds) == text


@pytest.mark.parametrize(("count", "text"), [(512, "512 B"), (2048, "2.0 KiB"), (30 * 2**20, "30.0 MiB")])
def test_sizes(count: int, text: str) -> None:
    assert statusview.human_bytes(count) == text


def test_render_draws_a_row_per_worker_and_the_reasons() -> None:
    worker = {
        "worker_id": 1, "slot": 0, "pid": 4242, "generation": 3, "state": "ready", "uptime": 75.0,
        "requests": 10, "in_flight": 1, "connections": 2, "websockets": 1, "rss": 2**25, "busy": 0.5,
    }  # fmt: skip
    status = {
        "master_pid": 1, "app": "main:app", "generation": 3, "desired": 1, "stopping": None,
        "reloading": None, "uptime": 3700, "workers": [worker],
        "listeners": [{"address": "127.0.0.1:8000", "kind": "tcp"}],
        "events": [{"kind": "scaled", "message": "workers: 2 -> 1", "at": 0.0, "reason": "autoscaler"}],
        "totals": {
            "workers": 1, "ready": 1, "requests": 10, "in_flight": 1, "connections": 2, "websockets": 1,
            "rss": 2**25,
        },
    }  # fmt: skip
    lines = statusview.render(status)
    assert lines[0].startswith("forkserve master pid 1  app main:app  generation 3  up 1h01m  serving")
    assert lines[3].split()[:6] == ["WORKER", "PID", "GEN", "STATE", "UPTIME", "REQUESTS"]
    assert lines[4].split() == ["1", "4242", "3", "ready", "1m15s", "10", "1", "2", "1", "32.0", "MiB", "50%"]
    assert lines[5].split()[0] == "total"
    assert "listening: 127.0.0.1:8000" in lines
    assert lines[-1].endswith("scaled          workers: 2 -> 1 (autoscaler)")


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ({"ok": False, "code": "forbidden", "error": "uid 5 may not control this server"}, 7),
        ({"ok": False, "code": "timeout", "error": "still rolling"}, 8),
        ({"ok": False, "code": "refused", "error": "cannot run 0 workers"}, 1),
        ({"ok": False, "code": "failed", "error": "reload aborted"}, 1),
    ],
)
def test_a_refusal_becomes_one_line_and_its_exit_code(
    answer: dict[str, Any], code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        Client(None, None, 1.0).check(answer)
    assert exited.value.code == code
    assert capsys.readouterr().err == f"forkserve ctl: error: {answer['error']}\n"
