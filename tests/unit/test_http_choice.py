"""--http: which values run where, and the one-line refusal when a module is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from forkserve.config.parsers import http_choice_problem
from forkserve.config.sources import Source, resolve
from forkserve.errors import ConfigError
from forkserve.http.choice import http_protocol_class

EVERYTHING = {"httptools", "zttp", "uvicorn.protocols.http.zttp_impl"}


@pytest.mark.parametrize(
    ("value", "installed", "problem"),
    [
        ("auto", set(), None),
        ("h11", set(), None),
        ("fast", EVERYTHING, None),
        ("fast", EVERYTHING - {"httptools"}, "'fast' needs httptools, which is not installed"),
        ("httptools", EVERYTHING - {"httptools"}, "'httptools' needs httptools"),
        ("zttp", EVERYTHING, None),
        ("zttp", EVERYTHING - {"zttp"}, "'zttp' needs the zttp package"),
        ("zttp", EVERYTHING - {"uvicorn.protocols.http.zttp_impl"}, "and uvicorn >= 0.54"),
    ],
)
def test_http_choice_problem(value, installed, problem):
    found = http_choice_problem(value, installed.__contains__)
    assert found == problem if problem is None else problem in (found or "")


def test_an_unknown_value_lists_the_choices():
    with pytest.raises(ConfigError) as info:
        resolve([Source("cli", {"http": "spdy"})])
    assert str(info.value) == "--http 'spdy': expected one of auto, fast, httptools, h11, zttp"


def test_auto_is_the_default_and_means_fast_here():
    config, _ = resolve([])
    assert config.http == "auto"
    assert http_protocol_class(config.http).__name__ == "DrainingFastProtocol"


@pytest.mark.parametrize(
    ("value", "class_name"),
    [
        ("auto", "DrainingFastProtocol"),
        ("fast", "DrainingFastProtocol"),
        ("httptools", "_DrainingHttpTools"),
        ("h11", "DrainingH11Protocol"),
        ("zttp", "ZttpAutoProtocol"),
    ],
)
def test_each_value_gets_its_class_with_the_limits(value, class_name):
    chosen = http_protocol_class(value, header_timeout=3.0, max_header_size=1000)
    assert chosen.__name__ == class_name
    limited = chosen.http1_class if value == "zttp" else chosen  # zttp: on its HTTP/1.1 class
    assert (limited.header_timeout, limited.max_header_size) == (3.0, 1000)


def test_checking_a_choice_imports_nothing():
    # The master validates --http and must not import uvicorn (its memory; docs/benchmarks.md).
    script = (
        "import sys\n"
        "from forkserve.config.sources import resolve, Source\n"
        "resolve([Source('cli', {'http': 'zttp'})])\n"
        "print(sorted(m for m in ('uvicorn', 'httptools', 'zttp') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stderr
