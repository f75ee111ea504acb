"""``forkserve APP [OPTIONS]``: the command line, built from the settings table.

Every option is generated from ``forkserve.config.settings.SETTINGS`` and read as a raw string, so the CLI,
the environment and the library validate through the same parsers and say the same thing about a
bad value. Errors are rendered here, once: one line, ``forkserve: error: ...``, and the error's
exit code; never a traceback for a user's mistake.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Mapping
from typing import Any

import click

from forkserve import __version__
from forkserve.api import ENV_ARGS, build_config
from forkserve.cli import runmaster
from forkserve.cli.runmaster import fail
from forkserve.common.logs import LogSetup
from forkserve.config import gunicorn
from forkserve.config.settings import SETTINGS, Config, Setting
from forkserve.errors import ConfigError, ForkserveError


def _option(spec: Setting) -> click.Option:
    if spec.is_flag:
        long_flags = [f for f in spec.flags if f.startswith("--")]
        declarations = [f"{'/'.join(long_flags)}/--no-{long_flags[0][2:]}", spec.name]
        return click.Option(declarations, default=None, help=spec.help)
    return click.Option(
        [*spec.flags, spec.name],
        type=str,
        default=None,
        multiple=spec.multiple,
        metavar=spec.metavar or None,
        help=spec.help,
    )


SECRET_SETTINGS = frozenset({"keyfile_password"})


def effective_settings(config: Config, origins: Mapping[str, str]) -> str:
    """--print-config: every setting, its effective value and where that value came from."""
    rows = []
    for spec in SETTINGS:
        value = getattr(config, spec.name)
        if value is None:
            shown = "(not set)"
        elif spec.name in SECRET_SETTINGS:
            shown = "(hidden)"
        elif isinstance(value, bool):
            shown = "on" if value else "off"
        elif isinstance(value, tuple):
            shown = ", ".join(str(item) for item in value) or "(none)"
        else:
            shown = str(value)
        rows.append((spec.name.replace("_", "-"), shown, origins.get(spec.name, "default")))
    name_width = max(len(row[0]) for row in rows)
    value_width = min(40, max(len(row[1]) for row in rows))
    lines = [f"{'setting':<{name_width}}  {'value':<{value_width}}  from"]
    lines += [f"{name:<{name_width}}  {shown:<{value_width}}  {origin}" for name, shown, origin in rows]
    return "\n".join(lines)


GUNICORN_PREFIX = "gunicorn_"


def _gunicorn_option(name: str, flags: tuple[str, ...], is_flag: bool) -> click.Option:
    """One of gunicorn's flags that forkserve lacks; read raw, and translated by config/gunicorn.py."""
    shown = f"gunicorn's {name}: see docs/migrating.md."
    if is_flag:
        return click.Option([*flags, GUNICORN_PREFIX + name], is_flag=True, default=False, help=shown)
    return click.Option(
        [*flags, GUNICORN_PREFIX + name], type=str, default=None, multiple=name == "raw_env", help=shown
    )


def pop_gunicorn_flags(values: dict[str, Any]) -> dict[str, Any]:
    """Take gunicorn's flags out of the parsed VALUES: the ones given, by gunicorn setting name."""
    flags = {
        key.removeprefix(GUNICORN_PREFIX): values.pop(key)
        for key in list(values)
        if key.startswith(GUNICORN_PREFIX)
    }
    return {key: value for key, value in flags.items() if value not in (None, False, ())}


def env_args(text: str) -> dict[str, Any]:
    """GUNICORN_CMD_ARGS's flags, parsed as the command line's; a ConfigError in one line."""
    try:
        args = shlex.split(text)
        asks = [arg for arg in args if arg in ("-h", "--help", "--version")]
        if asks:
            raise click.UsageError(f"{asks[0]} belongs on the command line")
        # Resilient: no callbacks run. Click consumes the list it parses, hence the copies.
        context = command.make_context("forkserve", list(args), resilient_parsing=True)
        command.make_context("forkserve", list(args))  # the same, checking every flag and value
    except (ValueError, click.ClickException) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        raise ConfigError(f"{ENV_ARGS}={text!r}: {message}") from None
    return dict(context.params)


def serve(
    app_argument: str | None, print_config: bool = False, check_config: bool = False, **values: Any
) -> None:
    gunicorn_flags = pop_gunicorn_flags(values)
    notes: list[str] = []
    try:
        from_env = env_args(os.environ.get(ENV_ARGS, ""))
        app_argument = app_argument or from_env.pop("app_argument", None)
        from_env.pop("app_argument", None)
        print_config = bool(from_env.pop("print_config", False)) or print_config
        check_config = bool(from_env.pop("check_config", False)) or check_config
        env_gunicorn_flags = pop_gunicorn_flags(from_env)
        config, origins = build_config(
            values,
            cli=True,
            gunicorn_flags=gunicorn_flags,
            env_args={key: value for key, value in from_env.items() if value not in (None, ())},
            env_gunicorn_flags=env_gunicorn_flags,
            notes=notes,
        )
    except ForkserveError as error:
        fail(error)
    if print_config:
        click.echo(effective_settings(config, origins))
        sys.exit(0)
    app = app_argument or config.app
    if not app:
        click.echo(
            "forkserve: error: missing APP; name your ASGI app as module:attribute, "
            "e.g. forkserve forkserve.demo:app -w auto (or set FORKSERVE_APP)",
            err=True,
        )
        sys.exit(2)
    if check_config:
        try:
            LogSetup.from_config(config, "master")
            for note in notes:
                logging.getLogger("forkserve").info("%s", note)
            from forkserve.cli.check import check

            check(app, config)
        except ForkserveError as error:
            fail(error)
        click.echo(f"forkserve: the configuration is valid and {app} imports")
        sys.exit(0)
    # The master runs in a fresh interpreter, without click and the parsing (cli/runmaster.py).
    runmaster.serve(app, config, notes, sys.argv[1:])


command = click.Command(
    "forkserve",
    callback=serve,
    params=[click.Argument(["app_argument"], required=False, metavar="APP"), *(_option(s) for s in SETTINGS)],
    help="Serve the ASGI app APP (module:attribute) with a master, a zygote and pre-forked workers.\n\n"
    "Signals to the master: TERM/INT graceful stop, QUIT immediate stop, HUP reload, TTIN/TTOU one "
    "worker more/less, USR1 reopen log files. Every option can also be set as FORKSERVE_<NAME>.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        click.echo(f"forkserve {__version__}")
        ctx.exit()


command.params.append(
    click.Option(["--version"], is_flag=True, expose_value=False, is_eager=True, callback=_show_version,
                 help="Show the version and exit.")
)  # fmt: skip


command.params.extend(_gunicorn_option(name, *spec) for name, spec in gunicorn.FLAGS.items())
command.params.append(
    click.Option(["--check-config"], is_flag=True, default=False,
                 help="Load the configuration, import the app in a child process, and exit: 0 when both "
                 "work, else one line saying what failed (exit 2: configuration, 3: the app). For CI.")
)  # fmt: skip
command.params.append(
    click.Option(["--print-config"], is_flag=True, default=False,
                 help="Print every setting's effective value and where it came from (default, file, "
                 "environment variable or flag), then exit.")
)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["ctl"]:
        # A separate command group, so `forkserve APP` keeps its flags and an app may be named "ctl.py".
        from forkserve.cli import ctl

        ctl.main(args[1:])
        return
    command.main(args=args, prog_name="forkserve")
