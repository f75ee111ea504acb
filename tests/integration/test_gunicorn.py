"""Moving from gunicorn, on real processes: its config file, its hooks and its command line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import APPS, free_port, wait_until

# A gunicorn.conf.py as such projects write it, hooks and all; each hook records who called it.
CONFIG = """
import json, os, multiprocessing

bind = "127.0.0.1:{port}"
workers = 2
worker_class = "uvicorn.workers.UvicornWorker"
timeout = 20
graceful_timeout = 10
keepalive = 4
max_requests = 1000
max_requests_jitter = 50
preload_app = True
loglevel = "info"

def _record(hook, **fields):
    with open({log!r}, "a") as log:
        log.write(json.dumps({{"hook": hook, "pid": os.getpid(), **fields}}) + "\\n")

def on_starting(server):
    _record("on_starting", server_pid=server.pid, workers=server.num_workers, bind=server.cfg.bind)

def when_ready(server):
    server.log.info("gunicorn-style when_ready ran")
    _record("when_ready", server_pid=server.pid)

def pre_fork(server, worker):
    _record("pre_fork", worker_pid=worker.pid, age=worker.age)

def post_fork(server, worker):
    _record("post_fork", worker_pid=worker.pid, age=worker.age, server_pid=server.pid)

def post_worker_init(worker):
    _record("post_worker_init", worker_pid=worker.pid, timeout=worker.cfg.timeout)

def on_reload(server):
    _record("on_reload")
    raise RuntimeError("on_reload broke")

def nworkers_changed(server, new_value, old_value):
    _record("nworkers_changed", new=new_value, old=old_value)

def worker_exit(server, worker):
    _record("worker_exit", worker_pid=worker.pid)

def child_exit(server, worker):
    _record("child_exit", worker_pid=worker.pid)

def on_exit(server):
    _record("on_exit")
"""


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def named(log: Path, hook: str) -> list[dict]:
    return [line for line in records(log) if line["hook"] == hook]


def test_a_gunicorn_conf_py_serves_unchanged_with_its_hooks_at_gunicorns_moments(serve, tmp_path):
    log = tmp_path / "hooks.jsonl"
    port = free_port()
    (tmp_path / "gunicorn.conf.py").write_text(CONFIG.format(port=port, log=str(log)))
    server = serve(app="hello:app", bind=False, port=port)  # runs in tmp_path: ./gunicorn.conf.py is found
    workers = server.wait_workers(2)
    assert server.get("/").status_code == 200
    server.wait_log(r"found in the working directory")
    server.wait_log(r"preload_app = True is not needed: the zygote always imports the app once")
    server.wait_log(r"gunicorn-style when_ready ran")

    wait_until(lambda: len(named(log, "post_worker_init")) == 2, 10, "post_worker_init x2", server.tail)
    order = [line["hook"] for line in records(log)]
    assert order[:2] == ["on_starting", "when_ready"]
    assert order.index("pre_fork") < order.index("post_fork") < order.index("post_worker_init")
    [starting] = named(log, "on_starting")
    assert starting["pid"] == starting["server_pid"] == server.pid
    assert starting["workers"] == 2 and starting["bind"] == f"127.0.0.1:{server.port}"
    assert named(log, "when_ready")[0]["pid"] == server.pid
    # pre_fork runs in the process that forks (the zygote): not the master, not a worker.
    zygotes = {line["pid"] for line in named(log, "pre_fork")}
    assert len(zygotes) == 1 and not zygotes & (workers | {server.pid})
    assert [line["age"] for line in named(log, "pre_fork")] == [1, 2]
    assert all(line["worker_pid"] is None for line in named(log, "pre_fork"))
    for hook in ("post_fork", "post_worker_init"):
        assert {line["pid"] for line in named(log, hook)} == workers
        assert all(line["worker_pid"] == line["pid"] for line in named(log, hook))
    assert {line["server_pid"] for line in named(log, "post_fork")} == {server.pid}
    assert {line["timeout"] for line in named(log, "post_worker_init")} == {20}

    server.signal(signal.SIGTTIN)
    wait_until(lambda: named(log, "nworkers_changed"), 10, "nworkers_changed", server.tail)
    assert named(log, "nworkers_changed")[0] | {"pid": 0} == {
        "hook": "nworkers_changed", "pid": 0, "new": 3, "old": 2,
    }  # fmt: skip
    all_workers = server.wait_workers(3)

    # A hook that raises is one line naming it; the reload goes on and the server keeps serving.
    server.signal(signal.SIGHUP)
    server.wait_log(r"the gunicorn on_reload hook __config__:on_reload failed: RuntimeError: on_reload broke")
    replaced = server.wait_workers(3, exclude=all_workers)
    assert server.get("/").status_code == 200

    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    exited = {line["worker_pid"] for line in named(log, "worker_exit")}
    assert all_workers | replaced <= exited
    assert {line["pid"] for line in named(log, "worker_exit")} == exited  # in the worker itself
    assert {line["worker_pid"] for line in named(log, "child_exit")} >= all_workers | replaced
    assert {line["pid"] for line in named(log, "child_exit")} == {server.pid}
    assert records(log)[-1]["hook"] == "on_exit" and records(log)[-1]["pid"] == server.pid


def test_gunicorns_command_line_for_uvicorn_workers(serve):
    server = serve("-k", "uvicorn.workers.UvicornWorker", "-w", "2", "--preload", app="hello:app")
    server.wait_workers(2)
    assert server.get("/").status_code == 200
    server.wait_log(r"--worker-class 'uvicorn.workers.UvicornWorker' is not needed")
    server.wait_log(r"--preload is not needed")


def check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forkserve", *args, "--app-dir", str(APPS), "--check-config"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip


def test_check_config_imports_the_app_in_a_child_and_says_whether_it_boots(tmp_path):
    good = check(tmp_path, "hello:app")
    assert good.returncode == 0, good.stderr
    assert "configuration is valid and hello:app imports" in good.stdout

    missing = check(tmp_path, "no_such_module:app")
    assert missing.returncode == 3
    assert missing.stderr.splitlines() == [
        'forkserve: error: cannot load no_such_module:app: Could not import module "no_such_module"; '
        "check the name, and --app-dir if the module is not in the current directory"
    ]
    raising = check(tmp_path, "crash_import:app")
    assert raising.returncode == 3 and len(raising.stderr.splitlines()) == 1
    assert "crash_import" in raising.stderr

    (tmp_path / "gunicorn.conf.py").write_text("workers = 2\nbind = [\n")
    broken = check(tmp_path, "hello:app")
    assert broken.returncode == 2
    assert broken.stderr.startswith("forkserve: error: ") and "gunicorn.conf.py, line" in broken.stderr
    assert len(broken.stderr.splitlines()) == 1


def test_settings_forkserve_cannot_honour_are_one_line_naming_the_alternative(tmp_path):
    conf = tmp_path / "daemon.conf.py"
    conf.write_text("daemon = True\n")
    for args, words in [
        (("-c", str(conf)), "run it under systemd"),
        (("-k", "gevent"), "remove worker_class"),
        (("--statsd-host", "127.0.0.1:8125"), "--metrics-bind"),
    ]:
        done = check(tmp_path, "hello:app", *args)
        assert done.returncode == 2, done
        assert len(done.stderr.splitlines()) == 1 and words in done.stderr, done.stderr
