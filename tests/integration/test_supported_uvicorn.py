"""A real unsupported uvicorn, installed beside the suite's: one line, exit 2, no process started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from forkserve.common import supported

UNSUPPORTED = "0.44.0"  # boots, then answers every request with 400 (issue 15)


@pytest.fixture(scope="module")
def unsupported_uvicorn(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding uvicorn==UNSUPPORTED, installed once and kept in pytest's cache."""
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    base = Path(cache.mkdir("unsupported-uvicorn")) if cache else tmp_path_factory.mktemp("uvicorn")
    target = base / UNSUPPORTED
    if not (target / f"uvicorn-{UNSUPPORTED}.dist-info").is_dir():
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        command += ["--no-deps", "--no-compile", "--upgrade", "--target", str(target)]
        command.append(f"uvicorn=={UNSUPPORTED}")
        done = subprocess.run(command, capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, f"pip could not install uvicorn=={UNSUPPORTED}:\n{done.stderr[-2000:]}"
    return target


def test_an_unsupported_uvicorn_is_one_line_and_exit_2(serve, unsupported_uvicorn):
    # PYTHONPATH comes before site-packages: the master finds uvicorn 0.44.0's metadata first.
    server = serve("-w", "2", env={"PYTHONPATH": str(unsupported_uvicorn)})
    assert server.wait_exit() == 2
    log = server.log()
    # The whole log is this line: refused before the master started anything (a zygote logs).
    assert log.strip().splitlines() == [
        f"forkserve: error: uvicorn {UNSUPPORTED} is not supported: forkserve needs "
        f"{supported.UVICORN_REQUIREMENT} (pip install '{supported.UVICORN_REQUIREMENT}')"
    ], log
