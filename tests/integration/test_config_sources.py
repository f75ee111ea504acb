"""Config files, --print-config and --env-file, through the real command line and real reloads."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx
import psutil

from tests.conftest import APPS, wait_until


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("forkserve: error:")]


def test_config_file_values_serve_and_flags_override_them(serve, tmp_path):
    (tmp_path / "forkserve.toml").write_text("workers = 2\ngraceful-timeout = 3\n")
    server = serve("-c", "forkserve.toml", "-w", "1", wait=1)
    assert server.get().status_code == 200
    assert len(server.workers()) == 1


def test_pyproject_table_is_read_from_the_working_directory(serve, tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n\n[tool.forkserve]\nworkers = 2\n")
    server = serve(wait=2)
    assert server.get().status_code == 200


def test_print_config_shows_values_and_origins_and_exits_0(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.forkserve]\nworkers = 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "forkserve", "app:app", "--print-config", "--timeout", "9"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
        env={**os.environ, "FORKSERVE_BACKLOG": "77"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in result.stdout.splitlines()[1:]}
    assert rows["workers"] == ["3", "pyproject.toml [tool.forkserve]"]
    assert rows["backlog"] == ["77", "env FORKSERVE_BACKLOG"]
    assert rows["timeout"] == ["9.0", "flag --timeout"]
    assert rows["keep-alive"] == ["5", "default"]


def test_a_bad_value_in_each_source_exits_2_with_its_message(serve, tmp_path):
    (tmp_path / "bad.toml").write_text('workers = "many"\n')
    (tmp_path / "typo.toml").write_text("wokers = 2\n")
    workers = "expected a number of workers of at least 1, or 'auto'"
    cases = [
        (["-c", "bad.toml"], {}, f"bad.toml: workers = 'many': {workers}"),
        (["-c", "typo.toml"], {}, "typo.toml: unknown setting 'wokers' (did you mean 'workers'?)"),
        (["-c", "missing.toml"], {}, "-c missing.toml: no such file; pass the path of a TOML config file"),
        ([], {"FORKSERVE_WORKERS": "many"}, f"FORKSERVE_WORKERS 'many': {workers}"),
        (["-w", "many"], {}, f"--workers 'many': {workers}"),
        (["--env-file", "missing.env"], {}, "--env-file missing.env: no such file; pass a .env file"),
    ]  # fmt: skip
    servers = [(serve(*args, env=env, bind=False), message) for args, env, message in cases]
    for server, message in servers:
        assert server.wait_exit() == 2, server.tail()
        [line] = error_lines(server.log())
        assert line.startswith(f"forkserve: error: {message}"), server.tail()
        assert "Traceback" not in server.log()


def test_env_file_is_seen_at_import_and_in_workers_and_reread_on_hup(serve, tmp_path):
    env_file = tmp_path / "app.env"
    env_file.write_text("GREETING=hello\n")
    server = serve("--env-file", str(env_file), "-w", "2", app="envapp:app", wait=2)
    assert server.get().text == "hello hello 1"
    # The values are the app's secrets: never on a command line, where any user can read them.
    for pid in server.processes():
        assert "hello" not in " ".join(psutil.Process(pid).cmdline())

    env_file.write_text("# changed\nGREETING='bonjour'\n")
    server.signal(signal.SIGHUP)
    wait_until(
        lambda: server.get().text == "bonjour bonjour 2", 20, "generation 2 with the new value", server.tail
    )
    serving = server.wait_workers(2)

    # A file that cannot be read at HUP aborts that reload; the running generation keeps serving.
    env_file.unlink()
    server.signal(signal.SIGHUP)
    server.wait_log(rf"reload aborted: --env-file {re.escape(str(env_file))}: no such file")
    assert server.get().text == "bonjour bonjour 2"
    assert set(server.workers()) == serving


def test_process_environment_wins_over_the_env_file(serve, tmp_path):
    env_file = tmp_path / "app.env"
    env_file.write_text("GREETING=from-file\n")
    server = serve("--env-file", str(env_file), app="envapp:app", env={"GREETING": "from-env"}, wait=1)
    assert server.get().text == "from-env from-env 1"


def test_library_app_object_gets_env_file_in_workers_and_on_hup(tmp_path):
    """An app object is imported by the caller, so only the workers' os.environ can carry the file."""
    env_file = tmp_path / "app.env"
    env_file.write_text("GREETING=from-file\n")
    script = tmp_path / "embed.py"
    script.write_text(
        "import os, sys, forkserve\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    body = os.environ.get('GREETING', 'unset').encode()\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': body})\n"
        "forkserve.run(app, bind=sys.argv[1], env_file=sys.argv[2], lifespan='off')\n"
    )
    from tests.conftest import free_port

    port = free_port()
    log_file = open(tmp_path / "embed.log", "wb")  # noqa: SIM115  (closed in finally)
    proc = subprocess.Popen(
        [sys.executable, str(script), f"127.0.0.1:{port}", str(env_file)],
        stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:

        def answer() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text
            except httpx.TransportError:
                return ""

        def log() -> str:
            return (tmp_path / "embed.log").read_text()

        assert wait_until(answer, 20, "the embedded server", log) == "from-file"
        # Fork mode cannot re-import the app, but HUP still gives new workers the file as it is now.
        env_file.write_text("GREETING=changed\n")
        os.kill(proc.pid, signal.SIGHUP)
        wait_until(lambda: answer() == "changed", 20, "a generation 2 worker with the new value", log)
    finally:
        family = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        log_file.close()
        _gone, alive = psutil.wait_procs(family, timeout=5)
        assert not alive, f"processes left behind: {alive}"


def test_the_app_can_come_from_forkserve_app_and_a_positional_app_wins(serve):
    # A container image sets FORKSERVE_APP and runs plain `forkserve` (deploy/Dockerfile).
    from_env = serve("--app-dir", str(APPS), app=None, env={"FORKSERVE_APP": "hello:app"}, wait=1)
    assert from_env.get().status_code == 200
    assert "for hello:app" in from_env.log()
    # A positional APP wins over the environment (as flags do): `docker run IMAGE forkserve main:app`.
    both = serve(app="bodyapp:app", env={"FORKSERVE_APP": "no_such_module:app"}, wait=1)
    assert "for bodyapp:app" in both.log()
    assert both.get().status_code == 200
