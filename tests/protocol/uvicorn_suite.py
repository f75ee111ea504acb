"""Fetch uvicorn's sdist at test time and run its HTTP protocol tests over forkserve's classes.

uvicorn publishes its tests in the sdist, not the wheel. ``pip download`` gets the sdist of the
installed version (cached per version, so it is fetched once), the few files the protocol tests
import are extracted, and pytest runs them in a subprocess with ``suite_conftest.py`` overriding
the protocol fixture. The outcome of every test id is read back from a JUnit XML report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ElementTree
from importlib.metadata import version
from pathlib import Path

import forkserve

# Both fit inside test_uvicorn_suite.py's timeout (SUITE_TIMEOUT), which includes fixture setup.
# pip download prepares the sdist's metadata (hatchling in an isolated environment): 91 s measured on
# a loaded two-core machine, which a fresh session (nox, a clean CI clone) pays once per version.
DOWNLOAD_TIMEOUT = 240.0
RUN_TIMEOUT = 120.0
SUITE_TIMEOUT = DOWNLOAD_TIMEOUT + RUN_TIMEOUT + 30
SUITE_FILES = (
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/response.py",
    "tests/utils.py",
    "tests/protocols/__init__.py",
    "tests/protocols/test_http.py",
)
# uvicorn's pytest settings that decide outcomes (its addopts need xdist and are left out).
PYTEST_INI = "[pytest]\nxfail_strict = true\nfilterwarnings =\n    error\n"
PROTOCOL_IDS = ("httptools", "fastcore", "fastworker", "httptoolsworker")


class SuiteError(Exception):
    pass


def uvicorn_version() -> str:
    return version("uvicorn")


def fetch_sdist(cache: Path, uvicorn: str) -> Path:
    """The sdist of uvicorn==UVICORN in CACHE, downloading it if it is not there yet."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"uvicorn-{uvicorn}.tar.gz"))
    if found:
        return found[0]
    command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
    command += ["--disable-pip-version-check", "-d", str(cache), f"uvicorn=={uvicorn}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SuiteError(f"pip download uvicorn=={uvicorn} took over {DOWNLOAD_TIMEOUT:.0f} s") from None
    found = sorted(cache.glob(f"uvicorn-{uvicorn}.tar.gz"))
    if done.returncode != 0 or not found:
        raise SuiteError(
            f"could not download uvicorn=={uvicorn}'s sdist (pip exit {done.returncode}); its protocol tests "
            f"come from it, so the package index must be reachable:\n{done.stderr[-2000:]}"
        )
    return found[0]


def extract_suite(sdist: Path, into: Path) -> Path:
    prefix = sdist.name.removesuffix(".tar.gz") + "/"
    with tarfile.open(sdist) as archive:
        for name in SUITE_FILES:
            member = archive.extractfile(prefix + name)
            if member is None:
                raise SuiteError(f"{sdist.name} has no {name}")
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(member.read())
    shutil.copy(Path(__file__).with_name("suite_conftest.py"), into / "tests/protocols/conftest.py")
    (into / "pytest.ini").write_text(PYTEST_INI)
    return into


def run_suite(root: Path) -> tuple[dict[str, dict[str, str]], str]:
    """{test id with the protocol replaced by '{}': {protocol id: outcome}}, and pytest's output."""
    report = root / "report.xml"
    env = dict(os.environ)
    # forkserve as this test run imports it (a worktree, or the installed package).
    env["PYTHONPATH"] = str(Path(forkserve.__file__).parent.parent)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-c", str(root / "pytest.ini")]
    command += ["--rootdir", str(root), f"--junitxml={report}", "tests/protocols/test_http.py"]
    try:
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise SuiteError(f"uvicorn's protocol tests took over {RUN_TIMEOUT:.0f} s") from None
    output = done.stdout[-6000:] + done.stderr[-2000:]
    if not report.exists():
        raise SuiteError(f"uvicorn's protocol tests did not run (exit {done.returncode}):\n{output}")
    return outcomes(report), output


def outcomes(report: Path) -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = {}
    for case in ElementTree.parse(report).iter("testcase"):
        name = case.get("name", "")
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
        key, protocol = split_protocol(name)
        if protocol is not None:
            table.setdefault(key, {})[protocol] = outcome
    return table


def split_protocol(test_id: str) -> tuple[str, str | None]:
    """("test_x[{}-y]", "fastcore") for "test_x[fastcore-y]"; (id, None) without a protocol."""
    if "[" not in test_id or not test_id.endswith("]"):
        return test_id, None
    function, params = test_id[:-1].split("[", 1)
    tokens = params.split("-")
    for index, token in enumerate(tokens):
        if token in PROTOCOL_IDS:
            tokens[index] = "{}"
            return f"{function}[{'-'.join(tokens)}]", token
    return test_id, None
