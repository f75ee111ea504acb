# ruff: noqa: E501  (tables of messages read best one case a line)
"""Config files and the merge of every source: defaults < file < environment < command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from forkserve.api import build_config
from forkserve.cli.main import effective_settings
from forkserve.config.file import discovered_source, file_source
from forkserve.config.parsers import parse_header_overrides, parse_size, parse_static, parse_tls_version
from forkserve.config.settings import SETTINGS
from forkserve.config.sources import Source, resolve
from forkserve.errors import ConfigError

WORKERS_EXPECTED = "expected a number of workers of at least 1, or 'auto'"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Precedence: one table, every pair of sources.


@pytest.mark.parametrize(
    ("file", "environ", "flags", "value", "origin"),
    [
        (None, {}, {}, 1, "default"),
        ("workers = 2", {}, {}, 2, "forkserve.toml"),
        ("workers = 2", {"FORKSERVE_WORKERS": "3"}, {}, 3, "env FORKSERVE_WORKERS"),
        ("workers = 2", {"FORKSERVE_WORKERS": "3"}, {"workers": "4"}, 4, "flag --workers"),
        ("workers = 2", {}, {"workers": "4"}, 4, "flag --workers"),
        (None, {"FORKSERVE_WORKERS": "3"}, {"workers": "4"}, 4, "flag --workers"),
        (None, {"WEB_CONCURRENCY": "5"}, {}, 5, "env WEB_CONCURRENCY"),
        ('workers = "auto"', {"WEB_CONCURRENCY": "5"}, {}, 5, "env WEB_CONCURRENCY"),
        ('workers = "auto"', {}, {"workers": None}, "auto", "forkserve.toml"),
        # An environment variable of another setting leaves the file's value in force.
        ("workers = 2", {"FORKSERVE_BACKLOG": "9"}, {}, 2, "forkserve.toml"),
    ],
)
def test_precedence_default_file_env_flag(
    tmp_path: Path, file: str | None, environ: dict[str, str], flags: dict[str, Any], value: Any, origin: str
) -> None:
    if file is not None:
        write(tmp_path, "forkserve.toml", file)
        flags = {**flags, "config": str(tmp_path / "forkserve.toml")}
    config, origins = build_config(flags, environ=environ, cli=True, cwd=tmp_path)
    assert config.workers == value
    assert origins["workers"] == origin.replace("forkserve.toml", str(tmp_path / "forkserve.toml"))


@pytest.mark.parametrize(
    ("pyproject", "given", "cli", "expected"),
    [
        # The command line reads ./pyproject.toml's [tool.forkserve] when no -c is given ...
        ("[tool.forkserve]\nbacklog = 64\n", {}, True, 64),
        # ... but not when -c names another file, and never for a library call.
        ("[tool.forkserve]\nbacklog = 64\n", {"config": "other.toml"}, True, 32),
        ("[tool.forkserve]\nbacklog = 64\n", {}, False, 2048),
        # A pyproject.toml without the table is not an error: most projects have one.
        ("[project]\nname = 'x'\n", {}, True, 2048),
        (None, {}, True, 2048),
    ],
)
def test_pyproject_discovery(
    tmp_path: Path, pyproject: str | None, given: dict[str, Any], cli: bool, expected: int
) -> None:
    if pyproject is not None:
        write(tmp_path, "pyproject.toml", pyproject)
    write(tmp_path, "other.toml", "backlog = 32\n")
    if "config" in given:
        given = {"config": str(tmp_path / given["config"])}
    config, _origins = build_config(given, environ={}, cli=cli, cwd=tmp_path)
    assert config.backlog == expected


def test_config_file_named_by_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "prod.toml", "backlog = 16\n")
    config, origins = build_config({}, environ={"FORKSERVE_CONFIG": str(path)}, cli=True, cwd=tmp_path)
    assert config.backlog == 16
    assert origins["backlog"] == str(path)


def test_library_config_keyword(tmp_path: Path) -> None:
    path = write(tmp_path, "forkserve.toml", "graceful_timeout = 3\n")
    config, _origins = build_config({"config": path}, environ={})
    assert config.graceful_timeout == 3.0


@pytest.mark.parametrize(
    ("text", "name", "value"),
    [
        ("graceful-timeout = 7", "graceful_timeout", 7.0),
        ("graceful_timeout = 7", "graceful_timeout", 7.0),
        ('bind = ["127.0.0.1:9000", "unix:/tmp/a.sock"]', "bind", None),
        ("access-log = true", "access_log", True),
        ('limit-max-request-size = "10M"', "limit_max_request_size", 10 * 1024 * 1024),
        ("limit-max-request-size = 1024", "limit_max_request_size", 1024),
        ('static = ["/assets=./public"]', "static", ("/assets=./public",)),
        (
            '[secure-header]\nX-Frame-Options = "DENY"\nReferrer-Policy = ""',
            "secure_header",
            ("X-Frame-Options=DENY", "Referrer-Policy="),
        ),
    ],
)
def test_file_keys_take_either_spelling_and_toml_types(
    tmp_path: Path, text: str, name: str, value: Any
) -> None:
    config, origins = resolve([file_source(str(write(tmp_path, "f.toml", text)))])
    if value is not None:
        assert getattr(config, name) == value
    assert origins[name] == str(tmp_path / "f.toml")


# ---------------------------------------------------------------------------------------------
# A bad value in each source: exit code 2, the source, key, value and expectation in one line.


@pytest.mark.parametrize(
    ("file", "environ", "flags", "message"),
    [
        ('workers = "many"', {}, {}, f"{{file}}: workers = 'many': {WORKERS_EXPECTED}"),
        ("workers = 0", {}, {}, f"{{file}}: workers = 0: {WORKERS_EXPECTED}"),
        ("graceful-timeout = -1", {}, {}, "{file}: graceful-timeout = -1: expected a number of seconds of at least 0"),
        (None, {"FORKSERVE_WORKERS": "many"}, {}, f"FORKSERVE_WORKERS 'many': {WORKERS_EXPECTED}"),
        (None, {}, {"workers": "many"}, f"--workers 'many': {WORKERS_EXPECTED}"),
        # The file is read first: its error is the one reported even when a flag would override it.
        ('workers = "many"', {}, {"workers": "2"}, f"{{file}}: workers = 'many': {WORKERS_EXPECTED}"),
        ("wokers = 2", {}, {}, "{file}: unknown setting 'wokers' (did you mean 'workers'?); see docs/configuration.md for the list"),
        ("graceful-timout = 2", {}, {}, "{file}: unknown setting 'graceful-timout' (did you mean 'graceful-timeout'?); see docs/configuration.md for the list"),
        ('config = "x.toml"', {}, {}, "{file}: 'config' cannot be set inside a config file; pass -c on the command line"),
        ("workers = = 2", {}, {}, "{file}: not valid TOML: Invalid value (at line 1, column 11)"),
        ('limit-max-request-size = "lots"', {}, {}, "{file}: limit-max-request-size = 'lots': expected a size in bytes, e.g. 1048576, 512k or 10M"),
        (None, {"FORKSERVE_SSL_VERSION": "SSLv3"}, {}, "FORKSERVE_SSL_VERSION 'SSLv3': expected the lowest TLS version to accept: TLSv1.2 or TLSv1.3"),
        (None, {}, {"static": ("assets=./public",)}, "--static 'assets=./public': 'assets=./public' is not /PREFIX=DIR; expected e.g. /static=./static"),
    ],
)  # fmt: skip
def test_bad_value_in_each_source(
    tmp_path: Path, file: str | None, environ: dict[str, str], flags: dict[str, Any], message: str
) -> None:
    if file is not None:
        path = write(tmp_path, "forkserve.toml", file)
        flags = {**flags, "config": str(path)}
    with pytest.raises(ConfigError) as info:
        build_config(flags, environ=environ, cli=True, cwd=tmp_path)
    assert str(info.value) == message.format(file=tmp_path / "forkserve.toml")
    assert info.value.exit_code == 2


def test_bad_value_in_pyproject_names_the_table(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", '[tool.forkserve]\nworkers = "many"\n')
    with pytest.raises(ConfigError) as info:
        build_config({}, environ={}, cli=True, cwd=tmp_path)
    assert str(info.value) == f"pyproject.toml [tool.forkserve]: workers = 'many': {WORKERS_EXPECTED}"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.toml", None, "-c {path}: no such file; pass the path of a TOML config file"),
        ("pyproject.toml", "[project]\n", "{path}: has no [tool.forkserve] table; add one, or pass a forkserve.toml"),
        ("latin1.toml", b"x = '\xe9'", "{path}: not UTF-8 text; a TOML file must be UTF-8"),
    ],
)  # fmt: skip
def test_unreadable_config_file(tmp_path: Path, name: str, content: str | bytes | None, message: str) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        file_source(str(path))
    assert str(info.value) == message.format(path=path)


def test_discovered_source_is_none_without_a_table(tmp_path: Path) -> None:
    assert discovered_source(tmp_path) is None
    write(tmp_path, "pyproject.toml", "[tool.other]\nx = 1\n")
    assert discovered_source(tmp_path) is None


# ---------------------------------------------------------------------------------------------
# --print-config


def test_print_config_lists_every_setting_with_its_origin(tmp_path: Path) -> None:
    path = write(tmp_path, "forkserve.toml", "workers = 3\nkeyfile-password = 'sesame'\n")
    config, origins = build_config(
        {"config": str(path), "timeout": "7"}, environ={"FORKSERVE_BACKLOG": "99"}, cli=True, cwd=tmp_path
    )
    lines = effective_settings(config, origins).splitlines()
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in lines[1:]}
    assert set(rows) == {spec.name.replace("_", "-") for spec in SETTINGS}
    assert rows["workers"] == ["3", str(path)]
    assert rows["backlog"] == ["99", "env FORKSERVE_BACKLOG"]
    assert rows["timeout"] == ["7.0", "flag --timeout"]
    assert rows["bind"] == ["127.0.0.1:8000", "default"]
    assert rows["config"] == [str(path), "flag --config"]
    # A secret is never printed.
    assert rows["keyfile-password"] == ["(hidden)", str(path)]
    assert "sesame" not in "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Parsers of the configuration and security settings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0", 0),
        (0, 0),
        ("1024", 1024),
        ("512k", 512 * 1024),
        ("10M", 10 * 1024**2),
        ("1 GB", 1024**3),
        ("7b", 7),
    ],
)
def test_parse_size_accepts(raw: Any, expected: int) -> None:
    assert parse_size(raw) == expected


@pytest.mark.parametrize("raw", ["-1", "lots", "10Q", "1.5M", True, ""])
def test_parse_size_rejects(raw: Any) -> None:
    with pytest.raises(ValueError, match=r"^expected a size in bytes, e.g. 1048576, 512k or 10M$"):
        parse_size(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (("X-Frame-Options=DENY",), ("X-Frame-Options=DENY",)),
        (("Referrer-Policy=",), ("Referrer-Policy=",)),
        # A value may hold '=', ';', ',' and spaces (a CSP does); only the first '=' splits.
        (("Content-Security-Policy=default-src 'self'; img-src *",), ("Content-Security-Policy=default-src 'self'; img-src *",)),
        # One environment variable holds several, one per line.
        ("X-Frame-Options=DENY\nReferrer-Policy=same-origin\n", ("X-Frame-Options=DENY", "Referrer-Policy=same-origin")),
        ({"X-Frame-Options": "DENY"}, ("X-Frame-Options=DENY",)),
    ],
)  # fmt: skip
def test_parse_header_overrides_accepts(raw: Any, expected: tuple[str, ...]) -> None:
    assert parse_header_overrides(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (("X-Frame-Options",), "'X-Frame-Options' is not NAME=VALUE; expected e.g. X-Frame-Options=DENY"),
        (("Bad Name=x",), "'Bad Name=x' is not NAME=VALUE; expected e.g. X-Frame-Options=DENY"),
        (("X-A=a\x00b",), "the value of X-A holds a control character"),
        ([3], "expected a list of strings"),
    ],
)
def test_parse_header_overrides_rejects(raw: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_header_overrides(raw)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (("/static=./static",), ("/static=./static",)),
        (("/static/=public",), ("/static=public",)),
        ("/a=x,/b=y", ("/a=x", "/b=y")),
    ],
)
def test_parse_static_accepts(raw: Any, expected: tuple[str, ...]) -> None:
    assert parse_static(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (("/=public",), "'/=public' is not /PREFIX=DIR; expected e.g. /static=./static"),
        (("/static",), "'/static' is not /PREFIX=DIR; expected e.g. /static=./static"),
        (("/static=",), "'/static=' is not /PREFIX=DIR; expected e.g. /static=./static"),
        (("/a=x", "/a/=y"), "/a is mounted twice; give each prefix once"),
    ],
)
def test_parse_static_rejects(raw: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_static(raw)
    assert str(info.value) == message


@pytest.mark.parametrize(("raw", "expected"), [("tlsv1.3", "TLSv1.3"), (" TLSv1.2 ", "TLSv1.2")])
def test_parse_tls_version(raw: str, expected: str) -> None:
    assert parse_tls_version(raw) == expected


def test_source_kinds_are_merged_in_the_order_given() -> None:
    # resolve() itself is order-only: build_config decides the order (file, env, caller).
    config, origins = resolve(
        [Source("file", {"backlog": 1}, label="f.toml"), Source("env", {"FORKSERVE_BACKLOG": "2"})]
    )
    assert (config.backlog, origins["backlog"]) == (2, "env FORKSERVE_BACKLOG")
