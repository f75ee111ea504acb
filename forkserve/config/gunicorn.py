"""gunicorn's configuration as it is written: a ``gunicorn.conf.py`` and gunicorn's flags.

Theory of operation. A gunicorn config file is Python: gunicorn runs it and reads its module-level
names; a name that is one of gunicorn's settings is a setting, anything else (an import, a helper)
is ignored. We do the same, then pass every setting through ``RULES``, one row per gunicorn
setting, plain data saying what the name means here:

* ``Set``: it has a forkserve meaning; the value (converted where the units or spelling differ)
  becomes a forkserve setting, so it is validated by the settings table's own parser and named
  in ``--print-config`` with the file it came from;
* ``Ignore``: forkserve needs no such setting (the zygote always preloads, heartbeats live in
  shared memory...): accepted, with one info line saying why;
* ``Refuse``: forkserve cannot honour it (a ``sync`` worker for an ASGI server, ``daemon``): one
  clear error naming the alternative, exit 2;
* hooks (``on_starting``, ``post_fork``...) are functions; ``forkserve.common.gunicorn_hooks``
  calls them at gunicorn's moments, in gunicorn's processes. A worker hook is reached from a
  forkserve hook setting that names the adapter, so it survives the zygote's exec: the zygote
  runs this file again to find the function, as a gunicorn worker finds it in its forked memory.

A row's decision depends on the value only (``sync`` is refused, ``uvicorn.workers.UvicornWorker``
is ignored), so the table is tested row by row without a process. gunicorn's command-line flags
that forkserve lacks (``-k``, ``--preload``, ``--limit-request-fields``...) go through the same rows.

The alternative rejected: importing gunicorn to read its settings. gunicorn may not be installed
(that is the point of moving), and its Config validates for its own workers, not ours.
"""

from __future__ import annotations

import logging
import os
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forkserve.config.settings import SETTINGS_BY_NAME
from forkserve.config.sources import Source
from forkserve.errors import ConfigError

logger = logging.getLogger("forkserve")

CONFIG_NAME = "gunicorn.conf.py"


@dataclass(frozen=True)
class Set:
    setting: str  # the forkserve setting's name
    value: Any


@dataclass(frozen=True)
class Ignore:
    why: str


@dataclass(frozen=True)
class Refuse:
    alternative: str


@dataclass(frozen=True)
class Hook:
    """A gunicorn server hook; ``called`` is False for those forkserve accepts but never calls."""

    why_not: str = ""


Outcome = Set | Ignore | Refuse | Hook
Rule = Callable[[Any], Outcome]


def to(setting: str, convert: Callable[[Any], Any] = lambda value: value) -> Rule:
    return lambda value: Set(setting, convert(value))


def ignored(why: str) -> Rule:
    return lambda value: Ignore(why)


def refused_when_on(alternative: str, why_off: str = "") -> Rule:
    """Refuse a truthy value; a falsy one (gunicorn's default) asks for nothing."""
    return lambda value: Refuse(alternative) if value else Ignore(why_off)


UVICORN_WORKERS = frozenset(
    {
        "uvicorn.workers.UvicornWorker",
        "uvicorn_worker.UvicornWorker",
        "uvicorn.workers.UvicornH11Worker",
        "uvicorn_worker.UvicornH11Worker",
        "asgi",  # gunicorn's own ASGI worker (gunicorn 24+)
        "gunicorn.workers.gasgi.ASGIWorker",
    }
)


def _worker_class(value: Any) -> Outcome:
    name = str(value).strip()
    if name in UVICORN_WORKERS:
        if "H11" in name:
            return Set("http", "h11")
        return Ignore("every forkserve worker serves ASGI on uvicorn's protocol stack")
    return Refuse(
        f"forkserve's workers run ASGI apps on asyncio, not a {name!r} worker; remove worker_class "
        "(for a WSGI app: --interface wsgi with --threads N)"
    )


def _unlimited(limit: int) -> Callable[[Any], Any]:
    """gunicorn's 0 means no limit; forkserve's limits are a number, so 0 becomes the largest."""
    return lambda value: limit if str(value).strip() in ("0", "") else value


def _cert_reqs(value: Any) -> Any:
    # gunicorn takes ssl.CERT_NONE/OPTIONAL/REQUIRED (0, 1, 2); forkserve takes the words.
    words = {0: "none", 1: "optional", 2: "required"}
    return words.get(int(value), value) if str(value).strip().isdigit() else value


def _proxy_protocol(value: Any) -> Outcome:
    # gunicorn 23 takes a boolean; later versions name a version (v1, v2) or "auto". forkserve
    # reads both versions whenever the flag is on.
    text = str(value).strip().lower()
    if value is False or text in ("off", "false", "none", "0", ""):
        return Ignore("")
    if value is True or text in ("on", "true", "1", "v1", "v2", "auto"):
        return Set("proxy_protocol", True)
    return Refuse("proxy_protocol takes off, v1, v2 or auto (forkserve reads v1 and v2 alike)")


def _pythonpath(value: Any) -> Outcome:
    dirs = [part.strip() for part in str(value).split(",") if part.strip()]
    if len(dirs) <= 1:
        return Set("app_dir", dirs[0] if dirs else ".")
    return Refuse("forkserve puts one --app-dir on sys.path; set PYTHONPATH for the others")


def _loglevel(value: Any) -> Any:
    return str(value).strip().lower()


def _raw_env(value: Any) -> Outcome:
    # Handled by translate() (it sets the environment); the row is here so the table lists it.
    return Ignore("")


_HTTP_RULES_FIXED = "forkserve's HTTP parser rules are fixed (see docs/http.md)"

RULES: dict[str, Rule] = {
    # -- Sockets, processes and timeouts
    "bind": to("bind", lambda v: [v] if isinstance(v, str) else list(v)),
    "backlog": to("backlog"),
    "workers": to("workers"),
    "worker_class": _worker_class,
    "threads": to("threads"),
    "worker_connections": ignored(
        "UvicornWorker does not use it either; forkserve's --limit-concurrency answers 503 past N"
    ),
    "max_requests": to("max_requests"),
    "max_requests_jitter": to("max_requests_jitter"),
    "timeout": to("timeout"),
    "graceful_timeout": to("graceful_timeout"),
    "keepalive": to("keep_alive"),
    # -- HTTP limits
    "limit_request_line": to("limit_request_line"),
    "limit_request_fields": to("max_header_count", _unlimited(32768)),
    "limit_request_field_size": ignored(
        "forkserve bounds the whole request head instead of each field: --max-header-size (64 KiB)"
    ),
    # -- Reload, preload and process mechanics
    "reload": to("reload"),
    "reload_engine": ignored("forkserve's --reload watches the app's directory itself"),
    "reload_extra_files": ignored("forkserve's --reload watches the .py files under --app-dir"),
    "spew": refused_when_on("trace with a debugger or py-spy; forkserve has no --spew"),
    "check_config": ignored("give --check-config on the command line"),
    "print_config": ignored("give --print-config on the command line"),
    "preload_app": ignored("the zygote always imports the app once, before it forks the workers"),
    "sendfile": ignored("ASGI apps send files through the protocol; there is no sendfile switch"),
    "reuse_port": ignored(
        "USR2 hands the sockets to the new master; for a socket per worker use --balance reuseport"
    ),
    "chdir": to("chdir"),
    "daemon": refused_when_on(
        "forkserve stays in the foreground: run it under systemd, supervisord or a container "
        "(docs/deployment.md)"
    ),
    "raw_env": _raw_env,
    "pidfile": to("pid"),
    "worker_tmp_dir": ignored("heartbeats live in shared memory, not in temporary files"),
    "user": to("user"),
    "group": to("group"),
    "umask": to("umask"),
    "initgroups": ignored("forkserve always sets --user's supplementary groups when it drops root"),
    "tmp_upload_dir": ignored("ASGI apps read request bodies themselves"),
    "secure_scheme_headers": ignored(
        "forkserve trusts X-Forwarded-Proto from --forwarded-allow-ips, as uvicorn does"
    ),
    "forwarded_allow_ips": to("forwarded_allow_ips"),
    "pythonpath": _pythonpath,
    "paste": refused_when_on("forkserve serves an ASGI app named module:attribute, not a Paste config"),
    "proc_name": ignored("process titles name the app: 'forkserve: worker N [module:app]'"),
    "default_proc_name": ignored(""),
    "wsgi_app": to("app"),
    # -- Logging: the access/error destinations and formats are the logging settings' names.
    "accesslog": to("access_logfile"),
    "errorlog": to("error_logfile"),
    "access_log_format": to("access_logformat"),
    "capture_output": to("capture_output"),
    "logconfig": to("log_config"),
    "loglevel": to("log_level", _loglevel),
    "disable_redirect_access_to_syslog": ignored("forkserve does not log to syslog"),
    "logger_class": refused_when_on("configure logging with --log-config (a dictConfig file)"),
    "logconfig_dict": refused_when_on("write the dict to a JSON file and name it in logconfig"),
    "logconfig_json": to("log_config"),
    "syslog": refused_when_on("forkserve logs to stderr or --log-file; let journald or syslog collect it"),
    "syslog_addr": ignored("forkserve does not log to syslog"),
    "syslog_prefix": ignored("forkserve does not log to syslog"),
    "syslog_facility": ignored("forkserve does not log to syslog"),
    "enable_stdio_inheritance": ignored("workers write to the master's stdout and stderr already"),
    "statsd_host": refused_when_on(
        "forkserve exports Prometheus metrics instead of statsd: --metrics-bind HOST:PORT (docs/metrics.md)"
    ),
    "statsd_prefix": ignored("forkserve exports Prometheus metrics, not statsd"),
    "dogstatsd_tags": ignored("forkserve exports Prometheus metrics, not statsd"),
    "enable_backlog_metric": ignored("forkserve's /metrics always reports the accept queue"),
    # -- TLS
    "certfile": to("certfile"),
    "keyfile": to("keyfile"),
    "ca_certs": to("ca_certs"),
    "ciphers": to("ciphers"),
    "cert_reqs": to("cert_reqs", _cert_reqs),
    "ssl_version": ignored("forkserve's --ssl-version is the lowest TLS version accepted (TLSv1.2)"),
    "suppress_ragged_eofs": ignored("uvicorn's TLS handling decides this"),
    "do_handshake_on_connect": ignored("uvicorn's TLS handling decides this"),
    "ssl_context": refused_when_on("use certfile, keyfile, ca_certs, cert_reqs and ciphers"),
    # -- Proxies and protocols
    "proxy_protocol": lambda value: _proxy_protocol(value),
    # forwarded_allow_ips when the merged settings turn proxy_protocol on: see trusted_proxies().
    "proxy_allow_ips": ignored(""),
    "protocol": lambda value: (
        Ignore("") if str(value).strip().lower() == "http" else Refuse("forkserve speaks HTTP only")
    ),
    "uwsgi_allow_ips": ignored("forkserve speaks HTTP only"),
    "http_protocols": ignored("forkserve offers HTTP/2 by ALPN under --http zttp (docs/http.md)"),
    "http2_cleartext": ignored("forkserve offers HTTP/2 by ALPN under --http zttp (docs/http.md)"),
    "http2_max_concurrent_streams": ignored("forkserve's HTTP/2 uses zttp's defaults"),
    "http2_initial_window_size": ignored("forkserve's HTTP/2 uses zttp's defaults"),
    "http2_max_frame_size": ignored("forkserve's HTTP/2 uses zttp's defaults"),
    "http2_max_header_list_size": ignored("forkserve's HTTP/2 uses zttp's defaults"),
    "permit_obsolete_folding": ignored(_HTTP_RULES_FIXED),
    "strip_header_spaces": ignored(_HTTP_RULES_FIXED),
    "permit_unconventional_http_method": ignored(_HTTP_RULES_FIXED),
    "permit_unconventional_http_version": ignored(_HTTP_RULES_FIXED),
    "casefold_http_method": ignored(_HTTP_RULES_FIXED),
    "forwarder_headers": ignored(_HTTP_RULES_FIXED),
    "header_map": ignored(_HTTP_RULES_FIXED),
    "raw_paste_global_conf": ignored("forkserve does not read Paste configs"),
    # -- gunicorn's ASGI worker's own settings
    "asgi_loop": to("loop"),
    "asgi_lifespan": to("lifespan"),
    "asgi_disconnect_grace_period": ignored("forkserve's workers drain within --graceful-timeout"),
    "websocket_max_message_size": to("ws_max_size"),
    "http_parser": ignored("choose forkserve's HTTP implementation with --http"),
    "root_path": to("root_path"),
    # -- gunicorn's dirty arbiters and control socket
    "dirty_apps": refused_when_on("run the long jobs in a task queue or a second forkserve"),
    "dirty_workers": refused_when_on("run the long jobs in a task queue or a second forkserve"),
    "dirty_timeout": ignored("forkserve has no dirty arbiters"),
    "dirty_threads": ignored("forkserve has no dirty arbiters"),
    "dirty_graceful_timeout": ignored("forkserve has no dirty arbiters"),
    "control_socket": ignored("'forkserve ctl' has its own socket: --control-socket"),
    "control_socket_mode": ignored("forkserve's control socket is always mode 0600"),
    "control_socket_disable": ignored("turn forkserve's off with --control-socket none"),
    # -- Hooks
    "on_starting": lambda value: Hook(),
    "on_reload": lambda value: Hook(),
    "when_ready": lambda value: Hook(),
    "pre_fork": lambda value: Hook(),
    "post_fork": lambda value: Hook(),
    "post_worker_init": lambda value: Hook(),
    "worker_exit": lambda value: Hook(),
    "child_exit": lambda value: Hook(),
    "nworkers_changed": lambda value: Hook(),
    "on_exit": lambda value: Hook(),
    "worker_int": lambda value: Hook(),
    "worker_abort": lambda value: Hook(),
    "pre_exec": lambda value: Hook("USR2 starts the new master without it"),
    "pre_request": lambda value: Hook("UvicornWorker never calls it either; use ASGI middleware"),
    "post_request": lambda value: Hook("UvicornWorker never calls it either; use ASGI middleware"),
    "on_dirty_starting": lambda value: Hook("forkserve has no dirty arbiters"),
    "dirty_post_fork": lambda value: Hook("forkserve has no dirty arbiters"),
    "dirty_worker_init": lambda value: Hook("forkserve has no dirty arbiters"),
    "dirty_worker_exit": lambda value: Hook("forkserve has no dirty arbiters"),
}

# The hooks forkserve calls, and the forkserve hook setting through which a worker's hook is
# reached (the zygote re-reads the file after its exec; see common/gunicorn_hooks.py).
WORKER_HOOK_SETTINGS = {
    "post_fork": "post_fork",
    "post_worker_init": "worker_ready",
    "worker_exit": "worker_exit",
    "worker_int": "worker_int",
    "worker_abort": "worker_abort",
}
ADAPTER = "forkserve.common.gunicorn_hooks"

# gunicorn's command-line flags that forkserve does not have under the same name, and the
# gunicorn setting each one sets. A flag forkserve shares (-w, -b, --timeout...) is forkserve's.
FLAGS: dict[str, tuple[tuple[str, ...], bool]] = {
    "worker_class": (("-k", "--worker-class"), False),
    "preload_app": (("--preload",), True),
    "limit_request_fields": (("--limit-request-fields",), False),
    "limit_request_field_size": (("--limit-request-field_size", "--limit-request-field-size"), False),
    "statsd_host": (("--statsd-host",), False),
    "daemon": (("-D", "--daemon"), True),
    "raw_env": (("-e", "--env"), False),
    "proc_name": (("-n", "--name"), False),
    "worker_tmp_dir": (("--worker-tmp-dir",), False),
    "worker_connections": (("--worker-connections",), False),
    "keepalive": (("--keepalive",), False),
    "pidfile": (("-p",), False),
    "proxy_allow_ips": (("--proxy-allow-from",), False),
}


@dataclass
class Translation:
    values: dict[str, Any] = field(default_factory=dict)  # forkserve setting -> raw value
    notes: list[str] = field(default_factory=list)  # one info line per accepted, unneeded setting
    environ: dict[str, str] = field(default_factory=dict)  # raw_env
    hooks: dict[str, Callable[..., Any]] = field(default_factory=dict)
    proxy_allow_ips: Any = None  # held until the merge says whether proxy_protocol is on
    proxy_allow_shown: str = ""


def _in_file(where: str) -> Callable[[str, Any], str]:
    return lambda name, value: f"{where}: {name} = {value!r}"


def _as_flag(name: str, value: Any) -> str:
    flag = FLAGS[name][0][-1]
    return flag if value is True else f"{flag} {value!r}"


def translate(names: Mapping[str, Any], shown: Callable[[str, Any], str]) -> Translation:
    """What gunicorn settings NAMES mean for forkserve; a ConfigError for one it cannot honour.

    SHOWN names a setting and its value where it was given (a file's line, or a flag), for errors.
    """
    result = Translation()
    for name, value in names.items():
        rule = RULES.get(name)
        if rule is None:
            continue
        if name == "raw_env":
            result.environ.update(_environ(value, shown(name, value)))
            continue
        if name == "proxy_allow_ips":
            result.proxy_allow_ips, result.proxy_allow_shown = value, shown(name, value)
            continue
        try:
            outcome = rule(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{shown(name, value)} is not a value gunicorn accepts") from None
        if isinstance(outcome, Refuse):
            raise ConfigError(f"{shown(name, value)}: {outcome.alternative}")
        if isinstance(outcome, Ignore):
            if outcome.why:
                result.notes.append(f"{shown(name, value)} is not needed: {outcome.why}")
        elif isinstance(outcome, Hook):
            if not callable(value):
                raise ConfigError(f"{shown(name, value)}: a hook must be a function")
            if outcome.why_not:
                result.notes.append(f"{shown(name, value)}: this hook is not called: {outcome.why_not}")
            else:
                result.hooks[name] = value
        else:
            if outcome.setting not in SETTINGS_BY_NAME:
                raise ConfigError(
                    f"{shown(name, value)} needs forkserve's {outcome.setting!r} setting, which this "
                    "version lacks; remove it, or upgrade forkserve"
                )
            result.values[outcome.setting] = outcome.value
    for hook, setting in WORKER_HOOK_SETTINGS.items():
        if hook in result.hooks:
            result.values[setting] = f"{ADAPTER}:{hook}"
    return result


def trusted_proxies(translations: list[Translation], config: Any, origins: Mapping[str, str]) -> bool:
    """gunicorn's two lists of trusted proxies are one here, --forwarded-allow-ips; True when the
    sources must be merged again because a translation now sets it.

    Decided after the merge: proxy_allow_ips means something only when proxy_protocol is on, and
    that may come from another source (the file sets one, a flag the other). Off, gunicorn never
    reads the list, so it must not widen who is trusted for X-Forwarded-For. TRANSLATIONS are in
    rank order; the highest that gives the list wins, as a flag beats the file.
    """
    given = [t for t in translations if t.proxy_allow_ips is not None]
    if not given or not config.proxy_protocol:
        return False
    translation = given[-1]
    try:
        wanted = SETTINGS_BY_NAME["forwarded_allow_ips"].parse(translation.proxy_allow_ips)
    except ValueError as exc:
        raise ConfigError(f"{translation.proxy_allow_shown}: {exc}") from None
    if origins.get("forwarded_allow_ips", "default") == "default":
        translation.values["forwarded_allow_ips"] = translation.proxy_allow_ips
        return True
    if wanted != config.forwarded_allow_ips:
        raise ConfigError(
            f"{translation.proxy_allow_shown}: forkserve trusts one list of proxies for the PROXY header "
            f"and X-Forwarded-For, and forwarded_allow_ips ({origins['forwarded_allow_ips']}) differs; "
            "give both the same value"
        )
    return False


def _environ(value: Any, shown: str) -> dict[str, str]:
    items = [value] if isinstance(value, str) else list(value or ())
    environ = {}
    for item in items:
        key, equals, text = str(item).partition("=")
        if not equals or not key.strip():
            raise ConfigError(f"{shown}: {item!r} is not KEY=VALUE")
        environ[key.strip()] = text
    return environ


# ---------------------------------------------------------------------------------------------
# Reading the file. Run as gunicorn runs it: a fresh module named after the file, __file__ set,
# executed once per interpreter: the command line's, then the master it re-executes into (for the
# master's hooks) and each zygote (for the workers').

_loaded: dict[str, dict[str, Any]] = {}


def is_python_config(path: str) -> bool:
    return path.endswith(".py")


def read(path: str) -> dict[str, Any]:
    """The module-level names of the Python config file at PATH; a ConfigError in one line."""
    key = os.path.abspath(path)
    if key in _loaded:
        return _loaded[key]
    try:
        source = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"-c {path}: no such file; pass the path of a gunicorn.conf.py") from None
    except IsADirectoryError:
        raise ConfigError(f"-c {path}: is a directory; pass the path of a gunicorn.conf.py") from None
    except OSError as exc:
        raise ConfigError(f"-c {path}: cannot read it: {exc.strerror}") from None
    module = types.ModuleType("__config__")
    module.__file__ = key
    try:
        code = compile(source, path, "exec")
        # The operator's own config file, run as gunicorn runs it.
        exec(code, module.__dict__)
    except SyntaxError as exc:
        raise ConfigError(f"{path}, line {exc.lineno}: {exc.msg}; fix the config file") from None
    except (Exception, SystemExit) as exc:
        line = _line_in(exc, key)
        raise ConfigError(f"{path}{line}: {type(exc).__name__}: {exc}; fix the config file") from None
    names = {name: value for name, value in vars(module).items() if not name.startswith("_")}
    _loaded[key] = names
    return names


def _line_in(exc: BaseException, filename: str) -> str:
    tb = exc.__traceback__
    line = 0
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f", line {line}" if line else ""


def _warn_unknown(names: Mapping[str, Any], where: str) -> None:
    """A plain value under a name gunicorn does not know is most likely a typo: say so."""
    for name, value in names.items():
        if name in RULES or callable(value) or isinstance(value, types.ModuleType):
            continue
        logger.warning("%s: %r is not a gunicorn setting; ignored", where, name)


def python_file_source(path: str) -> tuple[Source, Translation]:
    """The forkserve settings a gunicorn.conf.py gives, as one more file source, and its notes."""
    names = read(path)
    _warn_unknown(names, path)
    translation = translate(names, _in_file(path))
    return Source("file", translation.values, label=path), translation


def flag_source(values: Mapping[str, Any], where: str = "") -> tuple[Source, Translation]:
    """gunicorn's own flags (FLAGS, as given on the command line, or in WHERE) as forkserve settings."""
    given = {name: value for name, value in values.items() if value is not None and value != ()}
    if "raw_env" in given:
        given["raw_env"] = list(given["raw_env"])

    def shown(name: str, value: Any) -> str:
        return f"{where}: {_as_flag(name, value)}" if where else _as_flag(name, value)

    translation = translate(given, shown)
    return Source("cli", translation.values, label=where or "gunicorn flag", where=where), translation


def report(translation: Translation) -> None:
    for note in translation.notes:
        logger.info("%s", note)


def apply_environ(translation: Translation, environ: Any = None) -> None:
    """raw_env / -e: set in the master's environment, as gunicorn does, so the app sees them."""
    target = os.environ if environ is None else environ
    target.update(translation.environ)
