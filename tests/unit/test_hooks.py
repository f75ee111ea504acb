"""Hook settings and worker shares: pure parts, from tables."""

from __future__ import annotations

import pytest

from forkserve.common import hooks
from forkserve.config.sources import Source, resolve
from forkserve.errors import AppError, ConfigError
from forkserve.worker.info import share_of, worker_info


def top_level_hook(info: object) -> None:
    pass


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("app:hook", "app:hook"),
        (" pkg.mod:Class.method ", "pkg.mod:Class.method"),
        (top_level_hook, top_level_hook),
    ],
)
def test_hook_values_that_parse(raw, expected):
    assert hooks.parse_hook(raw) == expected


@pytest.mark.parametrize("raw", ["app", "app:", ":hook", "app:hook()", "a b:c", "app:hook:x", 42])
def test_hook_values_that_do_not(raw):
    with pytest.raises(ValueError, match="expected module:function"):
        hooks.parse_hook(raw)


def test_a_bad_hook_setting_names_its_flag_or_variable():
    with pytest.raises(ConfigError, match=r"^post_fork= 'nope': expected module:function"):
        resolve([Source("kwargs", {"post_fork": "nope"})])
    with pytest.raises(ConfigError, match=r"^FORKSERVE_ON_RELOAD 'x': expected module:function"):
        resolve([Source("env", {"FORKSERVE_ON_RELOAD": "x"})])


def test_a_callable_hook_becomes_an_import_string_for_a_fresh_interpreter():
    assert hooks.reference("post_fork", top_level_hook) == "tests.unit.test_hooks:top_level_hook"
    assert hooks.reference("post_fork", "m:f") == "m:f"

    def local(info: object) -> None:
        pass

    with pytest.raises(
        ConfigError, match=r"^the worker_exit hook .*local is defined in __main__ or inside a"
    ):
        hooks.reference("worker_exit", local)


def test_loading_a_hook():
    assert hooks.load("post_fork", "tests.unit.test_hooks:top_level_hook") is top_level_hook
    assert hooks.load("post_fork", None) is None
    with pytest.raises(AppError, match=r"^cannot load the post_fork hook 'tests.unit.test_hooks:nope': Attr"):
        hooks.load("post_fork", "tests.unit.test_hooks:nope")
    with pytest.raises(ConfigError, match="is not callable"):
        hooks.load("post_fork", "tests.unit.test_hooks:pytest.__name__")


@pytest.mark.parametrize(
    ("budget", "max_workers", "minimum", "share"),
    [
        (100, 4, 1, 12),  # 8 processes at worst during a rolling reload: 8 * 12 = 96 <= 100
        (100, 1, 1, 50),
        (20, 3, 1, 3),
        (3, 4, 1, 1),  # never below the minimum, even when the budget is too small
        (3, 4, 2, 2),
        (10, 0, 1, 5),  # a missing count is one worker
    ],
)
def test_a_workers_share_holds_when_every_worker_overlaps_its_replacement(
    budget, max_workers, minimum, share
):
    assert share_of(budget, max_workers, minimum) == share


def test_outside_a_worker_there_is_no_worker_info():
    assert worker_info() is None
