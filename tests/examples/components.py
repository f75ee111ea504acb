"""Real redis-server, PostgreSQL and nginx for the tests: started here, on free ports, in temp dirs.

Each one is started as a child in its own session, waited for with a deadline (it answers, not
"a second has passed"), and stopped by PID in a finaliser. A missing binary fails the run with the
package to install: these tests prove forkserve against the real components, so a skip would hide
exactly what they are for.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_until


def require(binary: str, package: str, candidates: tuple[str, ...] = ()) -> str:
    for candidate in (binary, *candidates):
        found = shutil.which(candidate) or next(iter(sorted(glob.glob(candidate), reverse=True)), None)
        if found and os.access(found, os.X_OK):
            return found
    pytest.fail(f"{binary} not found: install {package} (apt-get install -y {package}); .ci/run does", False)


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


@dataclass
class Component:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    directory: Path
    port: int
    extra: dict[str, str] = field(default_factory=dict)

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.name} log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, check: Callable[[], bool], timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}\n{self.tail()}")
            return check()

        wait_until(ready, timeout, f"{self.name} to accept connections", self.tail)

    def stop(self, number: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, number)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)


def _start(name: str, argv: list[str], directory: Path, port: int, **popen: object) -> Component:
    log_path = directory / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            **popen,  # type: ignore[call-overload]
        )  # fmt: skip
    return Component(name, proc, log_path, directory, port)


def start_redis(bind: tuple[str, ...] = ("127.0.0.1",)) -> Component:
    binary = require("redis-server", "redis-server")
    directory = Path(tempfile.mkdtemp(prefix="forkserve-redis-"))
    port = free_port()
    # Bound to the addresses given and no others, so other "hosts" may connect without a password.
    argv = [binary, "--port", str(port), "--bind", *bind, "--protected-mode", "no"]
    argv += ["--save", "", "--appendonly", "no"]
    argv += ["--dir", str(directory), "--daemonize", "no"]
    redis = _start("redis-server", argv, directory, port)

    def pong() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((bind[0], port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        return False

    try:
        redis.wait_ready(pong)
    except BaseException:
        redis.stop()
        raise
    redis.extra["url"] = f"redis://{bind[0]}:{port}/0"
    return redis


def start_postgres(max_connections: int) -> Component:
    """A throwaway cluster: trust auth on 127.0.0.1, no fsync, max_connections exactly as asked."""
    initdb = require("initdb", "postgresql", ("/usr/lib/postgresql/*/bin/initdb",))
    postgres = str(Path(initdb).with_name("postgres"))
    directory = Path(tempfile.mkdtemp(prefix="forkserve-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("no postgres user: install postgresql (apt-get install -y postgresql)", False)
        os.chown(directory, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = directory / "data"
    init = subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}", False)
    port = free_port()
    settings = {
        "port": str(port),
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(directory),
        "max_connections": str(max_connections),
        # Every connection in these tests is the superuser's: none may be held back for it.
        "superuser_reserved_connections": "0",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
    }
    argv = [*as_user, postgres, "-D", str(data)]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]
    server = _start("postgres", argv, directory, port, cwd=directory)

    def accepts() -> bool:
        import psycopg

        try:
            with psycopg.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2
            ):
                return True
        except psycopg.OperationalError:
            return False

    try:
        server.wait_ready(accepts, timeout=60)
    except BaseException:
        server.stop(signal.SIGINT)
        raise
    server.extra["url"] = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    server.extra["max_connections"] = str(max_connections)
    return server


def start_nginx(http_block: str, port: int) -> Component:
    """nginx in the foreground with HTTP_BLOCK as its http {} contents; ``{dir}`` names its temp dir."""
    binary = require("nginx", "nginx", ("/usr/sbin/nginx",))
    directory = Path(tempfile.mkdtemp(prefix="forkserve-nginx-"))
    os.chmod(directory, 0o755)  # its worker processes (nobody, when started as root) read from here
    temp = "\n".join(
        f"    {kind}_temp_path {directory}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = (
        f"error_log {directory}/error.log info;\n"
        "worker_processes 1;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    access_log {directory}/access.log;\n{temp}\n"
        + http_block.replace("{dir}", str(directory))
        + "\n}\n"
    )
    (directory / "nginx.conf").write_text(conf)
    argv = [
        binary,
        "-p",
        str(directory),
        "-e",
        str(directory / "error.log"),
        "-c",
        str(directory / "nginx.conf"),
    ]
    argv += ["-g", f"daemon off; pid {directory}/nginx.pid;"]
    nginx = _start("nginx", argv, directory, port)
    nginx.log_path = directory / "error.log"
    try:
        nginx.wait_ready(lambda: port_open("127.0.0.1", port))
    except BaseException:
        nginx.stop(signal.SIGQUIT)
        raise
    return nginx
