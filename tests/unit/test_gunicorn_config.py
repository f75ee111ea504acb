"""The gunicorn mapping table, row by row, and reading a gunicorn.conf.py: no processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forkserve.api import build_config
from forkserve.config import gunicorn
from forkserve.config.gunicorn import RULES, Hook, Ignore, Refuse, Set
from forkserve.errors import ConfigError

UW = "uvicorn.workers.UvicornWorker"

# (gunicorn setting, a value, what it means for forkserve). Every row of RULES appears here.
CASES: list[tuple[str, object, object]] = [
    ("bind", "0.0.0.0:80", Set("bind", ["0.0.0.0:80"])),
    ("bind", ["unix:/s", "[::1]:81"], Set("bind", ["unix:/s", "[::1]:81"])),
    ("backlog", 64, Set("backlog", 64)),
    ("workers", 4, Set("workers", 4)),
    ("worker_class", UW, Ignore),
    ("worker_class", "uvicorn_worker.UvicornWorker", Ignore),
    ("worker_class", "uvicorn.workers.UvicornH11Worker", Set("http", "h11")),
    ("worker_class", "asgi", Ignore),
    ("worker_class", "sync", Refuse),
    ("worker_class", "gevent", Refuse),
    ("worker_class", "gthread", Refuse),
    ("threads", 4, Set("threads", 4)),
    ("worker_connections", 1000, Ignore),
    ("max_requests", 1000, Set("max_requests", 1000)),
    ("max_requests_jitter", 50, Set("max_requests_jitter", 50)),
    ("timeout", 30, Set("timeout", 30)),
    ("graceful_timeout", 10, Set("graceful_timeout", 10)),
    ("keepalive", 2, Set("keep_alive", 2)),
    ("limit_request_line", 4094, Set("limit_request_line", 4094)),
    ("limit_request_fields", 50, Set("max_header_count", 50)),
    ("limit_request_fields", 0, Set("max_header_count", 32768)),
    ("limit_request_field_size", 8190, Ignore),
    ("reload", True, Set("reload", True)),
    ("reload_engine", "auto", Ignore),
    ("reload_extra_files", ["a.html"], Ignore),
    ("spew", True, Refuse),
    ("spew", False, Ignore),
    ("check_config", True, Ignore),
    ("print_config", True, Ignore),
    ("preload_app", True, Ignore),
    ("sendfile", False, Ignore),
    ("reuse_port", True, Ignore),
    ("chdir", "/srv/app", Set("chdir", "/srv/app")),
    ("daemon", True, Refuse),
    ("daemon", False, Ignore),
    ("raw_env", ["A=1"], Ignore),
    ("pidfile", "/run/app.pid", Set("pid", "/run/app.pid")),
    ("worker_tmp_dir", "/dev/shm", Ignore),
    ("user", "www-data", Set("user", "www-data")),
    ("group", "www-data", Set("group", "www-data")),
    ("umask", 0o22, Set("umask", 0o22)),
    ("initgroups", True, Ignore),
    ("tmp_upload_dir", "/tmp", Ignore),
    ("secure_scheme_headers", {"X-FORWARDED-PROTO": "https"}, Ignore),
    ("forwarded_allow_ips", "10.0.0.1", Set("forwarded_allow_ips", "10.0.0.1")),
    ("pythonpath", "src", Set("app_dir", "src")),
    ("pythonpath", "src,lib", Refuse),
    ("paste", "development.ini", Refuse),
    ("proc_name", "shop", Ignore),
    ("default_proc_name", "app:app", Ignore),
    ("wsgi_app", "app:app", Set("app", "app:app")),
    ("accesslog", "-", Set("access_logfile", "-")),
    ("errorlog", "/var/log/err.log", Set("error_logfile", "/var/log/err.log")),
    ("access_log_format", "%(h)s %(r)s", Set("access_logformat", "%(h)s %(r)s")),
    ("capture_output", True, Set("capture_output", True)),
    ("logconfig", "logging.ini", Set("log_config", "logging.ini")),
    ("logconfig_json", "logging.json", Set("log_config", "logging.json")),
    ("loglevel", "DEBUG", Set("log_level", "debug")),
    ("disable_redirect_access_to_syslog", True, Ignore),
    ("logger_class", "my.Logger", Refuse),
    ("logconfig_dict", {"version": 1}, Refuse),
    ("logconfig_dict", {}, Ignore),
    ("syslog", True, Refuse),
    ("syslog_addr", "udp://localhost:514", Ignore),
    ("syslog_prefix", "app", Ignore),
    ("syslog_facility", "user", Ignore),
    ("enable_stdio_inheritance", True, Ignore),
    ("statsd_host", "localhost:8125", Refuse),
    ("statsd_host", None, Ignore),
    ("statsd_prefix", "app", Ignore),
    ("dogstatsd_tags", "env:prod", Ignore),
    ("enable_backlog_metric", True, Ignore),
    ("certfile", "c.pem", Set("certfile", "c.pem")),
    ("keyfile", "k.pem", Set("keyfile", "k.pem")),
    ("ca_certs", "ca.pem", Set("ca_certs", "ca.pem")),
    ("ciphers", "ECDHE+AESGCM", Set("ciphers", "ECDHE+AESGCM")),
    ("cert_reqs", 2, Set("cert_reqs", "required")),
    ("cert_reqs", "optional", Set("cert_reqs", "optional")),
    ("ssl_version", 2, Ignore),
    ("suppress_ragged_eofs", True, Ignore),
    ("do_handshake_on_connect", False, Ignore),
    ("ssl_context", lambda config, default: None, Refuse),
    ("proxy_protocol", "off", Ignore),
    ("proxy_protocol", False, Ignore),
    ("proxy_protocol", True, Set("proxy_protocol", True)),
    ("proxy_protocol", "v2", Set("proxy_protocol", True)),
    ("proxy_protocol", "auto", Set("proxy_protocol", True)),
    ("proxy_protocol", "v3", Refuse),
    ("proxy_allow_ips", "127.0.0.1", Ignore),
    ("protocol", "http", Ignore),
    ("protocol", "uwsgi", Refuse),
    ("uwsgi_allow_ips", "127.0.0.1", Ignore),
    ("http_protocols", "h1,h2", Ignore),
    ("http2_cleartext", "off", Ignore),
    ("http2_max_concurrent_streams", 100, Ignore),
    ("http2_initial_window_size", 65535, Ignore),
    ("http2_max_frame_size", 16384, Ignore),
    ("http2_max_header_list_size", 65536, Ignore),
    ("permit_obsolete_folding", False, Ignore),
    ("strip_header_spaces", False, Ignore),
    ("permit_unconventional_http_method", False, Ignore),
    ("permit_unconventional_http_version", False, Ignore),
    ("casefold_http_method", False, Ignore),
    ("forwarder_headers", "SCRIPT_NAME", Ignore),
    ("header_map", "drop", Ignore),
    ("raw_paste_global_conf", [], Ignore),
    ("asgi_loop", "uvloop", Set("loop", "uvloop")),
    ("asgi_lifespan", "on", Set("lifespan", "on")),
    ("asgi_disconnect_grace_period", 3, Ignore),
    ("websocket_max_message_size", 1024, Set("ws_max_size", 1024)),
    ("http_parser", "auto", Ignore),
    ("root_path", "/api", Set("root_path", "/api")),
    ("dirty_apps", ["x:y"], Refuse),
    ("dirty_workers", 0, Ignore),
    ("dirty_timeout", 300, Ignore),
    ("dirty_threads", 1, Ignore),
    ("dirty_graceful_timeout", 30, Ignore),
    ("control_socket", "/run/g.ctl", Ignore),
    ("control_socket_mode", 0o600, Ignore),
    ("control_socket_disable", True, Ignore),
    *[(hook, print, Hook) for hook in (
        "on_starting", "on_reload", "when_ready", "pre_fork", "post_fork", "post_worker_init",
        "worker_exit", "child_exit", "nworkers_changed", "on_exit", "worker_int", "worker_abort",
        "pre_exec", "pre_request", "post_request", "on_dirty_starting", "dirty_post_fork",
        "dirty_worker_init", "dirty_worker_exit",
    )],
]  # fmt: skip

CALLED_HOOKS = {
    "on_starting", "on_reload", "when_ready", "pre_fork", "post_fork", "post_worker_init",
    "worker_exit", "child_exit", "nworkers_changed", "on_exit", "worker_int", "worker_abort",
}  # fmt: skip


def test_every_row_of_the_table_has_a_case():
    assert {name for name, _, _ in CASES} == set(RULES)


@pytest.mark.parametrize(("name", "value", "expected"), CASES, ids=[f"{n}={v!r}"[:50] for n, v, _ in CASES])
def test_each_gunicorn_setting_means_what_the_table_says(name, value, expected):
    outcome = RULES[name](value)
    if isinstance(expected, type):
        assert isinstance(outcome, expected)
    else:
        assert outcome == expected
    if isinstance(outcome, Refuse):
        assert outcome.alternative  # names what to do instead
    if isinstance(outcome, Hook):
        assert (name in CALLED_HOOKS) == (not outcome.why_not)


def in_file(name: str, value: object) -> str:
    return f"gunicorn.conf.py: {name} = {value!r}"


def test_translate_gives_values_notes_hooks_and_errors():
    def post_fork(server, worker):
        pass

    names = {
        "workers": 3,
        "preload_app": True,
        "post_fork": post_fork,
        "raw_env": ["A=1", "B=x=y"],
        "helper": 1,
    }
    result = gunicorn.translate(names, in_file)
    assert result.values == {"workers": 3, "post_fork": "forkserve.common.gunicorn_hooks:post_fork"}
    assert result.environ == {"A": "1", "B": "x=y"}
    assert result.hooks == {"post_fork": post_fork}
    assert result.notes == [
        "gunicorn.conf.py: preload_app = True is not needed: the zygote always imports the app once, "
        "before it forks the workers"
    ]
    with pytest.raises(
        ConfigError, match=r"^gunicorn.conf.py: daemon = True: forkserve stays in the foreground"
    ):
        gunicorn.translate({"daemon": True}, in_file)
    with pytest.raises(ConfigError, match=r"on_exit = 'x': a hook must be a function"):
        gunicorn.translate({"on_exit": "x"}, in_file)
    with pytest.raises(ConfigError, match=r"raw_env = 'NOEQUALS': 'NOEQUALS' is not KEY=VALUE"):
        gunicorn.translate({"raw_env": "NOEQUALS"}, in_file)


@pytest.mark.parametrize(
    ("conf", "flags", "kwargs", "trusted", "origin"),
    [
        # With proxy_protocol on, gunicorn's list is forkserve's one list, from where it was given.
        ("proxy_protocol = True\nproxy_allow_ips = '10.0.0.0/8'\n", {}, {}, "10.0.0.0/8", "FILE"),
        ("proxy_protocol = True\n", {"proxy_allow_ips": "10.0.0.0/8"}, {}, "10.0.0.0/8", "gunicorn flag"),
        ("", {"proxy_allow_ips": "10.0.0.0/8"}, {"proxy_protocol": True}, "10.0.0.0/8", "gunicorn flag"),
        # The flag beats the file, as flags do.
        ("proxy_protocol = 'v1'\nproxy_allow_ips = '10.0.0.0/8'\n", {"proxy_allow_ips": "10.1.0.0/16"}, {},
         "10.1.0.0/16", "gunicorn flag"),
        # Off, gunicorn never reads it: it must not widen who is trusted for X-Forwarded-For.
        ("proxy_allow_ips = '*'\n", {}, {}, "127.0.0.1", "default"),
        ("", {"proxy_allow_ips": "*"}, {}, "127.0.0.1", "default"),
        # Both lists given, the same: fine.
        ("proxy_protocol = True\nproxy_allow_ips = '10.0.0.0/8'\nforwarded_allow_ips = '10.0.0.0/8'\n",
         {}, {}, "10.0.0.0/8", "FILE"),
        ("proxy_protocol = True\nproxy_allow_ips = '10.0.0.0/8'\n", {}, {"forwarded_allow_ips": "10.0.0.0/8"},
         "10.0.0.0/8", "kwargs"),
    ],
)  # fmt: skip
def test_proxy_allow_ips_is_forwarded_allow_ips_only_with_proxy_protocol(
    tmp_path, conf, flags, kwargs, trusted, origin
):
    path = tmp_path / "gunicorn.conf.py"
    path.write_text(conf)
    config, origins = build_config({"config": str(path), **kwargs}, environ={}, gunicorn_flags=flags)
    assert config.forwarded_allow_ips == trusted
    assert origins["forwarded_allow_ips"] == (str(path) if origin == "FILE" else origin)


@pytest.mark.parametrize(
    ("conf", "flags", "kwargs", "message"),
    [
        ("proxy_protocol = True\nproxy_allow_ips = '10.0.0.0/8'\nforwarded_allow_ips = '127.0.0.1'\n", {}, {},
         r"^{path}: proxy_allow_ips = '10.0.0.0/8': forkserve trusts one list .* \({path}\) differs"),
        ("", {"proxy_allow_ips": "10.0.0.0/8"}, {"proxy_protocol": 1, "forwarded_allow_ips": "10.2.0.0/16"},
         r"^--proxy-allow-from '10.0.0.0/8': forkserve trusts one list .*\(kwargs\) differs; give both"),
        ("proxy_protocol = True\n", {"proxy_allow_ips": "not-an-address"}, {},
         r"^--proxy-allow-from 'not-an-address': "),
    ],
)  # fmt: skip
def test_two_different_lists_of_trusted_proxies_are_one_line(tmp_path, conf, flags, kwargs, message):
    path = tmp_path / "gunicorn.conf.py"
    path.write_text(conf)
    with pytest.raises(ConfigError, match=message.format(path=str(path).replace(".", r"\."))):
        build_config({"config": str(path), **kwargs}, environ={}, gunicorn_flags=flags)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workers = (\n", r"^{path}, line 1: '\(' was never closed; fix the config file$"),
        ("import os\nworkers = 1 / 0\n", r"^{path}, line 2: ZeroDivisionError: division by zero; fix the"),
        ("raise SystemExit(4)\n", r"^{path}, line 1: SystemExit: 4; fix the config file$"),
        ("workers = 'many'\n", r"^{path}: workers = 'many': expected a number of workers"),
    ],
)  # fmt: skip
def test_a_broken_config_file_is_one_line_naming_file_and_line(tmp_path, text, message):
    path = tmp_path / f"conf{abs(hash(text))}.py"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.format(path=str(path).replace(".", r"\."))):
        build_config({"config": str(path)}, environ={})


def test_precedence_defaults_file_env_flags_and_where_each_came_from(tmp_path):
    path = tmp_path / "g.conf.py"
    path.write_text("workers = 3\ntimeout = 7\nkeepalive = 9\nbind = '127.0.0.1:9001'\n")
    config, origins = build_config(
        {"config": str(path), "timeout": "8"}, environ={"FORKSERVE_KEEP_ALIVE": "11"}, cli=True
    )
    assert (config.workers, config.timeout, config.keep_alive) == (3, 8.0, 11)
    assert origins["workers"] == origins["bind"] == str(path)
    assert origins["keep_alive"] == "env FORKSERVE_KEEP_ALIVE"
    assert config.config == os.path.abspath(path)


def test_gunicorn_conf_py_in_the_working_directory_is_found(tmp_path: Path):
    (tmp_path / "gunicorn.conf.py").write_text("workers = 5\n")
    notes: list[str] = []
    config, origins = build_config({}, environ={}, cli=True, cwd=tmp_path, notes=notes)
    assert config.workers == 5 and config.config == str(tmp_path / "gunicorn.conf.py")
    assert origins["config"] == "found in the working directory"
    assert notes[0].startswith(f"reading {tmp_path / 'gunicorn.conf.py'} (found in the working directory")
    # A library caller names its file itself: nothing is discovered.
    assert build_config({}, environ={}, cwd=tmp_path)[0].workers == 1


def test_gunicorn_flags_rank_as_flags_and_forkserve_flags_win():
    config, _ = build_config(
        {"max_header_count": "70"}, environ={}, cli=True,
        gunicorn_flags={"limit_request_fields": "40", "worker_class": UW, "preload_app": True},
    )  # fmt: skip
    assert config.max_header_count == 70
    config, _ = build_config({}, environ={}, cli=True, gunicorn_flags={"limit_request_fields": "40"})
    assert config.max_header_count == 40
