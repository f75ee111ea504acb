"""``forkserve ctl ...``: steer a running master through its control socket.

Each command sends one JSON line and prints the answer, which arrives when the action has
completed (a reload rolled, N workers ready, the server stopped) or failed. The exit status tells
a script what happened without parsing:

    0  done
    1  the server refused or the action failed (the line says why)
    2  a usage mistake
    6  no server found, or it does not answer
    7  this user may not steer that server
    8  the action did not complete within --timeout
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import sys
import termios
import time
import tty
from pathlib import Path
from typing import Any

import click

from forkserve.cli import statusview
from forkserve.services import controlpath

EXIT_FAILED = 1
EXIT_NO_SERVER = 6
EXIT_FORBIDDEN = 7
EXIT_TIMEOUT = 8
EXIT_BY_CODE = {"forbidden": EXIT_FORBIDDEN, "timeout": EXIT_TIMEOUT}


def fail(message: str, code: int) -> None:
    click.echo(f"forkserve ctl: error: {message}", err=True)
    sys.exit(code)


class Client:
    def __init__(self, control_socket: str | None, pidfile: str | None, timeout: float) -> None:
        self.control_socket = control_socket
        self.pidfile = pidfile
        self.path = Path(control_socket or "")
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._stream: Any = None

    def connect(self) -> None:
        # Found only now, so that `forkserve ctl status --help` works with no server running.
        self.path = _locate(self.control_socket, self.pidfile)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.path))
        except PermissionError:
            sock.close()
            fail(f"permission denied on {self.path}: it belongs to another user", EXIT_FORBIDDEN)
        except OSError as error:
            sock.close()
            fail(
                f"no forkserve answers at {self.path} ({error.strerror or error}); is it running?",
                EXIT_NO_SERVER,
            )
        # The server answers when the action is done: wait a little longer than it will.
        sock.settimeout(self.timeout + 10)
        self._sock = sock
        self._stream = sock.makefile("rwb")

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        if self._sock is None:
            self.connect()
        try:
            self._stream.write(json.dumps({"op": op, "timeout": self.timeout, **fields}).encode() + b"\n")
            self._stream.flush()
            line = self._stream.readline()
        except TimeoutError:
            fail(f"no answer from {self.path} within {self.timeout + 10:g} s", EXIT_TIMEOUT)
        except OSError as error:
            fail(f"lost the connection to {self.path}: {error.strerror or error}", EXIT_NO_SERVER)
        if not line:
            fail(f"the server at {self.path} closed the connection without answering", EXIT_NO_SERVER)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def check(self, answer: dict[str, Any]) -> dict[str, Any]:
        if not answer.get("ok"):
            fail(str(answer.get("error")), EXIT_BY_CODE.get(str(answer.get("code")), EXIT_FAILED))
        return answer

    def close(self) -> None:
        if self._sock is not None:
            self._stream.close()
            self._sock.close()
            self._sock = None


def _locate(control_socket: str | None, pidfile: str | None) -> Path:
    try:
        if control_socket:
            return Path(control_socket)
        directory = controlpath.default_dir()
        if pidfile:
            return controlpath.from_pidfile(Path(pidfile), directory)
        return controlpath.find(directory)
    except controlpath.NotFound as error:
        fail(str(error), EXIT_NO_SERVER)
        raise  # unreachable: fail() exits


@click.group(
    "ctl",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    help="Steer a running forkserve through its control socket. Finds the one server of this user "
    "under the default directory, or the one named by --control-socket or --pid.",
)
@click.option(
    "--control-socket", envvar="FORKSERVE_CONTROL_SOCKET", metavar="PATH", help="The server's socket."
)
@click.option("--pid", "pidfile", metavar="FILE", help="The server's pid file (its --pid).")
@click.option(
    "--timeout", type=float, default=60.0, show_default=True, metavar="SECONDS",
    help="How long to wait for an action to complete.",
)  # fmt: skip
@click.pass_context
def group(ctx: click.Context, control_socket: str | None, pidfile: str | None, timeout: float) -> None:
    client = Client(control_socket, pidfile, timeout)
    ctx.obj = client
    ctx.call_on_close(client.close)


@group.command(help="One row per worker, totals, listeners and recent events.")
@click.option("--json", "as_json", is_flag=True, help="The snapshot as one JSON object.")
@click.pass_obj
def status(client: Client, as_json: bool) -> None:
    snapshot = client.check(client.request("status"))["status"]
    if as_json:
        click.echo(json.dumps(snapshot, indent=2))
    else:
        click.echo("\n".join(statusview.render(snapshot)))


@group.command(help="Replace every worker with a new generation; returns once it serves (or was aborted).")
@click.pass_obj
def reload(client: Client) -> None:
    click.echo(client.check(client.request("reload"))["message"])


@group.command(
    help="Set the number of workers (N) or change it (+K, -K); returns once exactly that many are ready.",
    context_settings={"ignore_unknown_options": True},
)
@click.argument("target")
@click.pass_obj
def scale(client: Client, target: str) -> None:
    try:
        request = statusview.parse_scale(target)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="N|+K|-K") from None
    click.echo(client.check(client.request("scale", **request))["message"])


@group.command(help="Stop the server (gracefully unless --immediate); returns once it has stopped.")
@click.option("--immediate", is_flag=True, help="Do not wait for in-flight requests (like QUIT).")
@click.pass_obj
def stop(client: Client, immediate: bool) -> None:
    answer = client.check(client.request("stop", graceful=not immediate))
    click.echo(f"stopped (exit code {answer.get('exit_code', 0)})")


@group.command(help="A live view of the workers, refreshed every --interval seconds; q or Ctrl-C quits.")
@click.option("--interval", type=float, default=1.0, show_default=True, metavar="SECONDS")
@click.pass_obj
def top(client: Client, interval: float) -> None:
    Top(client, interval).run()


class Top:
    """A full-screen refresh on the alternate screen, the way top and pm2 monit draw."""

    ENTER = "\x1b[?1049h\x1b[?25l"
    LEAVE = "\x1b[?25h\x1b[?1049l"
    HOME_CLEAR = "\x1b[H\x1b[2J"

    def __init__(self, client: Client, interval: float) -> None:
        self.client = client
        self.interval = max(0.1, interval)

    def run(self) -> None:
        stdin = sys.stdin.fileno()
        saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
        out = sys.stdout
        try:
            if saved is not None:
                tty.setcbreak(stdin)
            out.write(self.ENTER)
            while True:
                out.write(self.HOME_CLEAR + self.frame())
                out.flush()
                if self._quit_pressed(stdin):
                    return
        except KeyboardInterrupt:
            return
        finally:
            out.write(self.LEAVE)
            out.flush()
            if saved is not None:
                termios.tcsetattr(stdin, termios.TCSADRAIN, saved)

    def frame(self) -> str:
        answer = self.client.request("status")
        if not answer.get("ok"):
            body = [f"error: {answer.get('error')}"]
        else:
            body = statusview.render(answer["status"], events=8)
        stamp = time.strftime("%H:%M:%S")
        lines = [*body, "", f"{stamp}  refreshing every {self.interval:g} s; q or Ctrl-C quits"]
        # Raw-ish mode: the terminal needs \r\n to return to the first column.
        return "\r\n".join(lines) + "\r\n"

    def _quit_pressed(self, stdin: int) -> bool:
        deadline = time.monotonic() + self.interval
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, _, _ = select.select([stdin], [], [], left)
            if not readable:
                return False
            with contextlib.suppress(OSError):
                data = os.read(stdin, 64)
                if not data or b"q" in data.lower() or b"\x03" in data:
                    return True


def main(argv: list[str]) -> None:
    group.main(args=argv, prog_name="forkserve ctl")
