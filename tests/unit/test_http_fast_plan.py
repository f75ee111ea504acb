"""The fast protocol's per-config plan: which app layer it calls, and whom it trusts for proxy headers."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn

from forkserve.http import fast_plan
from forkserve.http.fast_plan import plan_for
from forkserve.http.protocol import wrap_app


async def app(scope: Any, receive: Any, send: Any) -> None:
    pass


class Wrapper:
    def __init__(self, inner: Any) -> None:
        self.inner = inner


def loaded(**kwargs: Any) -> uvicorn.Config:
    config = uvicorn.Config(app, log_config=None, **kwargs)
    config.load()
    return config


def test_the_proxy_layer_is_replaced_and_its_trust_kept():
    plan = plan_for(loaded(proxy_headers=True, forwarded_allow_ips="10.0.0.0/8"))
    assert plan.app is app
    assert "10.1.2.3" in plan.trusted and "192.0.2.1" not in plan.trusted


def test_without_proxy_headers_nothing_is_trusted():
    plan = plan_for(loaded(proxy_headers=False))
    assert (plan.app, plan.trusted) == (app, None)


def test_a_forkserve_wrapper_goes_inside_the_proxy_layer():
    config = loaded(proxy_headers=True)
    wrap_app(config, Wrapper)
    plan = plan_for(config)
    assert isinstance(plan.app, Wrapper) and plan.app.inner is app
    assert plan.trusted is not None


def test_the_plan_follows_a_replaced_app():
    config = loaded(proxy_headers=False)
    first = plan_for(config)
    assert plan_for(config) is first
    config.loaded_app = Wrapper(app)
    assert plan_for(config).app is config.loaded_app


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (b"text/plain", True),
        (b"a\tb", True),  # a tab is allowed in a value
        (b"a\rb", False),
        (b"value\r\nCookie: smuggled=1", False),
        (b"b\x00", False),
        (b"x" * 100, True),  # valid, but too long to be remembered
    ],
)
def test_response_header_values(value, valid):
    if valid:
        fast_plan.check_value(value)
        assert (value in fast_plan.VALID_VALUES) == (len(value) <= 64)
    else:
        with pytest.raises(RuntimeError, match="Invalid HTTP header value"):
            fast_plan.check_value(value)
        assert value not in fast_plan.VALID_VALUES


@pytest.mark.parametrize("name", [b"a: b", b"x y", b"bad\r\nname", b"(x)"])
def test_a_bad_response_header_name_is_refused(name):
    with pytest.raises(RuntimeError, match="Invalid HTTP header name"):
        fast_plan.check_name(name)
    assert name not in fast_plan.VALID_NAMES


def test_bytearray_headers_are_checked_but_not_remembered():
    fast_plan.check_name(bytearray(b"x-only-in-a-bytearray"))
    fast_plan.check_value(bytearray(b"only-in-a-bytearray"))
    assert b"x-only-in-a-bytearray" not in fast_plan.VALID_NAMES
    assert b"only-in-a-bytearray" not in fast_plan.VALID_VALUES
    with pytest.raises(RuntimeError, match="Invalid HTTP header value"):
        fast_plan.check_value(bytearray(b"bad\r\n"))
