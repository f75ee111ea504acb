"""The command line's master crosses an exec: its settings as plain data, its command, its fallback."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from forkserve.api import build_config
from forkserve.cli import runmaster
from forkserve.cli.main import command, pop_gunicorn_flags
from forkserve.config.plain import from_plain, to_plain
from forkserve.config.settings import DEFAULTS, Config
from forkserve.errors import ConfigError


def cli_config(args: list[str], cwd: Path) -> Config:
    """The Config `forkserve APP ARGS` builds (no environment, no file found in CWD)."""
    values = dict(command.make_context("forkserve", ["app:app", *args]).params)
    for name in ("app_argument", "print_config", "check_config"):
        values.pop(name)
    config, _ = build_config(values, environ={}, cli=True, cwd=cwd, gunicorn_flags=pop_gunicorn_flags(values))
    return config


# Each row sets settings the master uses (and some only the workers use) to values other than
# their defaults, in the forms a command line gives them.
ROUND_TRIPS = [
    ["-w", "auto", "--max-workers", "9", "--memory-reserve", "10%", "--max-worker-memory", "300"],
    ["-w", "3", "--min-workers", "2", "--scale-up-busy", "0.5", "--scale-cooldown", "2.5"],
    ["-b", "127.0.0.1:8001", "-b", "[::1]:8002", "-b", "unix:/tmp/forkserve-test.sock", "--backlog", "64"],
    ["-b", "fd://3", "--balance", "least-conn", "--umask", "0o027", "--pid", "/tmp/forkserve.pid"],
    ["--user", "root", "--group", "root", "--control-socket", "none", "--metrics-bind", "127.0.0.1:9100"],
    ["--reload", "--reload-dir", "/tmp", "--reload-include", "*.html", "--reload-exclude", "tmp/*"],
    ["--ws-drain-period", "auto", "--timeout", "7.5", "--graceful-timeout", "3", "--shutdown-delay", "1"],
    [
        "--ws-drain-period",
        "12",
        "--max-requests",
        "100",
        "--max-requests-jitter",
        "10",
        "--startup-timeout",
        "9",
    ],
    [
        "--static",
        "/static=.",
        "--secure-header",
        "X-Frame-Options=DENY",
        "--secure-headers",
        "--static-dotfiles",
    ],
    ["--forwarded-allow-ips", "10.0.0.0/8,127.0.0.1", "--proxy-protocol", "--no-proxy-headers"],
    ["--access-logformat", '%(h)s "%(r)s" %(s)s', "--log-level", "debug", "--log-format", "json"],
    ["--keyfile-password", "s3cret", "--cert-reqs", "optional", "--ssl-version", "TLSv1.3"],
    ["--on-starting", "hooks:starting", "--on-reload", "hooks:reload", "--post-fork", "hooks:forked"],
    ["--http", "fast", "--ws", "none", "--lifespan", "off", "--interface", "asgi", "--threads", "4"],
    ["--env-file", ".env", "--chdir", "/tmp", "--app-dir", "src", "--root-path", "/api", "--factory"],
    ["--max-header-size", "16384", "--max-header-count", "50", "--limit-concurrency", "100"],
]


@pytest.mark.parametrize("args", ROUND_TRIPS, ids=lambda args: " ".join(args[:2]))
def test_a_parsed_config_crosses_an_exec_unchanged(args: list[str], tmp_path: Path) -> None:
    config = cli_config(args, tmp_path)
    changed = [name for name, value in DEFAULTS.items() if getattr(config, name) != value]
    assert changed, "the row sets something"
    assert from_plain(json.loads(json.dumps(to_plain(config, master_hooks=True)))) == config


def test_a_zygote_gets_no_master_hooks_and_the_master_gets_them_all(tmp_path: Path) -> None:
    config = cli_config(["--on-starting", "hooks:starting", "--worker-exit", "hooks:exited"], tmp_path)
    master = to_plain(config, master_hooks=True)
    zygote = to_plain(config, master_hooks=False)
    assert (master["on_starting"], master["worker_exit"]) == ("hooks:starting", "hooks:exited")
    assert (zygote["on_starting"], zygote["worker_exit"]) == (None, "hooks:exited")


def _hook(info: Any) -> None:
    pass


def test_a_callable_hook_becomes_the_import_string_that_finds_it(tmp_path: Path) -> None:
    config = dataclasses.replace(cli_config([], tmp_path), on_reload=_hook)
    assert to_plain(config, master_hooks=True)["on_reload"] == f"{__name__}:_hook"


MODULE = "forkserve.cli.runmaster"


@pytest.mark.parametrize(
    ("flags", "argv"),
    [
        ([], ["/usr/bin/python3", "-m", MODULE]),
        (
            ["-X", "dev", "-W", "error"],
            ["/usr/bin/python3", "-X", "dev", "-W", "error", "-m", "forkserve.cli.runmaster"],
        ),
        (["-I"], ["/usr/bin/python3", "-I", "-m", MODULE]),
    ],
)
def test_the_new_master_is_this_interpreter_with_its_options(flags: list[str], argv: list[str]) -> None:
    assert runmaster.exec_argv("/usr/bin/python3", flags) == argv


def test_the_exec_carries_the_settings_in_the_environment_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []

    def execve(path: str, argv: list[str], environ: dict[str, str]) -> None:
        calls.append((path, argv, environ))
        raise OSError(7, "Argument list too long")

    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setenv("LISTEN_FDS", "1")
    config = cli_config(["-w", "2", "--keyfile-password", "s3cret"], tmp_path)
    why = runmaster.reexec("app:app", config, ["a note"], ["app:app", "-w", "2"])
    assert why == f"exec {sys.executable}: Argument list too long"
    [(path, argv, environ)] = calls
    assert path == sys.executable and argv[-2:] == ["-m", "forkserve.cli.runmaster"]
    assert environ["LISTEN_FDS"] == "1"
    # The secret is in the environment, which only the owner may read, and not in argv.
    assert "s3cret" not in " ".join(argv)
    app, crossed, notes, user_argv = runmaster.read_spec(environ[runmaster.SPEC_VARIABLE])
    assert (app, crossed, notes, user_argv) == ("app:app", config, ["a note"], ["app:app", "-w", "2"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "forkserve.cli.runmaster is started by `forkserve APP` itself"),
        ('{"app": "a:b", "settings": {"workers": 0}, "notes": [], "argv": []}', "workers= 0"),
    ],
)
def test_a_spec_that_is_missing_or_bad_is_a_config_error(text: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        runmaster.read_spec(text)
