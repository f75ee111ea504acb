"""The release metadata agrees with itself: constraints, classifiers, licence, URLs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SUPPORTED_PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def test_constraints_pin_every_dependency_of_the_extras_ci_installs() -> None:
    pinned = {
        _name(line)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith((" ", "#")) and "==" in line
    }
    wanted = [*PROJECT["dependencies"]]
    for extra in ("test", "bench", "dev"):
        wanted += PROJECT["optional-dependencies"][extra]
    missing = sorted({_name(r) for r in wanted} - pinned)
    # Regenerate with the command at the top of constraints.txt (docs/development.md).
    assert missing == [], f"constraints.txt lacks {missing}"


def test_every_dependency_declares_a_tested_lower_bound() -> None:
    for extra in ("test", "bench", "dev"):
        for requirement in [*PROJECT["dependencies"], *PROJECT["optional-dependencies"][extra]]:
            assert ">=" in requirement, requirement


def test_classifiers_name_each_supported_python_and_the_licence() -> None:
    assert PROJECT["requires-python"] == f">={SUPPORTED_PYTHONS[0]}"
    versions = [c.rsplit(" :: ", 1)[1] for c in PROJECT["classifiers"] if re.fullmatch(r".*:: 3\.\d+", c)]
    assert versions == SUPPORTED_PYTHONS
    assert PROJECT["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_project_urls_point_at_the_project() -> None:
    urls = PROJECT["urls"]
    assert {"Documentation", "Source", "Changelog"} <= set(urls)
    assert all(url.startswith("https://github.com/forkserve/forkserve") for url in urls.values())
    assert (ROOT / "CHANGELOG.md").read_text().count("## [Unreleased]") == 1
