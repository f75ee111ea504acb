"""benchmarks.app_floor: the app alone, called as a server would call it, and checked to answer."""

from __future__ import annotations

import pytest

from benchmarks import app_floor
from benchmarks.run import APPS


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/", "/", b""),
        ("/items/42?q=widgets", "/items/42", b"q=widgets"),
        ("/a%20b?x=1&y", "/a%20b", b"x=1&y"),
    ],
)
def test_the_scope_carries_the_target_as_a_server_would(target, path, query):
    scope = app_floor.scope_for(target)
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (path, path.encode(), query)
    assert scope["headers"] == [app_floor.HOST_HEADER]


# The apps the test extra can import (FastAPI is in the bench extra only).
@pytest.mark.parametrize("name", ["hello", "heavy", "django"])
def test_every_benchmark_app_answers_its_path_and_gets_a_figure(name):
    # The Django handler listens for a disconnect in a task of its own: the receiver must wait, not
    # answer again, or the handler fails.
    spec = APPS[name]
    figures = app_floor.app_cpu_per_request(spec.target, spec.path, count=20, repeats=2)
    assert len(figures) == 2 and all(figure > 0 for figure in figures)


def test_an_app_that_does_not_answer_200_is_refused():
    with pytest.raises(RuntimeError, match="not 200"):
        app_floor.app_cpu_per_request("benchmarks.apps_starlette:app", "/no/such/route", count=5, repeats=1)
