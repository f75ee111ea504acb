"""--access-logformat: gunicorn's atoms, one table; uvicorn's knobs' defaults; the reload filter."""

from __future__ import annotations

import base64
import inspect
import time

import pytest
import uvicorn

from forkserve.common.accessformat import GUNICORN_DEFAULT, AccessFacts, format_problem, render
from forkserve.config.settings import DEFAULTS
from forkserve.http.secure_headers import header_lists, server_override
from forkserve.services.devreload import ReloadFilter

FACTS = AccessFacts(
    client="10.0.0.7",
    method="POST",
    path="/a b",
    query="x=1",
    http_version="1.1",
    status=201,
    length=1234,
    request_headers={
        "referer": "https://ref/",
        "user-agent": "curl/8",
        "x-request-id": "r-1",
        "authorization": "Basic " + base64.b64encode(b"alice:secret").decode(),
    },
    response_headers={"content-type": "text/plain"},
    started=time.mktime((2026, 12, 7, 13, 55, 36, 0, 0, -1)),
    seconds=1.2345678,
    pid=4242,
    environ={"REMOTE_PORT": "5555"},
)


@pytest.mark.parametrize(
    ("atom", "rendered"),
    [
        ("%(h)s", "10.0.0.7"),
        ("%(l)s", "-"),
        ("%(u)s", "alice"),
        ("%(r)s", "POST /a b?x=1 HTTP/1.1"),
        ("%(m)s", "POST"),
        ("%(U)s", "/a b"),
        ("%(q)s", "x=1"),
        ("%(H)s", "HTTP/1.1"),
        ("%(s)s", "201"),
        ("%(B)s", "1234"),
        ("%(b)s", "1234"),
        ("%(f)s", "https://ref/"),
        ("%(a)s", "curl/8"),
        ("%(T)s", "1"),
        ("%(M)s", "1234"),
        ("%(D)s", "1234567"),
        ("%(L)s", "1.234567"),
        ("%(p)s", "<4242>"),
        ("%({x-request-id}i)s", "r-1"),
        ("%({X-Request-ID}i)s", "r-1"),
        ("%({content-type}o)s", "text/plain"),
        ("%({remote_port}e)s", "5555"),
        ("%({missing}i)s", "-"),
        ("%(nosuchatom)s", "-"),
    ],
)
def test_each_atom(atom: str, rendered: str) -> None:
    assert render(atom, FACTS) == rendered


def test_t_is_the_common_log_format_time() -> None:
    assert render("%(t)s", FACTS).startswith("[07/Dec/2026:13:55:36 ")


def test_gunicorn_default_line() -> None:
    line = render(GUNICORN_DEFAULT, FACTS)
    assert line.startswith("10.0.0.7 - alice [07/Dec/2026:13:55:36 ")
    assert line.endswith('] "POST /a b?x=1 HTTP/1.1" 201 1234 "https://ref/" "curl/8"')


@pytest.mark.parametrize(
    ("headers", "length", "user", "b", "agent"),
    [
        ({}, None, "-", "-", "-"),  # no response sent, no headers
        ({"authorization": "Bearer xyz"}, 0, "-", "0", "-"),
        ({"authorization": "Basic !!!notbase64"}, 0, "-", "0", "-"),
        # A client's bytes cannot forge a field or a line.
        ({"user-agent": 'a" "b\\c\x01\x7f'}, 0, "-", "0", 'a\\" \\"b\\\\c\\x01\\x7f'),
    ],
)
def test_missing_and_hostile_values(headers, length, user, b, agent) -> None:
    facts = AccessFacts(**{**FACTS.__dict__, "request_headers": headers, "length": length})
    assert render("%(u)s|%(b)s|%(a)s", facts) == f"{user}|{b}|{agent}"


@pytest.mark.parametrize(
    ("fmt", "problem"),
    [
        (GUNICORN_DEFAULT, None),
        ('%(h)s "%(r)s" %(s)s %(M)sms', None),
        ("plain text", "no atom in it"),
        ("%(s)d", "not a valid format"),
        ("%(h)s %", "not a valid format"),
        ("%(h)s %(", "not a valid format"),
    ],
)
def test_format_problem(fmt: str, problem: str | None) -> None:
    found = format_problem(fmt)
    assert (found is None) if problem is None else (found is not None and found.startswith(problem))


def test_uvicorn_knobs_default_to_uvicorns_own() -> None:
    defaults = inspect.signature(uvicorn.Config.__init__).parameters
    for name in (
        "ws_max_size", "ws_max_queue", "ws_ping_interval", "ws_ping_timeout", "ws_per_message_deflate",
        "server_header", "date_header", "reload_delay",
    ):  # fmt: skip
        assert DEFAULTS[name] == defaults[name].default, name


@pytest.mark.parametrize(
    ("overrides", "server", "names"),
    [
        ((), None, []),
        (("Server=forkserve",), "forkserve", []),
        (("server=",), "", []),
        (("X-Frame-Options=DENY", "Server=a", "SERVER=b"), "b", [b"x-frame-options"]),
    ],
)
def test_server_header_goes_to_uvicorn_never_the_middleware(overrides, server, names) -> None:
    assert server_override(overrides) == server
    http, https = header_lists(False, overrides)
    assert [name for name, _ in http] == names and [name for name, _ in https] == names


@pytest.mark.parametrize(
    ("includes", "excludes", "path", "watched"),
    [
        ((), (), "/srv/app/main.py", True),
        ((), (), "/srv/app/main.pyc", False),
        ((), (), "/srv/app/.git/hooks/x.py", False),
        ((), (), "/srv/app/.venv/lib/site.py", False),
        ((), (), "/srv/app/.#main.py", False),
        ((), (), "/srv/app/page.html", False),
        (("*.html",), (), "/srv/app/templates/page.html", True),
        (("*.html",), ("skip_*",), "/srv/app/skip_me.html", False),
        ((), ("tests",), "/srv/app/tests/test_x.py", False),
        # An explicit include beats the default exclude naming the same pattern.
        ((".*",), (), "/srv/app/.env", True),
        # Only what is below the watched directory counts: a hidden parent of the root does not.
        ((), (), "/home/u/.cache/app/main.py", True),
    ],
)
def test_reload_filter(includes, excludes, path, watched) -> None:
    root = "/home/u/.cache/app" if "/.cache/" in path else "/srv/app"
    assert ReloadFilter([root], includes, excludes)(None, path) is watched
