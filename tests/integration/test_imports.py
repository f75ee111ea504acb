"""``import forkserve`` stays light, and an exec'd zygote and its workers never load the master's side.

The master side (its loop, the balancer, the control socket, psutil) costs memory in every process
that loads it, and a zygote that imported it would share nothing useful with its workers. The
package's ``__init__`` is lazy (PEP 562) and the zygote imports only its own side; both are checked
here in real processes.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

# The master's side: none of it may be loaded by `import forkserve`, a zygote or a worker.
MASTER_SIDE = ("forkserve.master", "forkserve.services", "forkserve.api", "forkserve.cli", "psutil")


def master_side(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == s or m.startswith(s + ".") for s in MASTER_SIDE)]


def test_import_forkserve_loads_no_master_side_module() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import forkserve, sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    modules = json.loads(out)
    assert "forkserve" in modules
    assert master_side(modules) == []
    # The lazy names still resolve, and then load what they name.
    check = "import forkserve, sys; forkserve.run; assert 'forkserve.master.master' in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True, timeout=30)


def test_an_execd_zygote_and_its_workers_load_no_master_side_module(serve) -> None:
    server = serve("-w", "1", app="modules:app", wait=1)
    loaded = server.get("/").json()
    assert "forkserve.zygote.zygote" in loaded["zygote"]  # the app was imported in a zygote
    assert "forkserve.worker.worker" in loaded["worker"]
    assert master_side(loaded["zygote"]) == [], server.tail()
    assert master_side(loaded["worker"]) == [], server.tail()


# Records, per process, every module imported from start-up on: an audit hook installed by a
# sitecustomize on PYTHONPATH, so the master runs unchanged and the test reads what it loaded. Each
# interpreter a pid runs starts its list with a marker: the command line's master is exec'd by
# the process that parsed its settings, under the same pid.
IMAGE_STARTS = "--image--"
RECORDER = """
import os, sys
_directory = os.environ["IMPORTS_RECORDED_IN"]
with open(os.path.join(_directory, str(os.getpid())), "a") as out:
    out.write("{IMAGE_STARTS}\\n")
def _record(event, args):
    if event == "import":
        with open(os.path.join(_directory, str(os.getpid())), "a") as out:
            out.write(args[0] + "\\n")
sys.addaudithook(_record)
""".replace("{IMAGE_STARTS}", IMAGE_STARTS)

# What a master with the defaults (plain HTTP, no config file, no autoscaling, no --log-config, the
# control socket unused) must not load: each is memory no other process shares (docs/design.md
# "Memory"). asyncio comes with the first `forkserve ctl` client; ssl with --certfile.
UNUSED_BY_A_DEFAULT_MASTER = (
    "asyncio", "ssl", "tomllib", "psutil", "importlib.metadata", "email", "logging.config",
    "shutil", "tempfile", "uvicorn", "forkserve.zygote", "forkserve.worker", "forkserve.http",
    "hashlib", "_hashlib",
)  # fmt: skip

# What only reading the command line needs: the master runs in a fresh interpreter without it
# (forkserve/cli/runmaster.py).
PARSER_ONLY = (
    "click", "forkserve.cli.main", "forkserve.api", "forkserve.config.file",
    "forkserve.config.gunicorn", "tomllib", "difflib", "shlex",
)  # fmt: skip


def images(directory: Path, pid: int) -> list[list[str]]:
    """The modules each interpreter PID ran imported, in the order the interpreters ran."""
    path = directory / str(pid)
    lines = path.read_text().split() if path.exists() else []
    found: list[list[str]] = []
    for line in lines:
        if line == IMAGE_STARTS:
            found.append([])
        elif found:
            found[-1].append(line)
    return found


def recorded(directory: Path, pid: int) -> list[str]:
    """What the interpreter PID runs now has imported."""
    found = images(directory, pid)
    return found[-1] if found else []


def loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted({m for m in modules if any(m == n or m.startswith(n + ".") for n in names)})


def recording(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(RECORDER)
    directory = tmp_path / "imports"
    directory.mkdir()
    return directory, {"PYTHONPATH": str(hook), "IMPORTS_RECORDED_IN": str(directory)}


def test_a_default_master_loads_only_what_it_uses(serve, tmp_path) -> None:
    directory, env = recording(tmp_path)
    sock = tmp_path / "ctl.sock"  # the default control socket, at a path the test knows
    server = serve("-w", "1", "--control-socket", str(sock), wait=1, env=env)
    master = recorded(directory, server.pid)
    assert "forkserve.master.master" in master  # the hook sees the master's imports
    assert loaded(master, UNUSED_BY_A_DEFAULT_MASTER) == [], server.tail()
    # Another master starting in the same directory probes each socket to find stale ones
    # (connect, then close having sent nothing): that is not a client, and starts nothing.
    for _ in range(3):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(10)
            probe.connect(str(sock))
            probe.shutdown(socket.SHUT_WR)
            assert probe.recv(1) == b""  # the master has seen the probe and dropped it
    assert "asyncio" not in recorded(directory, server.pid), server.tail()
    # The control socket still answers: its first client starts the loop, and asyncio with it.
    done = subprocess.run(
        [sys.executable, "-m", "forkserve", "ctl", "--control-socket", str(sock), "status", "--json"],
        capture_output=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode() + server.tail()
    assert len(json.loads(done.stdout)["workers"]) == 1, done.stdout
    assert "asyncio" in recorded(directory, server.pid)


def test_workers_import_nothing_of_the_event_loop_after_the_fork(serve, tmp_path) -> None:
    # The zygote resolves --loop before it forks: uvloop's modules are shared, not loaded per worker.
    directory, env = recording(tmp_path)
    server = serve("-w", "2", app="modules:app", wait=2, env=env)
    body = server.get("/").json()
    assert "uvloop" in body["worker"], "the worker runs on uvloop (a dependency on this platform)"
    workers = server.workers()
    assert len(workers) == 2, server.tail()
    for pid in workers:
        assert loaded(recorded(directory, pid), ("uvloop", "asyncio")) == [], server.tail()


def test_the_command_lines_master_runs_without_its_parser(serve, tmp_path) -> None:
    directory, env = recording(tmp_path)
    # Settings from ./pyproject.toml (the server runs in tmp_path): read by the parser, with tomllib.
    (tmp_path / "pyproject.toml").write_text("[tool.forkserve]\nworkers = 2\n")
    server = serve(wait=2, env=env)
    assert server.get("/").status_code == 200
    parser, master = images(directory, server.pid)  # one pid, two interpreters: the exec
    assert {"click", "tomllib", "forkserve.cli.main"} <= set(parser), server.tail()
    assert "forkserve.master.master" in master
    assert loaded(master, PARSER_ONLY) == [], server.tail()
