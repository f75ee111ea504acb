"""Lifecycle hooks and worker_info(), in real processes: each hook runs where and when documented."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import APPS, free_port, wait_until

HOOK_FLAGS = [
    "--on-starting", "hooked:on_starting", "--on-reload", "hooked:on_reload",
    "--post-fork", "hooked:post_fork", "--worker-ready", "hooked:worker_ready",
    "--worker-exit", "hooked:worker_exit",
]  # fmt: skip


def lines(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def calls(log: Path, hook: str, **where: object) -> list[dict]:
    return [
        line
        for line in lines(log)
        if line["hook"] == hook and all(line.get(k) == v for k, v in where.items())
    ]


def test_every_hook_runs_in_its_process_with_the_fleet_facts(serve, tmp_path):
    log = tmp_path / "hooks.jsonl"
    server = serve("-w", "2", *HOOK_FLAGS, app="hooked:app", env={"HOOK_LOG": str(log)})
    workers = server.wait_workers(2)
    wait_until(lambda: len(calls(log, "worker_ready")) == 2, 10, "worker_ready x2", server.tail)

    [starting] = calls(log, "on_starting")
    assert starting["pid"] == server.pid and starting["workers"] == 2 and starting["generation"] == 1
    for hook in ("post_fork", "worker_ready"):
        seen = calls(log, hook)
        assert {line["pid"] for line in seen} == workers
        assert sorted(line["worker_id"] for line in seen) == [1, 2]
        assert all(line["generation"] == 1 and line["workers"] == 2 for line in seen)
    for line in calls(log, "post_fork"):
        assert line["env"]["FORKSERVE_WORKER_ID"] == str(line["worker_id"])
        assert line["env"]["FORKSERVE_GENERATION"] == "1"
        assert line["env"]["FORKSERVE_WORKERS"] == "2"

    info = server.get("/").json()
    assert info["pid"] in workers and info["workers"] == 2 and info["max_workers"] == 2

    # The count is read live: a worker forked before TTIN sees the new number.
    server.signal(signal.SIGTTIN)
    server.wait_workers(3)
    assert {server.get("/").json()["workers"] for _ in range(6)} == {3}

    server.signal(signal.SIGHUP)
    wait_until(lambda: calls(log, "on_reload", generation=2), 10, "on_reload", server.tail)
    assert calls(log, "on_reload")[0]["pid"] == server.pid
    wait_until(
        lambda: len(calls(log, "worker_ready", generation=2)) == 3, 20, "generation 2 ready", server.tail
    )
    wait_until(
        lambda: len(calls(log, "worker_exit", generation=1)) == 3, 20, "gen 1 worker_exit", server.tail
    )
    exited = calls(log, "worker_exit", generation=1)
    assert workers <= {line["pid"] for line in exited}

    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert len(calls(log, "worker_exit", generation=2)) == 3


def run_cli(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    argv = [sys.executable, "-m", "forkserve", "hooked:app", "--app-dir", str(APPS)]
    argv += ["-b", f"127.0.0.1:{free_port()}", *args]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=30, cwd=tmp_path, env={**os.environ, **env}
    )


def test_a_failing_on_starting_stops_the_server_with_exit_3_before_the_app_loads(tmp_path):
    log = tmp_path / "hooks.jsonl"
    result = run_cli(tmp_path, *HOOK_FLAGS, env={"HOOK_LOG": str(log), "HOOK_FAIL": "on_starting"})
    assert result.returncode == 3, result.stderr
    assert (
        "forkserve: error: the on_starting hook hooked:on_starting failed: "
        "RuntimeError: on_starting was told to fail\n" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert lines(log) == []  # no worker was ever forked


def test_a_failing_post_fork_is_a_failed_boot(tmp_path):
    log = tmp_path / "hooks.jsonl"
    result = run_cli(
        tmp_path, "--post-fork", "hooked:post_fork", env={"HOOK_LOG": str(log), "HOOK_FAIL": "post_fork"}
    )
    assert result.returncode == 3
    assert (
        "the post_fork hook hooked:post_fork failed: RuntimeError: post_fork was told to fail"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_failing_worker_exit_is_logged_and_the_exit_stays_clean(serve, tmp_path):
    log = tmp_path / "hooks.jsonl"
    server = serve(
        "--worker-exit",
        "hooked:worker_exit",
        app="hooked:app",
        env={"HOOK_LOG": str(log), "HOOK_FAIL": "worker_exit"},
    )
    server.wait_workers(1)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert (
        "the worker_exit hook hooked:worker_exit failed: RuntimeError: worker_exit was told to fail"
        in server.log()
    )


def test_a_hook_that_cannot_be_imported_is_one_line_and_exit_3(tmp_path):
    result = run_cli(tmp_path, "--post-fork", "hooked:no_such_hook", env={})
    assert result.returncode == 3
    assert "cannot load the post_fork hook 'hooked:no_such_hook': AttributeError" in result.stderr
    result = run_cli(tmp_path, "--on-starting", "no_such_module:hook", env={})
    assert result.returncode == 3
    assert "cannot load the on_starting hook 'no_such_module:hook': ModuleNotFoundError" in result.stderr


def test_a_malformed_hook_is_a_config_error(tmp_path):
    result = run_cli(tmp_path, "--worker-ready", "not a reference", env={})
    assert result.returncode == 2
    assert result.stderr.startswith(
        "forkserve: error: --worker-ready 'not a reference': expected module:function"
    )


def test_callable_hooks_from_the_library_cross_into_the_exec_zygote(serve, tmp_path):
    log = tmp_path / "hooks.jsonl"
    script = tmp_path / "serve_hooked.py"
    port = free_port()
    script.write_text(
        "import forkserve, hooked\n"
        f"forkserve.run('hooked:app', bind='127.0.0.1:{port}', workers=2, app_dir={str(APPS)!r},\n"
        "              on_starting=hooked.on_starting, post_fork=hooked.post_fork,\n"
        "              worker_ready=hooked.worker_ready)\n"
    )
    import os

    env = {"HOOK_LOG": str(log), "PYTHONPATH": f"{APPS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    server = serve(command=[sys.executable, str(script)], port=port, env=env)
    server.wait_workers(2)
    wait_until(lambda: len(calls(log, "worker_ready")) == 2, 10, "worker_ready x2", server.tail)
    assert len(calls(log, "on_starting")) == 1 and len(calls(log, "post_fork")) == 2


def test_a_worker_hook_defined_in_main_is_refused_with_the_fix(tmp_path):
    import os

    script = tmp_path / "main_hooks.py"
    script.write_text(
        "import sys, forkserve\n"
        "def starting(info):\n"
        "    print('on_starting ran in', info.pid, flush=True)\n"
        "def forked(info):\n"
        "    pass\n"
        "try:\n"
        f"    forkserve.run('hooked:app', bind='127.0.0.1:{free_port()}', app_dir={str(APPS)!r},\n"
        "                  on_starting=starting, post_fork=forked)\n"
        "except forkserve.ConfigError as error:\n"
        "    print('error:', error, flush=True)\n"
        "    sys.exit(error.exit_code)\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env=os.environ,
    )
    assert result.returncode == 2, result
    # A master hook may live in __main__: it runs in the master. A worker hook must cross exec.
    assert "on_starting ran in" in result.stdout
    assert "error: the post_fork hook forked is defined in __main__ or inside a function" in result.stdout
