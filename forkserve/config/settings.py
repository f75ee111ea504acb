"""The settings table: every setting, its default, flag, environment variable and help, once.

Theory of operation. ``Config`` is a frozen dataclass whose fields *are* the table: each field is
declared with ``setting(...)``, which records the default, the command-line flags, the environment
variables and a parser in the field's metadata. Everything else reads that one table:

* the CLI builds its click options from it (``forkserve.cli.main``),
* ``forkserve.config.sources.resolve`` merges defaults < file < environment < keyword arguments
  or command line, validating each raw value with the field's parser (``forkserve.config.parsers``)
  and naming where a bad value came from,
* ``docs/configuration.md`` is generated from it (``python -m forkserve.config.docgen``) and a test fails
  when the page is stale.

The obvious alternative, one class per setting with a registry metaclass (gunicorn's), spreads a
default over three places and hides the types from mypy; a dataclass keeps both in one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from forkserve.common import privileges
from forkserve.common.hooks import Hook, parse_hook
from forkserve.config.parsers import (
    TLS_VERSIONS,
    BindSpec,
    Parser,
    Workers,
    parse_access_logformat,
    parse_binds,
    parse_bool,
    parse_choice,
    parse_dirs,
    parse_drain_period,
    parse_fraction,
    parse_group,
    parse_header_overrides,
    parse_http,
    parse_int,
    parse_ip_list,
    parse_log_config,
    parse_memory,
    parse_metrics_bind,
    parse_optional_bool,
    parse_optional_int,
    parse_optional_path,
    parse_optional_seconds,
    parse_optional_str,
    parse_optional_workers,
    parse_patterns,
    parse_positive_seconds,
    parse_seconds,
    parse_size,
    parse_static,
    parse_str,
    parse_tls_version,
    parse_user,
    parse_workers,
)
from forkserve.policy import wsdrain


@dataclass(frozen=True)
class Setting:
    name: str
    flags: tuple[str, ...]
    env: tuple[str, ...]
    parse: Parser
    help: str
    metavar: str
    # A boolean flag gets a --no-... twin on the command line.
    is_flag: bool = False
    # A setting given several times on the command line (--bind) collects every value.
    multiple: bool = False
    # Shown in the docs instead of repr(default) where the default is computed or wordy.
    default_text: str = ""
    group: str = "Server"
    # For a repeatable setting: how one environment variable separates several values (docs only;
    # the parser splits).
    list_separator: str = "commas or spaces"


def setting(
    default: Any,
    *flags: str,
    parse: Parser,
    help: str,
    metavar: str = "",
    env: Sequence[str] = (),
    is_flag: bool = False,
    multiple: bool = False,
    default_text: str = "",
    group: str = "Server",
    list_separator: str = "commas or spaces",
) -> Any:
    meta = {
        "flags": flags,
        "env": tuple(env),
        "parse": parse,
        "help": help,
        "metavar": metavar,
        "is_flag": is_flag,
        "multiple": multiple,
        "default_text": default_text,
        "group": group,
        "list_separator": list_separator,
    }
    return field(default=default, metadata={"forkserve": meta})


BALANCE_MODES = ("kernel", "reuseport", "round-robin", "least-conn", "ip-hash")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
# --threads: see docs/wsgi.md for the measurement behind it.
THREADS_DEFAULT = 4


@dataclass(frozen=True)
class Config:
    """Every setting of a forkserve server; build one with ``resolve()`` to get validation."""

    workers: Workers = setting(
        1, "-w", "--workers", parse=parse_workers, metavar="N|auto",
        env=("FORKSERVE_WORKERS", "WEB_CONCURRENCY"),
        help="Worker processes. 'auto' = the CPUs this process may run on (affinity and cpuset), capped "
        "by the container's cgroup CPU quota.",
    )  # fmt: skip
    bind: tuple[BindSpec, ...] = setting(
        (BindSpec("tcp", host="127.0.0.1", port=8000),), "-b", "--bind", parse=parse_binds,
        metavar="ADDRESS", multiple=True, default_text="127.0.0.1:8000",
        help="Address to listen on: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N. Repeat for several.",
    )  # fmt: skip
    backlog: int = setting(
        2048, "--backlog", parse=parse_int(1), metavar="N",
        help="Length of each listening socket's accept queue.",
    )  # fmt: skip
    timeout: float = setting(
        30.0, "-t", "--timeout", parse=parse_seconds, metavar="SECONDS",
        help="A worker whose event loop has not ticked for this long is hung: its stack is logged, then it "
        "is killed and replaced. A WSGI app stuck this long in one request gets its worker drained and "
        "replaced (docs/wsgi.md). 0 disables both checks.",
    )  # fmt: skip
    startup_timeout: float | None = setting(
        None, "--startup-timeout", parse=parse_optional_seconds, metavar="SECONDS", default_text="--timeout",
        help="A worker that has not finished its lifespan startup this long after it was started has "
        "failed to boot: its stack is logged, then it is killed (a fresh server exits 3, a reload is "
        "aborted). 0 disables the check.",
    )  # fmt: skip
    graceful_timeout: float = setting(
        30.0, "--graceful-timeout", parse=parse_seconds, metavar="SECONDS",
        help="On TERM/INT/HUP, how long a worker may take to finish in-flight requests before it is killed.",
    )  # fmt: skip
    zygote_idle_exit: float | None = setting(
        None, "--zygote-idle-exit", parse=parse_optional_seconds, metavar="SECONDS", default_text="off",
        help="Memory over fork speed: once every worker serves and no worker was forked for this long, "
        "the zygote exits, freeing the pages only it still holds (the app's objects the workers have "
        "copied). A worker needed later (a crash, recycling, scaling) first starts a fresh zygote, "
        "which imports the app from disk again. Needs an import string. See docs/usage.md.",
    )  # fmt: skip
    keep_alive: int = setting(
        5, "--keep-alive", parse=parse_int(0), metavar="SECONDS",
        help="Close keep-alive connections idle for this long.",
    )  # fmt: skip
    balance: str = setting(
        "kernel", "--balance", parse=parse_choice(*BALANCE_MODES), metavar="|".join(BALANCE_MODES),
        group="Balancing",
        help="Which worker takes a new connection. 'kernel': every worker accepts on the shared socket; "
        "'reuseport': a SO_REUSEPORT socket per worker, steered away from workers that are not serving; "
        "'round-robin', 'least-conn', 'ip-hash': the master accepts and hands each connection to the "
        "chosen worker. See docs/balancing.md.",
    )  # fmt: skip
    min_workers: int | None = setting(
        None, "--min-workers", parse=parse_optional_workers, metavar="N", group="Autoscaling",
        default_text="-w",
        help="The autoscaler never goes below this many workers.",
    )  # fmt: skip
    max_workers: int | None = setting(
        None, "--max-workers", parse=parse_optional_workers, metavar="N", group="Autoscaling",
        default_text="-w (autoscaling off)",
        help="The autoscaler may grow to this many workers; above --min-workers it is on.",
    )  # fmt: skip
    scale_interval: float = setting(
        1.0, "--scale-interval", parse=parse_positive_seconds, metavar="SECONDS", group="Autoscaling",
        help="How often the autoscaler samples the accept queue, the workers' busyness and memory.",
    )  # fmt: skip
    scale_up_queue: int = setting(
        8, "--scale-up-queue", parse=parse_int(1), metavar="N", group="Autoscaling",
        help="Grow when more connections than this wait in the accept queue, sustained for 2 samples.",
    )  # fmt: skip
    scale_up_busy: float = setting(
        0.8, "--scale-up-busy", parse=parse_fraction, metavar="FRACTION", group="Autoscaling",
        help="Grow when the workers' event loops are busy more than this share of the time (0.8 or 80%), "
        "sustained for 2 samples.",
    )  # fmt: skip
    scale_down_idle: float = setting(
        30.0, "--scale-down-idle", parse=parse_positive_seconds, metavar="SECONDS", group="Autoscaling",
        help="Retire one extra worker after the load has stayed low (empty queue, busy below half of "
        "--scale-up-busy) for this long.",
    )  # fmt: skip
    scale_cooldown: float = setting(
        5.0, "--scale-cooldown", parse=parse_seconds, metavar="SECONDS", group="Autoscaling",
        help="After a scaling change, wait this long before the next one.",
    )  # fmt: skip
    max_worker_memory: int = setting(
        0, "--max-worker-memory", parse=parse_int(0), metavar="MB", group="Autoscaling",
        help="Replace a worker whose private memory (USS) exceeds this many MB, without dropping a "
        "request; 0: never. Works with or without autoscaling.",
    )  # fmt: skip
    memory_reserve: str = setting(
        "0", "--memory-reserve", parse=parse_memory, metavar="MB|PERCENT", group="Autoscaling",
        help="Memory that must stay free (of the container's limit, or the machine's): no scale-up that "
        "would eat into it. MB, or a percentage such as 10%.",
    )  # fmt: skip
    reload_batch: int = setting(
        1, "--reload-batch", parse=parse_int(1), metavar="N", group="Reload and recycling",
        help="On HUP, how many new workers boot at a time; an old worker drains only once its replacement "
        "serves.",
    )  # fmt: skip
    max_requests: int = setting(
        0, "--max-requests", parse=parse_int(0), metavar="N", group="Reload and recycling",
        help="Replace a worker after it has served this many requests (0: never), without dropping any.",
    )  # fmt: skip
    max_requests_jitter: int = setting(
        0, "--max-requests-jitter", parse=parse_int(0), metavar="N", group="Reload and recycling",
        help="Add a random 0..N to each worker's --max-requests so workers do not all recycle at once.",
    )  # fmt: skip
    shutdown_delay: float = setting(
        0.0, "--shutdown-delay", parse=parse_seconds, metavar="SECONDS", group="Reload and recycling",
        help="On TERM, answer --health-path with 503 but keep serving for this long before draining, so a "
        "load balancer stops routing here first.",
    )  # fmt: skip
    ws_drain_period: wsdrain.Period = setting(
        "auto", "--ws-drain-period", parse=parse_drain_period, metavar="SECONDS|auto",
        group="Reload and recycling",
        help="A draining worker (reload, scale-down, recycling, shutdown) closes its WebSockets with 1012 a "
        "few at a time over this long, so clients reconnect gradually; at most --graceful-timeout minus "
        f"a second. 'auto': 1 s per {wsdrain.AUTO_RATE:g} WebSockets the worker holds, at least "
        f"{wsdrain.AUTO_FLOOR:g} s. 0 closes them all at once.",
    )  # fmt: skip
    reload: bool = setting(
        False, "--reload", parse=parse_bool, is_flag=True, group="Reload and recycling",
        help="Development: watch the app's directory and roll new workers in when a .py file changes.",
    )  # fmt: skip
    reload_dirs: tuple[str, ...] = setting(
        (), "--reload-dir", parse=parse_dirs, metavar="DIR", group="Reload and recycling",
        multiple=True, default_text="--app-dir",
        help="--reload: watch this directory (repeat for several).",
    )  # fmt: skip
    reload_includes: tuple[str, ...] = setting(
        (), "--reload-include", parse=parse_patterns, metavar="GLOB", group="Reload and recycling",
        multiple=True, default_text="*.py",
        help="--reload: also reload when a file matching this glob changes (repeat for several).",
    )  # fmt: skip
    reload_excludes: tuple[str, ...] = setting(
        (), "--reload-exclude", parse=parse_patterns, metavar="GLOB", group="Reload and recycling",
        multiple=True, default_text=".*, .py[cod], .sw.*, ~*",
        help="--reload: ignore changes to files matching this glob (repeat for several).",
    )  # fmt: skip
    reload_delay: float = setting(
        0.25, "--reload-delay", parse=parse_seconds, metavar="SECONDS", group="Reload and recycling",
        help="--reload: wait this long after a change for more before reloading once.",
    )  # fmt: skip
    health_path: str | None = setting(
        None, "--health-path", parse=parse_optional_str, metavar="PATH", group="Application",
        help="Answer this path in each worker, before the app: 200 while serving, 503 while stopping.",
    )  # fmt: skip
    metrics_bind: str | None = setting(
        None, "--metrics-bind", parse=parse_metrics_bind, metavar="HOST:PORT", group="Observability",
        help="Serve /metrics (Prometheus), /health, /ready and /dashboard from the master at this address; "
        "the app's own prometheus-client metrics are merged in. Off by default.",
    )  # fmt: skip
    header_timeout: float = setting(
        10.0, "--header-timeout", parse=parse_positive_seconds, metavar="SECONDS", group="Limits",
        help="Close a connection whose request line and headers have not all arrived this long after "
        "the first byte (slowloris), or that sends nothing this long after connecting.",
    )  # fmt: skip
    max_header_size: int = setting(
        65536, "--max-header-size", parse=parse_int(1024), metavar="BYTES", group="Limits",
        help="Answer 431 and close when a request's line and headers exceed this many bytes.",
    )  # fmt: skip
    pid: str | None = setting(
        None, "--pid", parse=parse_optional_str, metavar="FILE",
        help="Write the master's PID to this file (removed on exit).",
    )  # fmt: skip
    user: str | None = setting(
        None, "-u", "--user", parse=parse_user, metavar="USER", group="Privileges",
        help="Started as root: bind, then run the zygote and workers (and the app's import) as this user "
        "(name or uid). The master stays root.",
    )  # fmt: skip
    group: str | None = setting(
        None, "-g", "--group", parse=parse_group, metavar="GROUP", group="Privileges",
        default_text="USER's group",
        help="Run the zygote and workers with this group (name or gid) instead of --user's own.",
    )  # fmt: skip
    umask: int | None = setting(
        None, "--umask", parse=privileges.parse_umask, metavar="MASK", group="Privileges",
        default_text="inherited",
        help="File mode mask (octal, e.g. 027) for every process: unix socket files, the pid and log files, "
        "files the app creates.",
    )  # fmt: skip
    control_socket: str | None = setting(
        None, "--control-socket", parse=parse_optional_str, metavar="PATH|none", group="Control",
        default_text="$XDG_RUNTIME_DIR/forkserve/<pid>.sock",
        help="Serve 'forkserve ctl' on this unix socket (mode 0600, only this user or root may use it); "
        "'none' turns it off. By default under $RUNTIME_DIRECTORY (systemd's RuntimeDirectory=), "
        "else $XDG_RUNTIME_DIR/forkserve, else /run/forkserve for root, else /tmp/forkserve-<uid> "
        "(see docs/control.md).",
    )  # fmt: skip
    app: str | None = setting(
        None, "--app", parse=parse_optional_str, metavar="MODULE:ATTR", group="Application",
        help="The ASGI app to serve, for where a positional APP is awkward (a container's environment, "
        "a config file). The positional APP, when given, wins.",
    )  # fmt: skip
    factory: bool = setting(
        False, "--factory", parse=parse_bool, is_flag=True, group="Application",
        help="APP names a function that returns the ASGI app (module:create_app).",
    )  # fmt: skip
    app_dir: str = setting(
        ".", "--app-dir", parse=parse_str, metavar="DIR", group="Application",
        help="Directory put first on sys.path before the app is imported.",
    )  # fmt: skip
    chdir: str | None = setting(
        None, "--chdir", parse=parse_optional_str, metavar="DIR", group="Application",
        help="Change to this directory before the app is imported.",
    )  # fmt: skip
    lifespan: str = setting(
        "auto", "--lifespan", parse=parse_choice("auto", "on", "off"), metavar="auto|on|off",
        group="Application",
        help="ASGI lifespan events: 'on' requires the app to support them, 'auto' uses them when it does.",
    )  # fmt: skip
    interface: str = setting(
        "auto", "--interface", parse=parse_choice("auto", "asgi", "wsgi"), metavar="auto|asgi|wsgi",
        group="Application",
        help="What APP speaks: 'auto' tells a WSGI app (Flask, Django's wsgi.py) from an ASGI one by its "
        "call signature, at boot, and logs which; 'asgi' or 'wsgi' forces it. See docs/wsgi.md.",
    )  # fmt: skip
    threads: int = setting(
        THREADS_DEFAULT, "--threads", parse=parse_int(1), metavar="N", group="Application",
        help="A WSGI app's requests run on a pool of this many threads in each worker, so N requests per "
        "worker run at once (ASGI apps ignore it). See docs/wsgi.md for the choice of default.",
    )  # fmt: skip
    root_path: str = setting(
        "", "--root-path", parse=parse_str, metavar="PATH", group="Application",
        help="ASGI root_path, for an app mounted below a path by a proxy.",
    )  # fmt: skip
    log_level: str = setting(
        "info", "--log-level", parse=parse_choice(*LOG_LEVELS), metavar="|".join(LOG_LEVELS),
        group="Logging",
        help="Lowest level logged. 'debug' also shows full tracebacks of app boot failures.",
    )  # fmt: skip
    log_file: str | None = setting(
        None, "--log-file", parse=parse_optional_str, metavar="FILE", group="Logging",
        help="Append the log to this file instead of stderr; reopened on USR1 (for logrotate).",
    )  # fmt: skip
    log_format: str = setting(
        "text", "--log-format", parse=parse_choice("text", "json"), metavar="text|json", group="Logging",
        help="'json' writes one JSON object per line (time, level, role, pid, worker, generation, message, "
        "and the fields of lifecycle events and access lines; see docs/logging.md).",
    )  # fmt: skip
    access_log: bool = setting(
        False, "--access-log", parse=parse_bool, is_flag=True, group="Logging",
        help="Log one line per request. Off by default, as in gunicorn: it costs a quarter of a small "
        "endpoint's throughput logging to a file, half logging to a terminal (see docs/benchmarks.md).",
    )  # fmt: skip
    access_logfile: str | None = setting(
        None, "--access-logfile", parse=parse_optional_path, metavar="FILE|-", group="Logging",
        default_text="off, unless --access-log",
        help="Write the access log here, apart from the error log: '-' is stdout. Setting it turns the "
        "access log on (gunicorn's meaning); reopened on USR1.",
    )  # fmt: skip
    error_logfile: str | None = setting(
        None, "--error-logfile", parse=parse_optional_path, metavar="FILE|-", group="Logging",
        default_text="--log-file, else stderr",
        help="gunicorn's name for --log-file: '-' is stderr. Give one of the two.",
    )  # fmt: skip
    access_logformat: str | None = setting(
        None, "--access-logformat", parse=parse_access_logformat, metavar="FORMAT", group="Logging",
        default_text="forkserve's line, with latency",
        help="The access line in gunicorn's atoms, e.g. '%(h)s %(l)s %(u)s %(t)s \"%(r)s\" %(s)s %(b)s "
        "\"%(f)s\" \"%(a)s\"' (every atom in docs/logging.md).",
    )  # fmt: skip
    capture_output: bool = setting(
        False, "--capture-output", parse=parse_bool, is_flag=True, group="Logging",
        help="Send the app's print() and anything else it writes to stdout or stderr into the error log, "
        "one record per line (tagged, and JSON under --log-format json).",
    )  # fmt: skip
    log_config: str | None = setting(
        None, "--log-config", parse=parse_log_config, metavar="FILE", group="Logging",
        help="Configure logging from this file in every process: dictConfig from .json or .yaml/.yml, "
        "fileConfig (ini) otherwise. forkserve then leaves the app's loggers alone.",
    )  # fmt: skip
    use_colors: bool | None = setting(
        None, "--use-colors", parse=parse_optional_bool, is_flag=True, group="Logging",
        default_text="on when the log is a terminal",
        help="Colour the level names of text log lines.",
    )  # fmt: skip
    proxy_headers: bool = setting(
        True, "--proxy-headers", parse=parse_bool, is_flag=True, group="Proxy",
        help="Trust X-Forwarded-For/-Proto from --forwarded-allow-ips for the client address and scheme.",
    )  # fmt: skip
    forwarded_allow_ips: str = setting(
        "127.0.0.1", "--forwarded-allow-ips", parse=parse_ip_list, metavar="IPS", group="Proxy",
        env=("FORKSERVE_FORWARDED_ALLOW_IPS", "FORWARDED_ALLOW_IPS"),
        help="Comma-separated addresses or networks whose proxy headers are trusted; '*' trusts all.",
    )  # fmt: skip
    proxy_protocol: bool = setting(
        False, "--proxy-protocol", parse=parse_bool, is_flag=True, group="Proxy",
        help="Read a PROXY protocol header (v1 or v2, as HAProxy's send-proxy writes it) from each "
        "connection of --forwarded-allow-ips and take the client address from it. Those peers must "
        "send one; a header from any other peer is refused (docs/security.md).",
    )  # fmt: skip
    loop: str = setting(
        "auto", "--loop", parse=parse_choice("auto", "asyncio", "uvloop"), metavar="auto|asyncio|uvloop",
        group="Protocol",
        help="Event loop: 'auto' picks uvloop when installed.",
    )  # fmt: skip
    http: str = setting(
        "auto", "--http", parse=parse_http, metavar="auto|fast|httptools|h11|zttp", group="Protocol",
        help="HTTP/1.1 implementation: 'fast' is forkserve's own on httptools (docs/http.md); 'auto' "
        "picks it when httptools is installed, else h11; 'zttp' needs the zttp package.",
    )  # fmt: skip
    ws: str = setting(
        "auto", "--ws", parse=parse_choice("auto", "none", "websockets", "websockets-sansio", "wsproto"),
        metavar="auto|none|websockets|websockets-sansio|wsproto", group="Protocol",
        help="WebSocket implementation; 'none' refuses upgrades.",
    )  # fmt: skip
    ws_max_size: int = setting(
        16 * 1024 * 1024, "--ws-max-size", parse=parse_int(1), metavar="BYTES", group="Protocol",
        help="Close a WebSocket (1009) whose incoming message is larger than this.",
    )  # fmt: skip
    ws_max_queue: int = setting(
        32, "--ws-max-queue", parse=parse_int(1), metavar="N", group="Protocol",
        help="Incoming WebSocket messages buffered before the connection stops reading (websockets only).",
    )  # fmt: skip
    ws_ping_interval: float = setting(
        20.0, "--ws-ping-interval", parse=parse_seconds, metavar="SECONDS", group="Protocol",
        help="Send a WebSocket ping this often; 0 sends none.",
    )  # fmt: skip
    ws_ping_timeout: float = setting(
        20.0, "--ws-ping-timeout", parse=parse_seconds, metavar="SECONDS", group="Protocol",
        help="Close a WebSocket whose pong has not come back this long after a ping; 0 waits forever.",
    )  # fmt: skip
    ws_per_message_deflate: bool = setting(
        True, "--ws-per-message-deflate", parse=parse_bool, metavar="BOOL", group="Protocol",
        help="Offer the permessage-deflate WebSocket extension (uvicorn's form: --ws-per-message-deflate "
        "false).",
    )  # fmt: skip
    server_header: bool = setting(
        True, "--server-header", parse=parse_bool, is_flag=True, group="Protocol",
        help="Send 'server: uvicorn' (or --secure-header Server=VALUE instead) on every response.",
    )  # fmt: skip
    date_header: bool = setting(
        True, "--date-header", parse=parse_bool, is_flag=True, group="Protocol",
        help="Send a Date header on every response.",
    )  # fmt: skip
    # -- Configuration sources, security and limits (docs/configuration-sources.md, docs/security.md)
    config: str | None = setting(
        None, "-c", "--config", parse=parse_optional_path, metavar="FILE", group="Configuration",
        default_text="[tool.forkserve] in ./pyproject.toml, if any",
        help="Read settings from this TOML file (keys are the setting names). Without it, the command "
        "line reads the [tool.forkserve] table of ./pyproject.toml. The environment and flags override it.",
    )  # fmt: skip
    env_file: str | None = setting(
        None, "--env-file", parse=parse_optional_path, metavar="FILE", group="Configuration",
        help="A .env file (python-dotenv syntax) whose variables the app sees, at import and in every "
        "worker; re-read on HUP. Variables already set in forkserve's environment win.",
    )  # fmt: skip
    certfile: str | None = setting(
        None, "--certfile", parse=parse_optional_path, metavar="FILE", group="TLS",
        help="Serve HTTPS with this PEM certificate chain (it may hold the key too).",
    )  # fmt: skip
    keyfile: str | None = setting(
        None, "--keyfile", parse=parse_optional_path, metavar="FILE", group="TLS",
        help="The PEM private key of --certfile.",
    )  # fmt: skip
    keyfile_password: str | None = setting(
        None, "--keyfile-password", parse=parse_optional_str, metavar="PASSWORD", group="TLS",
        help="Password of an encrypted --keyfile (prefer the environment variable to the flag).",
    )  # fmt: skip
    ca_certs: str | None = setting(
        None, "--ca-certs", parse=parse_optional_path, metavar="FILE", group="TLS",
        help="PEM CA certificates to verify client certificates against (with --cert-reqs).",
    )  # fmt: skip
    cert_reqs: str = setting(
        "none", "--cert-reqs", parse=parse_choice("none", "optional", "required"),
        metavar="none|optional|required", group="TLS",
        help="Whether clients must present a certificate signed by --ca-certs (mutual TLS).",
    )  # fmt: skip
    ssl_version: str = setting(
        "TLSv1.2", "--ssl-version", parse=parse_tls_version, metavar="|".join(TLS_VERSIONS), group="TLS",
        help="The lowest TLS version accepted.",
    )  # fmt: skip
    ciphers: str | None = setting(
        None, "--ciphers", parse=parse_optional_str, metavar="OPENSSL-CIPHERS", group="TLS",
        default_text="Python's ssl defaults",
        help="OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are not configurable this way).",
    )  # fmt: skip
    limit_concurrency: int | None = setting(
        None, "--limit-concurrency", parse=parse_optional_int(1), metavar="N", group="Limits",
        default_text="no limit",
        help="Answer 503 to a request arriving while its worker already has this many other connections "
        "or requests in flight.",
    )  # fmt: skip
    limit_max_request_size: int = setting(
        0, "--limit-max-request-size", parse=parse_size, metavar="BYTES", group="Limits",
        default_text="0 (no limit)",
        help="Answer 413 to a request whose body is larger: at once from Content-Length, or as a chunked "
        "body streams past it. Accepts 512k, 10M, 1G. 0: no limit.",
    )  # fmt: skip
    max_header_count: int = setting(
        100, "--max-header-count", parse=parse_int(1), metavar="N", group="Limits",
        help="Answer 431 to a request with more header fields than this.",
    )  # fmt: skip
    limit_request_line: int = setting(
        0, "--limit-request-line", parse=parse_int(0), metavar="BYTES", group="Limits",
        default_text="0 (no limit but --max-header-size)",
        help="Answer 414 to a request whose request line (method, target and version) is longer than this "
        "(gunicorn's setting of that name; its default is 4094). 0: only --max-header-size bounds it.",
    )  # fmt: skip
    secure_headers: bool = setting(
        False, "--secure-headers", parse=parse_bool, is_flag=True, group="Security",
        help="Add the browser security headers helmet adds (X-Content-Type-Options, X-Frame-Options, "
        "Referrer-Policy, Cross-Origin-Opener-Policy, and Strict-Transport-Security over https) to every "
        "response that does not set them itself.",
    )  # fmt: skip
    secure_header: tuple[str, ...] = setting(
        (), "--secure-header", parse=parse_header_overrides, metavar="NAME=VALUE", group="Security",
        multiple=True, list_separator="newlines", default_text="none",
        help="Override one --secure-headers header, or add one; an empty VALUE removes it. Repeat for "
        "several.",
    )  # fmt: skip
    static: tuple[str, ...] = setting(
        (), "--static", parse=parse_static, metavar="/PREFIX=DIR", group="Security", multiple=True,
        default_text="none",
        help="Serve the files under DIR at /PREFIX from the workers, before the app. For small deployments; "
        "see docs/security.md for the nginx recipe. Repeat for several.",
    )  # fmt: skip
    static_dotfiles: bool = setting(
        False, "--static-dotfiles", parse=parse_bool, is_flag=True, group="Security",
        help="Let --static serve files and directories whose name starts with a dot (.env, .git/). "
        "Off: they are a 404, as if absent.",
    )  # fmt: skip
    on_starting: str | Hook | None = setting(
        None, "--on-starting", parse=parse_hook, metavar="MODULE:FUNCTION", group="Hooks",
        help="Call this in the master once the sockets are bound, before the app loads, with a ServerInfo. "
        "If it raises, forkserve exits 3. See docs/cluster.md.",
    )  # fmt: skip
    on_reload: str | Hook | None = setting(
        None, "--on-reload", parse=parse_hook, metavar="MODULE:FUNCTION", group="Hooks",
        help="Call this in the master on each reload (HUP), before the new generation loads, with a "
        "ServerInfo.",
    )  # fmt: skip
    post_fork: str | Hook | None = setting(
        None, "--post-fork", parse=parse_hook, metavar="MODULE:FUNCTION", group="Hooks",
        help="Call this in each worker right after the fork, before lifespan startup, with a WorkerInfo. "
        "If it raises, the worker fails to boot.",
    )  # fmt: skip
    worker_ready: str | Hook | None = setting(
        None, "--worker-ready", parse=parse_hook, metavar="MODULE:FUNCTION", group="Hooks",
        help="Call this (or await it) in each worker after lifespan startup, before it serves, with a "
        "WorkerInfo. If it raises, the worker fails to boot.",
    )  # fmt: skip
    worker_exit: str | Hook | None = setting(
        None, "--worker-exit", parse=parse_hook, metavar="MODULE:FUNCTION", group="Hooks",
        help="Call this (or await it) in each worker after it drained and ran lifespan shutdown, with a "
        "WorkerInfo. Not called on QUIT.",
    )  # fmt: skip
    worker_int: str | Hook | None = setting(
        None, "--worker-int", parse=parse_hook, metavar="MODULE:FUNCTION", group="Hooks",
        help="Call this in a worker that receives INT or QUIT, with a WorkerInfo: on INT before it "
        "drains, on QUIT just before it exits (from the signal handler: keep it short).",
    )  # fmt: skip
    worker_abort: str | Hook | None = setting(
        None, "--worker-abort", parse=parse_hook, metavar="MODULE:FUNCTION", group="Hooks",
        help="Call this in a worker the master kills as hung (--timeout) or slow to start, with a "
        "WorkerInfo, after its stack dump; SIGKILL follows half a second later.",
    )  # fmt: skip

    @staticmethod
    def settings() -> list[Setting]:
        return SETTINGS

    def describe(self, name: str) -> str:
        value = getattr(self, name)
        if name == "bind":
            return ",".join(str(spec) for spec in value)
        if name == "umask" and value is not None:
            return f"0{value:03o}"
        return str(value)


def _build_table() -> list[Setting]:
    table = []
    for item in dataclasses.fields(Config):
        meta = dict(item.metadata["forkserve"])
        env = meta.pop("env") or ("FORKSERVE_" + item.name.upper(),)
        table.append(Setting(name=item.name, env=env, **meta))
    return table


SETTINGS: list[Setting] = _build_table()
SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Config)}
