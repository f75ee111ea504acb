"""Copied next to uvicorn's tests/protocols/test_http.py: runs it over forkserve's protocol classes.

A conftest in the test file's own directory overrides the ``http_protocol_cls`` fixture of
uvicorn's tests/conftest.py; the test file itself is uvicorn's, unmodified. Each id is one token
(no '-') so the runner can find it in a parametrized test id.
"""

import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from forkserve.http.choice import http_protocol_class
from forkserve.http.fast import FastHttpToolsProtocol


@pytest.fixture(
    params=[
        pytest.param(HttpToolsProtocol, id="httptools"),
        pytest.param(FastHttpToolsProtocol, id="fastcore"),
        pytest.param(http_protocol_class("fast"), id="fastworker"),
        pytest.param(http_protocol_class("httptools"), id="httptoolsworker"),
    ]
)
def http_protocol_cls(request):  # type: ignore[no-untyped-def]
    return request.param
