"""The docs say what the code does.

docs/configuration.md is generated from the settings table and must be committed up to date; every
flag of the table is in ``forkserve --help`` and on the page; and the tables that the hand-written
pages quote from the code (the worker lifecycle, the exit codes, the back-off numbers) still match.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from forkserve import errors
from forkserve.config import docgen
from forkserve.config.parsers import parse_bool
from forkserve.config.settings import SETTINGS, Setting
from forkserve.policy import backoff, timeouts
from forkserve.policy.lifecycle import TRANSITIONS, Event, State

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "configuration.md"


def cli_flags(spec: Setting) -> list[str]:
    """Every flag the CLI should accept for SPEC: its flags, plus --no-x for a boolean."""
    flags = list(spec.flags)
    if spec.is_flag:
        first_long = next(flag for flag in spec.flags if flag.startswith("--"))
        flags.append(f"--no-{first_long[2:]}")
    return flags


@pytest.fixture(scope="module")
def help_text() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "forkserve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        # Wide enough that click never breaks a long flag pair over two lines.
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_committed_page_is_the_rendered_table() -> None:
    committed = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
    assert committed == docgen.render_configuration(), (
        "docs/configuration.md is stale: run `python -m forkserve.config.docgen` and commit the result"
    )


def test_docgen_writes_the_page_and_check_detects_a_stale_one(tmp_path: Path) -> None:
    page = tmp_path / "configuration.md"
    assert docgen.main(["--output", str(page)]) == 0
    assert page.read_text(encoding="utf-8") == docgen.render_configuration()
    assert docgen.main(["--check", "--output", str(page)]) == 0
    page.write_text("stale\n", encoding="utf-8")
    assert docgen.main(["--check", "--output", str(page)]) == 1
    assert page.read_text(encoding="utf-8") == "stale\n"


def test_check_names_the_command_to_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docgen.main(["--check", "--output", str(tmp_path / "missing.md")])
    message = capsys.readouterr().err.strip()
    assert "\n" not in message
    assert "python -m forkserve.config.docgen" in message


@pytest.mark.parametrize("spec", SETTINGS, ids=lambda spec: spec.name)
def test_every_flag_is_in_the_cli_help(spec: Setting, help_text: str) -> None:
    for flag in cli_flags(spec):
        assert flag in help_text, f"{flag} (setting {spec.name}) is missing from `forkserve --help`"


@pytest.mark.parametrize("spec", SETTINGS, ids=lambda spec: spec.name)
def test_every_flag_and_variable_is_on_the_page(spec: Setting) -> None:
    page = docgen.render_configuration()
    for flag in cli_flags(spec):
        assert f"`{flag}" in page, f"{flag} (setting {spec.name}) is missing from docs/configuration.md"
    for key in spec.env:
        assert f"`{key}`" in page, f"{key} (setting {spec.name}) is missing from docs/configuration.md"
    assert f"`{spec.name}`" in page


def test_every_setting_has_its_own_section_in_table_order() -> None:
    page = docgen.render_configuration()
    headings = [line for line in page.splitlines() if line.startswith("### ")]
    assert headings == [f"### `{docgen.long_flag(spec)}`" for spec in _grouped(SETTINGS)]


def _grouped(settings: list[Setting]) -> list[Setting]:
    groups: dict[str, list[Setting]] = {}
    for spec in settings:
        groups.setdefault(spec.group, []).append(spec)
    return [spec for specs in groups.values() for spec in specs]


def test_bind_default_reads_as_an_address() -> None:
    bind = next(spec for spec in SETTINGS if spec.name == "bind")
    assert docgen.default_text(bind) == "`127.0.0.1:8000`"


@pytest.mark.parametrize(("yes", "no"), docgen.BOOL_WORDS)
def test_the_boolean_words_the_page_lists_are_accepted(yes: str, no: str) -> None:
    assert parse_bool(yes) is True
    assert parse_bool(yes.upper()) is True
    assert parse_bool(no) is False


# ---------------------------------------------------------------------------------------------
# The hand-written pages quote a few tables of the code; these keep the quotes true.

DOCS = ROOT / "docs"
_TRANSITION_ROW = re.compile(r"^\| `(\w+)` \| `(\w+)` \| `(\w+)` \|", re.MULTILINE)


def test_design_page_lists_exactly_the_lifecycle_transitions() -> None:
    text = (DOCS / "design.md").read_text(encoding="utf-8")
    documented = {(State(a), Event(e), State(b)) for a, e, b in _TRANSITION_ROW.findall(text)}
    actual = {(state, event, new) for state, moves in TRANSITIONS.items() for event, new in moves.items()}
    assert documented == actual, (
        "the lifecycle table in docs/design.md differs from forkserve.policy.lifecycle.TRANSITIONS: "
        f"missing {sorted(map(str, actual - documented))}, extra {sorted(map(str, documented - actual))}"
    )


_EXIT_ROW = re.compile(r"^\| (\d+) \| ([^|]*) \|", re.MULTILINE)


def test_signals_page_exit_codes_match_the_error_classes() -> None:
    text = (DOCS / "signals.md").read_text(encoding="utf-8")
    seen: set[str] = set()
    for code, names in _EXIT_ROW.findall(text):
        for name in re.findall(r"`(\w+)`", names):
            error = getattr(errors, name)
            assert error.exit_code == int(code), f"docs/signals.md gives {name} exit code {code}"
            seen.add(name)
    classes = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.ForkserveError)
    }
    assert seen == classes


def test_signals_page_quotes_the_back_off_and_hung_check_numbers() -> None:
    text = " ".join((DOCS / "signals.md").read_text(encoding="utf-8").split())
    assert f"had run for at least {backoff.STABLE_AFTER:g} s" in text
    assert f"{backoff.FIRST_DELAY:g} s after the first such death" in text
    assert f"doubling up to {backoff.MAX_DELAY:g} s" in text
    assert f"sent `SIGKILL` {timeouts.STACK_DUMP_GRACE:g} s later" in text


def test_usage_page_error_table_matches_the_error_classes() -> None:
    text = (DOCS / "usage.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)`[^|]* \| (\d+) \|", text, re.MULTILINE)
    assert rows
    for name, code in rows:
        assert getattr(errors, name).exit_code == int(code), f"docs/usage.md gives {name} exit code {code}"


# A path of the machine the docs were written on: a reader has no /work or /root, and a venv's
# interpreter path is not a command they can run (`python -m benchmarks.run` is).
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|root|home/\w+)/|\S+/bin/python\d*(?:\.\d+)?\b")


PAGES = sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md", ROOT / "CHANGELOG.md"])


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_machine_paths_in_the_docs(page: Path) -> None:
    found = [
        f"{page.name}:{number}: {line.strip()}"
        for number, line in enumerate(page.read_text().splitlines(), 1)
        if MACHINE_PATH.search(line)
    ]
    assert found == []
