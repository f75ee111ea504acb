"""The supported uvicorn range: one table of versions, and the same range in pyproject.toml."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from forkserve.common import supported

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
FIX = "forkserve needs uvicorn>=0.53,<0.56 (pip install 'uvicorn>=0.53,<0.56')"


@pytest.mark.parametrize(
    ("installed", "problem"),
    [
        ("0.53.0", None),
        ("0.53", None),
        ("0.54.1", None),
        ("0.55.0", None),
        ("0.55.9.post1", None),
        ("0.52.9", f"uvicorn 0.52.9 is not supported: {FIX}"),
        ("0.44.0", f"uvicorn 0.44.0 is not supported: {FIX}"),
        ("0.36.0", f"uvicorn 0.36.0 is not supported: {FIX}"),
        ("0.56.0", f"uvicorn 0.56.0 is not supported: {FIX}"),
        ("0.56.0rc1", f"uvicorn 0.56.0rc1 is not supported: {FIX}"),
        ("1.0.0", f"uvicorn 1.0.0 is not supported: {FIX}"),
        ("0", f"uvicorn 0 is not supported: {FIX}"),
        ("unknown", f"uvicorn unknown is not supported: {FIX}"),
        (None, f"uvicorn is not installed: {FIX}"),
    ],
)
def test_uvicorn_problem(installed: str | None, problem: str | None) -> None:
    assert supported.uvicorn_problem(installed) == problem


@pytest.mark.parametrize(
    ("text", "numbers"),
    [("0.55.0", (0, 55, 0)), ("v1.2", (1, 2)), ("0.56.0rc1", (0, 56, 0)), ("2!1.0", (2,)), ("x", None)],
)
def test_release(text: str, numbers: tuple[int, ...] | None) -> None:
    assert supported.release(text) == numbers


def test_pyproject_declares_the_range_the_master_checks() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    declared = [d for d in dependencies if d.split(">")[0].split("=")[0].split("<")[0].strip() == "uvicorn"]
    assert declared == [supported.UVICORN_REQUIREMENT]


def test_the_installed_uvicorn_is_supported() -> None:
    # The suite runs on an installed uvicorn: it must be one the master accepts.
    assert supported.uvicorn_problem(supported.installed_uvicorn()) is None


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Metadata-Version: 2.4\nName: uvicorn\nVersion: 0.55.0\n", "0.55.0"),
        ("Name: uvicorn\nversion:  0.54.1 \nSummary: x\n", "0.54.1"),
        ("Name: uvicorn\n\nVersion: 9.9 (in the description, not the header)\n", None),
        ("Name: uvicorn\nVersion:\n", None),
        ("", None),
    ],
)
def test_metadata_version(text: str, found: str | None) -> None:
    assert supported.metadata_version(text) == found


def test_the_installed_version_is_the_one_importlib_metadata_reports() -> None:
    # The master reads the dist-info itself (importlib.metadata costs it 3.7 MiB): same answer.
    from importlib.metadata import version

    assert supported.installed_uvicorn() == version("uvicorn")
