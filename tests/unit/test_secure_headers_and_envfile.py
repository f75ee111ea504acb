"""The secure-header set after overrides, and .env files read into plain dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from forkserve.config.envfile import apply_env, read_env_file
from forkserve.errors import ConfigError
from forkserve.http.secure_headers import header_lists

DEFAULT_HTTP = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


@pytest.mark.parametrize(
    ("defaults", "overrides", "http", "https"),
    [
        (True, [], DEFAULT_HTTP, [*DEFAULT_HTTP, HSTS]),
        (False, [], [], []),
        # Replace (any case), remove (empty value), add.
        (
            True,
            ["x-frame-options=DENY", "Referrer-Policy=", "Permissions-Policy=camera=()"],
            [
                DEFAULT_HTTP[0],
                (b"x-frame-options", b"DENY"),
                DEFAULT_HTTP[3],
                (b"permissions-policy", b"camera=()"),
            ],
            [
                DEFAULT_HTTP[0],
                (b"x-frame-options", b"DENY"),
                DEFAULT_HTTP[3],
                HSTS,
                (b"permissions-policy", b"camera=()"),
            ],
        ),
        # HSTS can be tuned, and stays https-only.
        (
            True,
            ["Strict-Transport-Security=max-age=60"],
            DEFAULT_HTTP,
            [*DEFAULT_HTTP, (b"strict-transport-security", b"max-age=60")],
        ),
        (True, ["Strict-Transport-Security="], DEFAULT_HTTP, DEFAULT_HTTP),
        # Without --secure-headers, --secure-header alone adds just its own headers.
        (False, ["X-Robots-Tag=noindex"], [(b"x-robots-tag", b"noindex")], [(b"x-robots-tag", b"noindex")]),
        # The last override of a name wins.
        (False, ["X-A=1", "x-a=2"], [(b"x-a", b"2")], [(b"x-a", b"2")]),
    ],
)
def test_header_lists(defaults: bool, overrides: list[str], http: list[Any], https: list[Any]) -> None:
    assert header_lists(defaults, overrides) == (http, https)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nB=two words\n", {"A": "1", "B": "two words"}),
        ("# comment\nexport A='quoted'\n\nB=\"x\\ny\"\n", {"A": "quoted", "B": "x\ny"}),
        # Interpolation from earlier lines; a bare key without '=' has no value and is skipped.
        ("HOST=db\nURL=postgres://${HOST}/app\nFLAG\n", {"HOST": "db", "URL": "postgres://db/app"}),
        ("EMPTY=\n", {"EMPTY": ""}),
    ],
)
def test_read_env_file(tmp_path: Path, text: str, expected: dict[str, str]) -> None:
    path = tmp_path / ".env"
    path.write_text(text)
    assert read_env_file(str(path)) == expected


def test_read_env_file_errors_name_the_flag_and_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^--env-file {tmp_path}/missing: no such file; "):
        read_env_file(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=rf"^--env-file {tmp_path}: is a directory; "):
        read_env_file(str(tmp_path))


def test_apply_env_keeps_what_the_process_already_has() -> None:
    environ = {"A": "process"}
    apply_env({"A": "file", "B": "file"}, environ)
    assert environ == {"A": "process", "B": "file"}
