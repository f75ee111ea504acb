"""The dependency matrix: forkserve at both ends of what pyproject.toml admits.

    nox -s lowest   the oldest version each direct dependency's range allows
                    (uv pip install --resolution lowest-direct), on the oldest Python
                    requires-python admits (3.10)
    nox -s newest   the newest version each range allows, unconstrained, on the newest
                    supported Python (3.13): what a user installing today gets

Each session runs the protocol suite (uvicorn's own tests over forkserve's classes), a real-server
smoke test (serve the demo, a request, HUP, a request, TERM), the unit tests and the HTTP and
reload integration tests. .ci/run runs both; docs/development.md says how to run them locally.
Interpreters are found under pyenv (``pyenv root``) or on PATH as python3.X; a missing one fails
the session with what to install, never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lowest", "newest"]
nox.options.error_on_missing_interpreters = True

OLDEST_PYTHON = "3.10"
NEWEST_PYTHON = "3.13"
TESTS = [
    "tests/protocol",
    "tests/unit",
    "tests/integration/test_smoke.py",
    "tests/integration/test_supported_uvicorn.py",
    "tests/integration/test_http_edges.py",
    "tests/integration/test_reload.py",
]


def interpreter(version: str) -> str:
    """A CPython VERSION (3.10): pyenv's newest build of it, else python3.10 on PATH.

    Returns VERSION itself when neither exists, so that nox fails the session with "Python
    interpreter 3.10 not found" (error_on_missing_interpreters) instead of skipping it.
    """
    roots = [os.environ.get("PYENV_ROOT", ""), str(Path.home() / ".pyenv")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        done = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
        roots.insert(0, done.stdout.strip())
    found: list[Path] = []
    for root in filter(None, roots):
        found += Path(root, "versions").glob(f"{version}.*/bin/python{version}")
    # Newest patch release first (3.10.13 before 3.10.9); pre-releases (3.13.0rc1) sort last.
    found.sort(key=lambda path: _patch(path.parents[1].name), reverse=True)
    on_path = shutil.which(f"python{version}")
    for candidate in [*map(str, found), *([on_path] if on_path else [])]:
        check = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, check=False)  # fmt: skip
        if check.returncode == 0 and check.stdout.strip() == version:
            return candidate
    return version


def _patch(name: str) -> int:
    tail = name.split(".")[2] if name.count(".") >= 2 else ""
    return int(tail) if tail.isdigit() else -1


def _run_tests(session: nox.Session, *deselect: str) -> None:
    versions = "import sys, forkserve.common.supported as s; print(sys.version, s.installed_uvicorn())"
    session.run("python", "-c", versions)
    # pytest's cache (.pytest_cache) keeps uvicorn's sdist per version: downloaded once, not per session.
    session.run("python", "-m", "pytest", "-q", *TESTS, *deselect, *session.posargs)


@nox.session(python=interpreter(OLDEST_PYTHON))
def lowest(session: nox.Session) -> None:
    """The oldest version of every direct dependency, on the oldest Python."""
    # pip apart (the suite downloads uvicorn's sdist and installs an unsupported uvicorn with it):
    # "lowest" would pick pip 0.2, from 2008.
    session.install("pip")
    session.install("--resolution", "lowest-direct", "-e", ".[test]")
    # --http zttp needs uvicorn >= 0.54 (forkserve refuses it in one line below that,
    # tests/unit/test_http_choice.py), so the zttp cases have no protocol to run here.
    _run_tests(session, "-k", "not zttp")


@nox.session(python=interpreter(NEWEST_PYTHON))
def newest(session: nox.Session) -> None:
    """The newest version every range allows (no constraints file), on the newest Python."""
    session.install("--resolution", "highest", "-e", ".[test]", "pip")
    _run_tests(session)
