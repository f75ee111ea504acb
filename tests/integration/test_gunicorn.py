"""Moving from gunicorn, on real processes: its config file, its hooks and its command line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import APPS, alive, free_port, wait_until
from tests.integration.test_proxy_protocol import REQUEST, body, exchange

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


# The logging half of a real-world gunicorn.conf.py: each destination, gunicorn's access atoms.
LOGGING_CONFIG = """
bind = "127.0.0.1:{port}"
workers = 2
worker_class = "uvicorn.workers.UvicornWorker"
accesslog = "access.log"
errorlog = "error.log"
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %({{x-trace}}i)s %(L)s'
capture_output = True
loglevel = "warning"
"""


def test_a_gunicorn_conf_py_writes_its_access_and_error_logs_where_it_names_them(serve, tmp_path):
    port = free_port()
    (tmp_path / "gunicorn.conf.py").write_text(LOGGING_CONFIG.format(port=port))
    access, error = tmp_path / "access.log", tmp_path / "error.log"
    server = serve(app="applogger:app", bind=False, port=port)
    # Its startup lines go to error.log, and below loglevel: wait on the process tree instead.
    wait_until(lambda: len(server.workers()) == 2, 15, "2 workers", server.tail)
    headers = {"User-Agent": "probe/1", "Referer": "http://r/", "X-Trace": "t-42"}
    assert httpx.get(server.url + "/one", headers=headers, timeout=10).status_code == 200
    wait_until(lambda: access.exists() and "/one" in access.read_text(), 10, "the access line", server.tail)
    wait_until(lambda: "printed /one" in error.read_text(), 10, "the print in the error log", server.tail)
    [line] = access.read_text().splitlines()
    assert re.fullmatch(
        r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /one HTTP/1\.1" 200 2 '
        r'"http://r/" "probe/1" t-42 \d+\.\d+',
        line,
    ), line
    errors = error.read_text()
    # loglevel = "warning": the app's WARNING records are there, its INFO records are not; with
    # capture_output its print() lands there too. Nothing of it in the access log or on stderr.
    assert "named warning /one" in errors and "root warning /one" in errors
    assert "named info /one" not in errors and "Application startup complete" not in errors
    assert "/one" not in server.log()
    assert "named warning" not in access.read_text()
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


HOOKS_CONFIG = """
import json, os

bind = "127.0.0.1:{port}"
workers = 3
timeout = 2

def _record(hook, worker):
    with open({log!r}, "a") as log:
        log.write(json.dumps({{"hook": hook, "pid": os.getpid(), "worker_pid": worker.pid,
                               "alive": worker.alive, "ppid": worker.ppid}}) + "\\n")

def worker_int(worker):
    worker.log.warning("worker_int ran in %d", worker.pid)
    _record("worker_int", worker)

def worker_abort(worker):
    _record("worker_abort", worker)
"""


def test_worker_int_on_int_and_quit_and_worker_abort_on_a_hung_worker(serve, tmp_path):
    log = tmp_path / "hooks.jsonl"
    port = free_port()
    (tmp_path / "gunicorn.conf.py").write_text(HOOKS_CONFIG.format(port=port, log=str(log)))
    server = serve(app="hello:app", bind=False, port=port)
    first, second, third = sorted(server.wait_workers(3))

    # An operator's USR2 dumps a healthy worker's stack; only the master's hung check aborts.
    os.kill(third, signal.SIGUSR2)
    server.wait_log(r"Stack of asyncio task")
    os.kill(first, signal.SIGINT)  # drains, like TERM, after worker_int
    os.kill(second, signal.SIGQUIT)  # exits at once, after worker_int
    wait_until(lambda: len(named(log, "worker_int")) == 2, 10, "worker_int x2", server.tail)
    server.wait_log(rf"worker_int ran in {first}")
    assert {line["pid"] for line in named(log, "worker_int")} == {first, second}
    assert all(
        line["pid"] == line["worker_pid"] and line["ppid"] == server.pid for line in named(log, "worker_int")
    )
    assert all(line["alive"] is False for line in named(log, "worker_int"))
    assert not named(log, "worker_abort")
    wait_until(lambda: not alive(first) and not alive(second), 10, "both to exit", server.tail)
    server.wait_log(rf"\(pid {first}, generation 1\) exited cleanly")
    server.wait_log(rf"\(pid {second}, generation 1\) exited cleanly")

    fresh = server.wait_workers(3, exclude={first, second})
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(server.url + "/block", timeout=0.5)
    [hung] = [int(pid) for pid in server.wait_log(r"\(pid (\d+)\) is hung", timeout=8)]
    assert hung in fresh | {third}
    wait_until(lambda: named(log, "worker_abort"), 5, "worker_abort", server.tail)
    [abort] = named(log, "worker_abort")
    assert abort["pid"] == abort["worker_pid"] == hung and abort["alive"] is False
    server.wait_log(rf"\(pid {hung}, generation 1\) was killed by SIGKILL \(sent by forkserve\)")
    assert len(named(log, "worker_int")) == 2  # the abort is not an interrupt
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_gunicorn_cmd_args_are_flags_below_the_command_line(serve):
    # The proxy trusted for PROXY headers is gunicorn's --proxy-allow-from, from the environment.
    flags = "-w 3 --preload -k uvicorn.workers.UvicornWorker --proxy-protocol --proxy-allow-from 127.0.0.5"
    server = serve("-w", "1", app="peer:app", env={"GUNICORN_CMD_ARGS": flags}, wait=1)
    assert len(server.workers()) == 1  # the command line's -w beats the environment's
    server.wait_log(r"GUNICORN_CMD_ARGS: --preload is not needed")
    header = b"PROXY TCP4 203.0.113.9 10.0.0.1 4242 80\r\n" + REQUEST
    assert body(exchange(server.port, header, source="127.0.0.5")[0]) == "http 203.0.113.9 4242"
    # 127.0.0.1, trusted by default, is not in the list that replaced the default.
    assert exchange(server.port, header, source="127.0.0.1")[0] == b""
    server.wait_log(
        r"refused a connection: 127\.0\.0\.1 sent a PROXY header but is not in --forwarded-allow-ips"
    )


def test_a_bad_gunicorn_cmd_args_is_one_line_naming_it(tmp_path):
    for flags, words in [
        ("-w many", "GUNICORN_CMD_ARGS: --workers 'many': expected a number of workers"),
        ("--no-such-flag", "GUNICORN_CMD_ARGS='--no-such-flag': No such option '--no-such-flag'"),
        ("-k gevent", "GUNICORN_CMD_ARGS: --worker-class 'gevent': forkserve's workers run ASGI apps"),
        ("--proxy-protocol --proxy-allow-from 10.0.0.0/8 --forwarded-allow-ips 10.1.0.0/16",
         "GUNICORN_CMD_ARGS: --proxy-allow-from '10.0.0.0/8': forkserve trusts one list"),
    ]:  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "forkserve", "hello:app", "--app-dir", str(APPS), "--check-config"],
            capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
            env={**os.environ, "GUNICORN_CMD_ARGS": flags},
        )  # fmt: skip
        assert done.returncode == 2, done
        assert done.stderr.splitlines() == [done.stderr.strip()] and words in done.stderr, done.stderr
