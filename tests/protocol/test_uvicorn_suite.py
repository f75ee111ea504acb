"""uvicorn's own HTTP protocol tests, unmodified, over forkserve's protocol classes.

Every test that passes for uvicorn's HttpToolsProtocol must pass for the fast class, and for the
classes forkserve's workers use, except where forkserve changes behaviour on purpose (listed, with
the reason, in WORKER_DEVIATIONS).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.protocol import uvicorn_suite

# The first test pays for fetching and running uvicorn's suite (the fixture), beyond pyproject's 120 s.
pytestmark = pytest.mark.timeout(uvicorn_suite.SUITE_TIMEOUT)

# uvicorn closes an idle keep-alive connection at once on shutdown; a draining forkserve worker
# keeps it until the keep-alive timeout (a request may be on its way: docs/reload.md).
WORKER_DEVIATIONS = {"test_shutdown_during_idle[{}]"}
# 55 of the 62 tests in uvicorn 0.54's test_http.py take the protocol fixture; far fewer means the
# suite did not really run.
MIN_TESTS = 50


@pytest.fixture(scope="session")
def suite_results(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, dict[str, str]], str]:
    uvicorn = uvicorn_suite.uvicorn_version()
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    # Cached across runs (keyed by version) in pytest's cache; a fresh temp dir without it.
    cache_dir = Path(cache.mkdir(f"uvicorn-sdist-{uvicorn}")) if cache else tmp_path_factory.mktemp("sdist")
    try:
        sdist = uvicorn_suite.fetch_sdist(cache_dir, uvicorn)
        root = uvicorn_suite.extract_suite(sdist, tmp_path_factory.mktemp("uvicorn-suite"))
        return uvicorn_suite.run_suite(root)
    except uvicorn_suite.SuiteError as exc:
        pytest.fail(str(exc))


def _where(protocol: str, table: dict[str, dict[str, str]]) -> list[str]:
    return sorted(
        key for key, by in table.items() if by.get("httptools") == "passed" and by.get(protocol) != "passed"
    )


def test_the_suite_ran(suite_results: tuple[dict[str, dict[str, str]], str]) -> None:
    table, output = suite_results
    functions = {key.split("[")[0] for key in table}
    assert len(functions) >= MIN_TESTS, output
    assert all(set(by) == set(uvicorn_suite.PROTOCOL_IDS) for by in table.values()), output


def test_fast_passes_everything_httptools_passes(
    suite_results: tuple[dict[str, dict[str, str]], str],
) -> None:
    table, output = suite_results
    assert _where("fastcore", table) == [], output


@pytest.mark.parametrize("protocol", ["fastworker", "httptoolsworker"])
def test_worker_classes_differ_only_where_forkserve_means_to(
    suite_results: tuple[dict[str, dict[str, str]], str], protocol: str
) -> None:
    table, output = suite_results
    assert set(_where(protocol, table)) <= WORKER_DEVIATIONS, output


def test_split_protocol() -> None:
    cases = {
        "test_get_request[fastcore]": ("test_get_request[{}]", "fastcore"),
        "test_x[httptools-websockets-sansio]": ("test_x[{}-websockets-sansio]", "httptools"),
        "test_y[\\x01-fastworker]": ("test_y[\\x01-{}]", "fastworker"),
        "test_plain": ("test_plain", None),
        "test_z[h11]": ("test_z[h11]", None),
    }
    for test_id, expected in cases.items():
        assert uvicorn_suite.split_protocol(test_id) == expected
