"""Generate docs/configuration.md from the settings table: ``python -m forkserve.config.docgen [--check]``.

Why generated. Every setting is declared once, as a field of ``forkserve.config.settings.Config``: its
default, flags, environment variables, help text and parser. The command line, the environment and
``forkserve.run()`` all read that one table, so the reference page is rendered from it too. A page
written by hand drifts the first time a flag is added or a default changes; a rendered page cannot,
because ``tests/unit/test_docs.py`` fails whenever the committed page differs from what this module
renders. To change the page, change the table (or the prose here) and run ``python -m
forkserve.config.docgen``.

Rendering is a pure function of the table (``render_configuration``); only ``main`` touches files.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from forkserve.config.parsers import BindSpec
from forkserve.config.settings import DEFAULTS, SETTINGS, Config, Setting
from forkserve.errors import ConfigError

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
COMMAND = "python -m forkserve.config.docgen"

# The words an environment variable may use for a boolean; tests/unit/test_docs.py checks that
# forkserve.config.parsers.parse_bool accepts each of them, so the page cannot promise a word it rejects.
BOOL_WORDS: tuple[tuple[str, str], ...] = (("1", "0"), ("true", "false"), ("yes", "no"), ("on", "off"))


# ---------------------------------------------------------------------------------------------
# Small formatters: one value of the table in, Markdown text out.


def _code(text: str) -> str:
    """``text`` as inline code, with a longer fence when the text itself holds a backtick."""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _prose(text: str) -> str:
    """Help text as Markdown: characters that would start emphasis or HTML are escaped."""
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("<", "&lt;")


def _cell(text: str) -> str:
    """Text for a table cell: a '|' would end the cell."""
    return text.replace("|", "\\|")


def long_flag(spec: Setting) -> str:
    """The setting's main flag: its first ``--long`` one (every setting has one)."""
    return next((flag for flag in spec.flags if flag.startswith("--")), spec.flags[-1])


def cli_forms(spec: Setting) -> list[str]:
    """Every way to write the setting on the command line, as click accepts it."""
    if spec.is_flag:
        longs = [flag for flag in spec.flags if flag.startswith("--")]
        return [*longs, f"--no-{longs[0][2:]}"]
    ordered = [long_flag(spec), *(flag for flag in spec.flags if flag != long_flag(spec))]
    return [f"{flag} {spec.metavar}" if spec.metavar else flag for flag in ordered]


def default_text(spec: Setting) -> str:
    """The default as Markdown: a value as code (``default_text`` when the table gives one), or a word.

    The words: "not set" (None), "empty" (an empty string), "on" / "off" (a boolean flag).
    """
    if spec.default_text:
        return _code(spec.default_text)
    value = DEFAULTS[spec.name]
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "on" if value else "off"
    if value == "":
        return "empty"
    return _code(_readable(value))


def _readable(value: Any) -> str:
    """A default value as it would be typed on the command line."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, BindSpec):
        return str(value)
    if isinstance(value, tuple | list):
        return ",".join(_readable(item) for item in value)
    return str(value)


def type_name(hint: Any) -> str:
    """A field's type as it reads in Python source: ``int | Literal['auto']``, ``str | None``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is type(None):
        return "None"
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(type_name(arg) for arg in args)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(arg) for arg in args) + "]"
    if origin is not None:
        inner = ", ".join("..." if arg is Ellipsis else type_name(arg) for arg in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return str(getattr(hint, "__name__", hint))


_HINTS: dict[str, Any] = typing.get_type_hints(Config)


# ---------------------------------------------------------------------------------------------
# The page.


def _groups() -> list[tuple[str, list[Setting]]]:
    """Settings by group, groups in the order they first appear in the table."""
    groups: dict[str, list[Setting]] = {}
    for spec in SETTINGS:
        groups.setdefault(spec.group, []).append(spec)
    return list(groups.items())


def _intro() -> list[str]:
    conventional = [key for spec in SETTINGS for key in spec.env if not key.startswith("FORKSERVE_")]
    ours_first = all(spec.env[0].startswith("FORKSERVE_") for spec in SETTINGS)
    bool_words = ", ".join(f"{_code(yes)}/{_code(no)}" for yes, no in BOOL_WORDS)
    repeated = [spec for spec in SETTINGS if spec.multiple]
    lines = [
        "# Configuration",
        "",
        f"<!-- Generated by `{COMMAND}` from the settings table in forkserve/config/settings.py. "
        "Edit the table, not this page. -->",
        "",
        "Every setting can be given in four places. Later sources win:",
        "",
        "1. the built-in default;",
        "2. a TOML config file: `-c forkserve.toml`, or else the `[tool.forkserve]` table of "
        "./pyproject.toml (keys are the setting names, with `-` or `_`; see "
        "[configuration sources](configuration-sources.md));",
        "3. an environment variable, `FORKSERVE_<NAME>` ("
        + (
            "a few settings also read a conventional variable: "
            + ", ".join(_code(key) for key in conventional)
            + (
                "; the `FORKSERVE_` one wins when both are set"
                if ours_first
                else "; when several are set, the one listed first below wins"
            )
            if conventional
            else "no other variables are read"
        )
        + ");",
        "4. a command-line flag, or a keyword argument of `forkserve.run()` / `forkserve.Server()`.",
        "",
        "The environment is read by the library too: `forkserve.run(app)` in a process with "
        "`FORKSERVE_WORKERS=8` set starts 8 workers unless it passes `workers=` itself. "
        "Environment variables that name no setting are ignored.",
        "",
        "Each value is checked by the same parser whichever source it comes from. A bad value stops "
        "the server before anything starts, with a one-line message that names where the value came "
        "from (the file and key, the flag, the variable, or `name=` for a keyword argument); the "
        "command line exits "
        f"with code {ConfigError.exit_code} and the library raises `forkserve.ConfigError`. "
        "An unknown keyword argument is an error too, with the closest setting name suggested.",
        "",
        "- **Keyword arguments** are the setting names below (`graceful_timeout=10`). They take the "
        "Python value (`workers=4`, `access_log=True`) or the same string the command line takes "
        '(`workers="auto"`, `timeout="2.5"`). `None` means "not given": the environment or default '
        "stays in force.",
        "- **Booleans** are a pair of flags, `--x` and `--no-x`. In the environment they accept "
        f"{bool_words}, in any case; an empty value means off.",
    ]
    for spec in repeated:
        lines.append(
            f"- {_code(long_flag(spec))} may be repeated; each one adds a value. In "
            f"{_code(spec.env[0])} separate several values with {spec.list_separator}; as a keyword "
            f"argument pass one string or a list of strings (`{spec.name}=[...]`)."
        )
    lines += [
        "",
        "Run `forkserve --help` for the same list in short, and `forkserve APP --print-config` for "
        "the value each setting would take and where it came from.",
        "",
        "| Setting | Environment | Default |",
        "| --- | --- | --- |",
    ]
    for spec in SETTINGS:
        flags = (
            " / ".join(_code(flag) for flag in cli_forms(spec)) if spec.is_flag else _code(long_flag(spec))
        )
        lines.append(
            f"| {_cell(flags)} | {_cell(', '.join(_code(key) for key in spec.env))} "
            f"| {_cell(default_text(spec))} |"
        )
    return lines


def _setting(spec: Setting) -> list[str]:
    env = ", ".join(_code(key) for key in spec.env)
    if len(spec.env) > 1:
        env += " (the first one set is used)"
    if spec.is_flag:
        env += " (" + ", ".join(f"{yes}/{no}" for yes, no in BOOL_WORDS) + ")"
    command_line = (" / " if spec.is_flag else ", ").join(_code(form) for form in cli_forms(spec))
    if spec.multiple:
        command_line += ", repeatable"
    return [
        f"### {_code(long_flag(spec))}",
        "",
        _prose(spec.help),
        "",
        f"- Command line: {command_line}",
        f"- Environment: {env}",
        f"- Keyword argument: {_code(spec.name)} (type {_code(type_name(_HINTS[spec.name]))})",
        f"- Default: {default_text(spec)}",
    ]


def render_configuration() -> str:
    """docs/configuration.md, rendered from ``forkserve.config.settings.SETTINGS`` alone."""
    lines = _intro()
    for group, specs in _groups():
        lines += ["", f"## {group}"]
        for spec in specs:
            lines += ["", *_setting(spec)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Command line.


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=COMMAND, description="Write docs/configuration.md from the settings table."
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the page differs from the table, write nothing"
    )
    parser.add_argument("--output", type=Path, default=PAGE, help=f"the page to write (default: {PAGE})")
    args = parser.parse_args(argv)
    page: Path = args.output
    text = render_configuration()
    if args.check:
        try:
            current = page.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            print(f"{page} is out of date with the settings table; run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text, encoding="utf-8")
    print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
