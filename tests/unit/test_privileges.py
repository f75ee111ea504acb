"""--user/--group/--umask values, read as tables against this machine's passwd and group databases."""

from __future__ import annotations

import grp
import os
import pwd
from typing import Any

import pytest

from forkserve.common.privileges import Identity, parse_umask, resolve_identity
from forkserve.config.sources import Source, resolve
from forkserve.errors import ConfigError

NOBODY = pwd.getpwnam("nobody")
DAEMON = pwd.getpwnam("daemon")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("022", 0o022),
        ("0022", 0o022),
        ("0o077", 0o077),
        ("777", 0o777),
        ("0", 0),
        (0o027, 0o027),
        (None, None),
        ("", None),
    ],
)
def test_parse_umask(raw: Any, expected: int | None) -> None:
    assert parse_umask(raw) == expected


@pytest.mark.parametrize("raw", ["8", "0o1000", "rwx", "-1", True, 0o1000])
def test_parse_umask_rejects(raw: Any) -> None:
    with pytest.raises(ValueError):
        parse_umask(raw)


@pytest.mark.parametrize(
    ("user", "group", "expected"),
    [
        (None, None, None),
        ("nobody", None, Identity(NOBODY.pw_uid, NOBODY.pw_gid, "nobody")),
        (str(NOBODY.pw_uid), None, Identity(NOBODY.pw_uid, NOBODY.pw_gid, "nobody")),
        ("nobody", "daemon", Identity(NOBODY.pw_uid, grp.getgrnam("daemon").gr_gid, "nobody")),
        ("daemon", str(NOBODY.pw_gid), Identity(DAEMON.pw_uid, NOBODY.pw_gid, "daemon")),
        # A uid with no passwd entry (common in containers): no name, so no supplementary groups.
        ("54321", None, Identity(54321, os.getgid(), None)),
        (None, "daemon", Identity(os.getuid(), grp.getgrnam("daemon").gr_gid, None)),
    ],
)
def test_resolve_identity(user: str | None, group: str | None, expected: Identity | None) -> None:
    assert resolve_identity(user, group) == expected


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"user": "no-such-user-x"}, "user= 'no-such-user-x': no such user 'no-such-user-x'"),
        ({"group": "no-such-group-x"}, "group= 'no-such-group-x': no such group 'no-such-group-x'"),
        ({"umask": "999"}, "umask= '999': expected an octal mask"),
    ],
)
def test_bad_values_are_config_errors(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
        resolve([Source("kwargs", values)])


def test_settings_from_the_environment() -> None:
    config, _ = resolve(
        [Source("env", {"FORKSERVE_USER": "nobody", "FORKSERVE_GROUP": "daemon", "FORKSERVE_UMASK": "027"})]
    )
    assert (config.user, config.group, config.umask) == ("nobody", "daemon", 0o027)
    assert config.describe("umask") == "0027"
