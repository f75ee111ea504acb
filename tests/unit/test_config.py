"""The settings table: each parser from tables of raw values, then resolve()'s merge and its errors."""

from __future__ import annotations

from typing import Any

import pytest

from forkserve.config.parsers import (
    BindSpec,
    parse_bind_one,
    parse_binds,
    parse_bool,
    parse_drain_period,
    parse_int,
    parse_ip_list,
    parse_optional_str,
    parse_positive_seconds,
    parse_seconds,
    parse_workers,
)
from forkserve.config.settings import DEFAULTS, SETTINGS, SETTINGS_BY_NAME, Config, Setting
from forkserve.config.sources import Source, env_source, resolve
from forkserve.errors import ConfigError

BIND_FORMS = "expected HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"
WORKERS_EXPECTED = "expected a number of workers of at least 1, or 'auto'"


def tcp(host: str, port: int) -> BindSpec:
    return BindSpec("tcp", host=host, port=port)


# ---------------------------------------------------------------------------------------------
# Parsers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("4", 4),
        (4, 4),
        (" 8 ", 8),
        ("1", 1),
        ("auto", "auto"),
        ("AUTO", "auto"),
        (" Auto ", "auto"),
    ],
)
def test_parse_workers_accepts(raw: Any, expected: Any) -> None:
    assert parse_workers(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "0",
        0,
        "-1",
        "many",
        "",
        "4.5",
        None,
        # bool is an int subclass: True must not sneak through as 1 worker.
        True,
        False,
        # A float is not a whole number; truncating 2.5 to 2 would hide the caller's mistake.
        2.5,
    ],
)
def test_parse_workers_rejects(raw: Any) -> None:
    with pytest.raises(ValueError, match=r"^expected a number of workers of at least 1, or 'auto'$"):
        parse_workers(raw)


DRAIN_PERIOD_EXPECTED = "expected 'auto' or a number of seconds of at least 0, e.g. 20"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("auto", "auto"),
        (" AUTO ", "auto"),
        ("20", 20.0),
        ("2.5", 2.5),
        (0, 0.0),  # pacing off: a number keeps its meaning
    ],
)
def test_parse_drain_period_accepts(raw: Any, expected: Any) -> None:
    assert parse_drain_period(raw) == expected


@pytest.mark.parametrize("raw", ["-1", "soon", "", "nan", True, None, "auto:100"])
def test_parse_drain_period_rejects(raw: Any) -> None:
    with pytest.raises(ValueError, match=rf"^{DRAIN_PERIOD_EXPECTED}$"):
        parse_drain_period(raw)


def test_drain_period_is_auto_unless_given_and_a_bad_one_is_one_line() -> None:
    assert resolve([])[0].ws_drain_period == "auto"
    assert resolve([Source("env", {"FORKSERVE_WS_DRAIN_PERIOD": "20"})])[0].ws_drain_period == 20.0
    with pytest.raises(ConfigError) as info:
        resolve([Source("cli", {"ws_drain_period": "5s"})])
    assert str(info.value) == f"--ws-drain-period '5s': {DRAIN_PERIOD_EXPECTED}"
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("minimum", "raw", "message"),
    [
        (1, "0", "expected a whole number of at least 1"),
        (0, "-1", "expected a whole number of at least 0"),
        (0, "five", "expected a whole number"),
        (0, True, "expected a whole number"),
        # int(2.9) is 2: a fraction must be refused, not silently truncated.
        (0, 2.9, "expected a whole number"),
    ],
)
def test_parse_int_rejects(minimum: int, raw: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_int(minimum)(raw)
    assert str(info.value) == message


@pytest.mark.parametrize(("minimum", "raw", "expected"), [(0, "0", 0), (1, "2048", 2048), (0, 5, 5)])
def test_parse_int_accepts(minimum: int, raw: Any, expected: int) -> None:
    assert parse_int(minimum)(raw) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8000", tcp("127.0.0.1", 8000)),
        ("[::1]:9000", tcp("::1", 9000)),
        ("[::1]", tcp("::1", 8000)),
        ("unix:/tmp/x.sock", BindSpec("unix", path="/tmp/x.sock")),
        ("fd://3", BindSpec("fd", fd=3)),
        # No port: the default port.
        ("0.0.0.0", tcp("0.0.0.0", 8000)),
        ("example.com", tcp("example.com", 8000)),
        # No host: every interface.
        (":8080", tcp("0.0.0.0", 8080)),
        ("localhost:0", tcp("localhost", 0)),
        ("1.2.3.4:65535", tcp("1.2.3.4", 65535)),
        ("  127.0.0.1:80  ", tcp("127.0.0.1", 80)),
    ],
)
def test_parse_bind_one_accepts(text: str, expected: BindSpec) -> None:
    assert parse_bind_one(text) == expected


@pytest.mark.parametrize(
    ("text", "specific"),
    [
        ("nonsense:x", "port 'x' is not a number from 0 to 65535"),
        ("[nothex]:80", "'nothex' is not an IPv6 address"),
        ("1.2.3.4:70000", "port '70000' is not a number from 0 to 65535"),
        ("1.2.3.4:-1", "port '-1' is not a number from 0 to 65535"),
        ("1.2.3.4:", "port '' is not a number from 0 to 65535"),
        ("[::1]:x", "port 'x' is not a number from 0 to 65535"),
        ("unix:", "no path after 'unix:'"),
        ("fd://", "'' is not a file descriptor number"),
        ("fd://x", "'x' is not a file descriptor number"),
        ("a:b:c", ""),
        ("", ""),
        # str.isdigit() is true for a superscript two, which int() then refuses: the message must
        # still say what a bind address looks like, not leak int()'s "invalid literal".
        pytest.param("1.2.3.4:\u00b2", "is not a number from 0 to 65535", id="superscript-port"),
        pytest.param("fd://\u00b2", "is not a file descriptor number", id="superscript-fd"),
    ],
)
def test_parse_bind_one_rejects_and_says_what_it_expected(text: str, specific: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_bind_one(text)
    message = str(info.value)
    assert specific in message
    assert message.endswith(BIND_FORMS)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("127.0.0.1:8000", "127.0.0.1:8000"),
        ("[::1]:9000", "[::1]:9000"),
        (":8080", "0.0.0.0:8080"),
        ("[::1]", "[::1]:8000"),
        ("unix:/tmp/x.sock", "unix:/tmp/x.sock"),
        ("fd://3", "fd://3"),
    ],
)
def test_bind_spec_str_is_a_canonical_bind_address(text: str, shown: str) -> None:
    spec = parse_bind_one(text)
    assert str(spec) == shown
    # The canonical form parses back to the same spec (it is what the logs and duplicates use).
    assert parse_bind_one(shown) == spec


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1:80", (tcp("127.0.0.1", 80),)),
        # An environment variable separates addresses with commas or spaces.
        ("127.0.0.1:80,unix:/tmp/s", (tcp("127.0.0.1", 80), BindSpec("unix", path="/tmp/s"))),
        ("127.0.0.1:80  [::1]:81", (tcp("127.0.0.1", 80), tcp("::1", 81))),
        (" 127.0.0.1:80 , fd://4 ", (tcp("127.0.0.1", 80), BindSpec("fd", fd=4))),
        (["127.0.0.1:80", "fd://4"], (tcp("127.0.0.1", 80), BindSpec("fd", fd=4))),
        ((tcp("::", 1), "unix:/a"), (tcp("::", 1), BindSpec("unix", path="/a"))),
        (tcp("10.0.0.1", 5), (tcp("10.0.0.1", 5),)),
    ],
)
def test_parse_binds_accepts(raw: Any, expected: tuple[BindSpec, ...]) -> None:
    assert parse_binds(raw) == expected


@pytest.mark.parametrize("raw", ["", " , ", [], ()])
def test_parse_binds_rejects_no_address(raw: Any) -> None:
    with pytest.raises(ValueError, match=r"^no address given; "):
        parse_binds(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        (" On ", True),
        (True, True),
        (1, True),
        ("0", False),
        ("false", False),
        ("no", False),
        ("off", False),
        ("OFF", False),
        # FORKSERVE_ACCESS_LOG= (set but empty) means off.
        ("", False),
        (False, False),
        (0, False),
    ],
)
def test_parse_bool_accepts(raw: Any, expected: bool) -> None:
    assert parse_bool(raw) is expected


@pytest.mark.parametrize("raw", ["maybe", "tru", "2", "y", "enabled", 2])
def test_parse_bool_rejects(raw: Any) -> None:
    with pytest.raises(ValueError, match=r"^expected true or false \(1/0, yes/no, on/off\)$"):
        parse_bool(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("30", 30.0), ("2.5", 2.5), (" 1 ", 1.0), ("0", 0.0), (0, 0.0), (7, 7.0), (0.25, 0.25), ("1e1", 10.0)],
)
def test_parse_seconds_accepts(raw: Any, expected: float) -> None:
    value = parse_seconds(raw)
    assert value == expected
    assert isinstance(value, float)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("soon", "expected a number of seconds, e.g. 30 or 2.5"),
        ("", "expected a number of seconds, e.g. 30 or 2.5"),
        (None, "expected a number of seconds, e.g. 30 or 2.5"),
        ("-1", "expected a number of seconds of at least 0"),
        (-0.5, "expected a number of seconds of at least 0"),
        # NaN compares false with everything; it would make every deadline check false.
        ("nan", "expected a number of seconds of at least 0"),
        (True, "expected a number of seconds"),
    ],
)
def test_parse_seconds_rejects(raw: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_seconds(raw)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("raw", "ok"), [("0.1", True), ("5", True), ("0", False), (0.0, False), ("-1", False)]
)
def test_parse_positive_seconds(raw: Any, ok: bool) -> None:
    if ok:
        assert parse_positive_seconds(raw) == float(raw)
    else:
        with pytest.raises(ValueError, match="seconds"):
            parse_positive_seconds(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("*", "*"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("10.0.0.0/8, 127.0.0.1", "10.0.0.0/8,127.0.0.1"),
        # A host-bits-set network is accepted as written (strict=False); uvicorn normalises it.
        ("10.0.0.1/8", "10.0.0.1/8"),
        ("unix:/run/proxy.sock", "unix:/run/proxy.sock"),
        (["10.0.0.1", "::1,192.168.0.0/16"], "10.0.0.1,::1,192.168.0.0/16"),
        ("127.0.0.1,,", "127.0.0.1"),
    ],
)
def test_parse_ip_list_accepts_and_normalises_to_comma_text(raw: Any, expected: str) -> None:
    assert parse_ip_list(raw) == expected


@pytest.mark.parametrize(
    ("raw", "bad"), [("10.0.0.300", "10.0.0.300"), ("127.0.0.1,example.com", "example.com"), ("*x", "*x")]
)
def test_parse_ip_list_rejects_naming_the_bad_entry(raw: str, bad: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_ip_list(raw)
    assert str(info.value) == (
        f"{bad!r} is not an IP address or network; expected e.g. 10.0.0.0/8,127.0.0.1 or *"
    )


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("", None), ("/run/x.pid", "/run/x.pid")])
def test_parse_optional_str(raw: str | None, expected: str | None) -> None:
    assert parse_optional_str(raw) == expected


def test_parse_optional_str_rejects_a_number() -> None:
    with pytest.raises(ValueError, match=r"^expected a string$"):
        parse_optional_str(3)


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [("lifespan", "ON", "on"), ("log_level", " Debug ", "debug"), ("loop", "uvloop", "uvloop")],
)
def test_choice_settings_accept_any_case(name: str, raw: str, expected: str) -> None:
    assert SETTINGS_BY_NAME[name].parse(raw) == expected


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("lifespan", "sometimes", "expected one of auto, on, off"),
        ("http", "h2", "expected one of auto, fast, httptools, h11, zttp"),
        ("log_level", "verbose", "expected one of critical, error, warning, info, debug, trace"),
    ],
)
def test_choice_settings_reject_listing_the_choices(name: str, raw: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        SETTINGS_BY_NAME[name].parse(raw)
    assert str(info.value) == message


# ---------------------------------------------------------------------------------------------
# The table itself


@pytest.mark.parametrize("spec", SETTINGS, ids=lambda spec: spec.name)
def test_every_setting_is_documented_and_reachable(spec: Setting) -> None:
    assert spec.help.strip()
    assert any(flag.startswith("--") for flag in spec.flags)
    # Errors from the command line name spec.flags[-1]; it must be the long flag users recognise.
    assert spec.flags[-1].startswith("--")
    # The first variable wins when several are set, so the forkserve-specific one must be first.
    assert spec.env
    assert spec.env[0].startswith("FORKSERVE_")


@pytest.mark.parametrize("spec", SETTINGS, ids=lambda spec: spec.name)
def test_every_default_passes_its_own_parser(spec: Setting) -> None:
    default = DEFAULTS[spec.name]
    assert spec.parse(default) == default


def test_bind_default_is_a_tuple_of_bind_specs() -> None:
    default = DEFAULTS["bind"]
    assert isinstance(default, tuple)
    assert default
    assert all(isinstance(spec, BindSpec) for spec in default)
    assert Config().describe("bind") == "127.0.0.1:8000"


def test_settings_table_lists_every_config_field_once() -> None:
    names = [spec.name for spec in SETTINGS]
    assert len(names) == len(set(names))
    assert set(names) == set(DEFAULTS)


def test_no_two_settings_share_a_flag_or_variable() -> None:
    flags = [flag for spec in SETTINGS for flag in spec.flags]
    envs = [key for spec in SETTINGS for key in spec.env]
    assert len(flags) == len(set(flags))
    assert len(envs) == len(set(envs))


# ---------------------------------------------------------------------------------------------
# env_source


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, {}),
        ({"PATH": "/usr/bin", "FORKSERVE_NOT_A_SETTING": "1"}, {}),
        ({"FORKSERVE_WORKERS": "3"}, {"FORKSERVE_WORKERS": "3"}),
        ({"WEB_CONCURRENCY": "5"}, {"WEB_CONCURRENCY": "5"}),
        # Only the first variable of a setting that is set is taken.
        ({"WEB_CONCURRENCY": "5", "FORKSERVE_WORKERS": "3"}, {"FORKSERVE_WORKERS": "3"}),
        ({"FORWARDED_ALLOW_IPS": "*"}, {"FORWARDED_ALLOW_IPS": "*"}),
        (
            {"FORKSERVE_TIMEOUT": "9", "FORKSERVE_ACCESS_LOG": ""},
            {"FORKSERVE_TIMEOUT": "9", "FORKSERVE_ACCESS_LOG": ""},
        ),
    ],
)
def test_env_source_picks_known_variables(environ: dict[str, str], expected: dict[str, str]) -> None:
    source = env_source(environ)
    assert source.kind == "env"
    assert dict(source.values) == expected


# ---------------------------------------------------------------------------------------------
# resolve: precedence


@pytest.mark.parametrize(
    ("environ", "kind", "given", "name", "value", "origin"),
    [
        ({}, "cli", {}, "workers", 1, "default"),
        ({"FORKSERVE_WORKERS": "3"}, "cli", {}, "workers", 3, "env FORKSERVE_WORKERS"),
        ({"WEB_CONCURRENCY": "5"}, "cli", {}, "workers", 5, "env WEB_CONCURRENCY"),
        (
            {"WEB_CONCURRENCY": "5", "FORKSERVE_WORKERS": "3"},
            "cli",
            {},
            "workers",
            3,
            "env FORKSERVE_WORKERS",
        ),
        ({"FORKSERVE_WORKERS": "3"}, "cli", {"workers": "7"}, "workers", 7, "flag --workers"),
        ({"FORKSERVE_WORKERS": "3"}, "kwargs", {"workers": 7}, "workers", 7, "kwargs"),
        ({"FORKSERVE_WORKERS": "3"}, "kwargs", {"workers": "auto"}, "workers", "auto", "kwargs"),
        # None from the command line (an option not given) leaves the environment in force.
        ({"FORKSERVE_WORKERS": "3"}, "cli", {"workers": None}, "workers", 3, "env FORKSERVE_WORKERS"),
        ({"FORKSERVE_WORKERS": "3"}, "kwargs", {"workers": None}, "workers", 3, "env FORKSERVE_WORKERS"),
        ({}, "cli", {"workers": None}, "workers", 1, "default"),
        # --no-access-log (False) is given, unlike None: it beats the environment.
        ({"FORKSERVE_ACCESS_LOG": "yes"}, "cli", {}, "access_log", True, "env FORKSERVE_ACCESS_LOG"),
        (
            {"FORKSERVE_ACCESS_LOG": "yes"},
            "cli",
            {"access_log": False},
            "access_log",
            False,
            "flag --access-log",
        ),
        ({"FORKSERVE_TIMEOUT": "2.5"}, "cli", {}, "timeout", 2.5, "env FORKSERVE_TIMEOUT"),
        ({"FORKSERVE_TIMEOUT": "2.5"}, "kwargs", {"timeout": 0}, "timeout", 0.0, "kwargs"),
        ({"FORWARDED_ALLOW_IPS": "*"}, "cli", {}, "forwarded_allow_ips", "*", "env FORWARDED_ALLOW_IPS"),
        ({"FORKSERVE_PID": ""}, "cli", {}, "pid", None, "env FORKSERVE_PID"),
    ],
)
def test_precedence_default_then_env_then_caller(
    environ: dict[str, str], kind: Any, given: dict[str, Any], name: str, value: Any, origin: str
) -> None:
    config, origins = resolve([env_source(environ), Source(kind, given)])
    assert getattr(config, name) == value
    assert origins[name] == origin


@pytest.mark.parametrize(
    ("environ", "given", "expected", "origin"),
    [
        ({}, {}, (tcp("127.0.0.1", 8000),), "default"),
        # click gives () for a repeatable option that was not used: the default stays.
        ({}, {"bind": ()}, (tcp("127.0.0.1", 8000),), "default"),
        (
            {},
            {"bind": ("0.0.0.0:80", "unix:/tmp/x.sock")},
            (tcp("0.0.0.0", 80), BindSpec("unix", path="/tmp/x.sock")),
            "flag --bind",
        ),
        (
            {"FORKSERVE_BIND": "[::1]:81,fd://3"},
            {},
            (tcp("::1", 81), BindSpec("fd", fd=3)),
            "env FORKSERVE_BIND",
        ),
        (
            {"FORKSERVE_BIND": "[::1]:81,fd://3"},
            {"bind": ("fd://5",)},
            (BindSpec("fd", fd=5),),
            "flag --bind",
        ),
        ({"FORKSERVE_BIND": "[::1]:81"}, {"bind": ()}, (tcp("::1", 81),), "env FORKSERVE_BIND"),
    ],
)
def test_repeated_bind_from_the_command_line(
    environ: dict[str, str], given: dict[str, Any], expected: tuple[BindSpec, ...], origin: str
) -> None:
    config, origins = resolve([env_source(environ), Source("cli", given)])
    assert config.bind == expected
    assert origins["bind"] == origin


def test_origins_report_every_setting() -> None:
    _config, origins = resolve(
        [env_source({"FORKSERVE_TIMEOUT": "10"}), Source("cli", {"workers": "2", "pid": None})]
    )
    assert set(origins) == {spec.name for spec in SETTINGS}
    assert origins["timeout"] == "env FORKSERVE_TIMEOUT"
    assert origins["workers"] == "flag --workers"
    # Not given (None) is not an origin.
    assert origins["pid"] == "default"
    assert {name for name, origin in origins.items() if origin != "default"} == {"timeout", "workers"}


def test_a_labelled_source_is_its_own_origin() -> None:
    _config, origins = resolve([Source("file", {"backlog": 64}, label="forkserve.toml")])
    assert origins["backlog"] == "forkserve.toml"


def test_later_sources_win() -> None:
    config, origins = resolve(
        [
            Source("kwargs", {"backlog": 10}),
            Source("cli", {"backlog": "20"}),
            Source("kwargs", {"backlog": 30}),
        ]
    )
    assert config.backlog == 30
    assert origins["backlog"] == "kwargs"


def test_unknown_environment_variables_are_ignored() -> None:
    config, _origins = resolve([Source("env", {"FORKSERVE_WORKRS": "9", "HOME": "/root"})])
    assert config == Config()


# ---------------------------------------------------------------------------------------------
# resolve: errors


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (Source("cli", {"workers": "many"}), f"--workers 'many': {WORKERS_EXPECTED}"),
        (Source("env", {"FORKSERVE_WORKERS": "many"}), f"FORKSERVE_WORKERS 'many': {WORKERS_EXPECTED}"),
        (Source("env", {"WEB_CONCURRENCY": "many"}), f"WEB_CONCURRENCY 'many': {WORKERS_EXPECTED}"),
        (Source("kwargs", {"workers": "many"}), f"workers= 'many': {WORKERS_EXPECTED}"),
        (Source("cli", {"workers": "0"}), f"--workers '0': {WORKERS_EXPECTED}"),
        (
            Source("file", {"workers": "many"}, label="forkserve.toml"),
            f"forkserve.toml: workers = 'many': {WORKERS_EXPECTED}",
        ),
        (
            Source("cli", {"timeout": "soon"}),
            "--timeout 'soon': expected a number of seconds, e.g. 30 or 2.5",
        ),
        (
            Source("env", {"FORKSERVE_ACCESS_LOG": "maybe"}),
            "FORKSERVE_ACCESS_LOG 'maybe': expected true or false (1/0, yes/no, on/off)",
        ),
        (
            Source("cli", {"backlog": "0"}),
            "--backlog '0': expected a whole number of at least 1",
        ),
        (
            Source("kwargs", {"lifespan": "sometimes"}),
            "lifespan= 'sometimes': expected one of auto, on, off",
        ),
        (
            Source("kwargs", {"forwarded_allow_ips": "10.0.0.300"}),
            "forwarded_allow_ips= '10.0.0.300': '10.0.0.300' is not an IP address or network; "
            "expected e.g. 10.0.0.0/8,127.0.0.1 or *",
        ),
        (
            Source("env", {"FORWARDED_ALLOW_IPS": "nope"}),
            "FORWARDED_ALLOW_IPS 'nope': 'nope' is not an IP address or network; "
            "expected e.g. 10.0.0.0/8,127.0.0.1 or *",
        ),
        # A repeated flag's error quotes the one bad address, not the whole tuple.
        (
            Source("cli", {"bind": ("127.0.0.1:8000", "nonsense:x")}),
            f"--bind 'nonsense:x': port 'x' is not a number from 0 to 65535; {BIND_FORMS}",
        ),
        (
            Source("env", {"FORKSERVE_BIND": "127.0.0.1:8000,unix:"}),
            f"FORKSERVE_BIND '127.0.0.1:8000,unix:': no path after 'unix:'; {BIND_FORMS}",
        ),
        (
            Source("env", {"FORKSERVE_BIND": ""}),
            f"FORKSERVE_BIND '': no address given; {BIND_FORMS}",
        ),
        (
            Source("kwargs", {"bind": ["[nothex]:80"]}),
            f"bind= '[nothex]:80': 'nothex' is not an IPv6 address; {BIND_FORMS}",
        ),
    ],
)
def test_bad_value_names_its_origin_and_the_expectation(source: Source, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve([source])
    assert str(info.value) == message
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("given", "message"),
    [
        # A non-string value is shown as Python wrote it: True, not the string 'True' (which the
        # parser would also refuse, but for a different reason the user cannot see).
        pytest.param({"workers": True}, f"workers= True: {WORKERS_EXPECTED}", id="bool"),
        pytest.param({"workers": 0}, f"workers= 0: {WORKERS_EXPECTED}", id="int"),
        pytest.param({"timeout": -1}, "timeout= -1: expected a number of seconds of at least 0", id="neg"),
    ],
)
def test_bad_keyword_value_that_is_not_a_string_is_shown_unquoted(
    given: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve([Source("kwargs", given)])
    assert str(info.value) == message


@pytest.mark.parametrize(
    "bind",
    [
        [],
        (),
    ],
    ids=["empty-list", "empty-tuple"],
)
def test_keyword_bind_that_is_empty_is_a_config_error(bind: Any) -> None:
    # forkserve.run(app, bind=[]) is a user's mistake: a one-line ConfigError, never a bare ValueError.
    with pytest.raises(ConfigError) as info:
        resolve([Source("kwargs", {"bind": bind})])
    assert str(info.value).startswith("bind= ")
    assert info.value.exit_code == 2


def test_keyword_bind_may_be_a_one_shot_generator() -> None:
    # It is read twice (once to find a bad item, once to parse): resolve must materialise it first.
    config, _ = resolve([Source("kwargs", {"bind": (a for a in ["127.0.0.1:8001", "unix:/tmp/x.sock"])})])
    assert [str(spec) for spec in config.bind] == ["127.0.0.1:8001", "unix:/tmp/x.sock"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            Source("kwargs", {"worker": 4}),
            "unknown setting 'worker' (did you mean 'workers'?); see docs/configuration.md for the list",
        ),
        (
            Source("cli", {"graceful_timout": "5"}),
            "unknown setting 'graceful_timout' (did you mean 'graceful_timeout'?); "
            "see docs/configuration.md for the list",
        ),
        (
            Source("kwargs", {"zzzzzz": 1}),
            "unknown setting 'zzzzzz'; see docs/configuration.md for the list",
        ),
        (
            Source("file", {"keepalive": 3}, label="forkserve.toml"),
            "forkserve.toml: unknown setting 'keepalive' (did you mean 'keep_alive'?); "
            "see docs/configuration.md for the list",
        ),
    ],
)
def test_unknown_setting_is_a_config_error_with_a_suggestion(source: Source, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve([source])
    assert str(info.value) == message
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("binds", "message"),
    [
        (
            ("127.0.0.1:8000", "127.0.0.1:8000"),
            "--bind 127.0.0.1:8000 is given twice; give each address once",
        ),
        # Two spellings of the same address are the same address.
        ((":8080", "0.0.0.0:8080"), "--bind 0.0.0.0:8080 is given twice; give each address once"),
        (("unix:/tmp/a", "unix:/tmp/a"), "--bind unix:/tmp/a is given twice; give each address once"),
        (("fd://3", "fd://3"), "--bind names the same fd:// twice; give each inherited socket once"),
    ],
)
def test_duplicate_bind_address_is_a_config_error(binds: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve([Source("cli", {"bind": binds})])
    assert str(info.value) == message
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    "binds",
    [("127.0.0.1:8000", "127.0.0.1:8001"), ("127.0.0.1:8000", "[::1]:8000"), ("fd://3", "fd://4")],
)
def test_distinct_bind_addresses_are_fine(binds: tuple[str, ...]) -> None:
    config, _origins = resolve([Source("cli", {"bind": binds})])
    assert [str(spec) for spec in config.bind] == list(binds)
