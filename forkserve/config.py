"""The settings table: every setting, its default, flag, environment variable and help, once.

Theory of operation. ``Config`` is a frozen dataclass whose fields *are* the table: each field is
declared with ``setting(...)``, which records the default, the command-line flags, the environment
variables and a parser in the field's metadata. Everything else reads that one table:

* the CLI builds its click options from it (``forkserve.cli``),
* ``resolve()`` merges defaults < environment < keyword arguments / command line, validating each
  raw value with the field's parser and naming where a bad value came from,
* ``docs/configuration.md`` is generated from it (``python -m forkserve.docgen``) and a test fails
  when the page is stale.

The obvious alternative, one class per setting with a registry metaclass (gunicorn's), spreads a
default over three places and hides the types from mypy; a dataclass keeps both in one line.
The merge itself is a pure function of plain mappings (no ``os.environ`` read inside) so it is
tested from tables.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from forkserve import privileges
from forkserve.errors import ConfigError
from forkserve.hooks import Hook, parse_hook

Workers = int | Literal["auto"]
Parser = Callable[[Any], Any]


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


# ---------------------------------------------------------------------------------------------
# Parsers. Each takes a raw value (a string from the CLI or environment, or a Python value from
# the library) and returns the typed value, or raises ValueError with what was expected.


def parse_int(minimum: int = 0) -> Parser:
    def parse(raw: Any) -> int:
        if isinstance(raw, bool):
            raise ValueError("expected a whole number")
        if isinstance(raw, float) and not raw.is_integer():
            raise ValueError("expected a whole number")
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ValueError("expected a whole number") from None
        if value < minimum:
            raise ValueError(f"expected a whole number of at least {minimum}")
        return value

    return parse


def parse_seconds(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("expected a number of seconds")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError("expected a number of seconds, e.g. 30 or 2.5") from None
    if value < 0 or value != value:
        raise ValueError("expected a number of seconds of at least 0")
    return value


def parse_positive_seconds(raw: Any) -> float:
    value = parse_seconds(raw)
    if value <= 0:
        raise ValueError("expected a number of seconds greater than 0")
    return value


def parse_workers(raw: Any) -> Workers:
    if isinstance(raw, str) and raw.strip().lower() == "auto":
        return "auto"
    try:
        return parse_int(minimum=1)(raw)  # type: ignore[no-any-return]
    except ValueError:
        raise ValueError("expected a number of workers of at least 1, or 'auto'") from None


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected true or false (1/0, yes/no, on/off)")


def parse_str(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError("expected a string")
    return raw


def parse_optional_str(raw: Any) -> str | None:
    if raw is None:
        return None
    return parse_str(raw) or None


def parse_optional_path(raw: Any) -> str | None:
    """A file or directory name (a str or an os.PathLike such as pathlib.Path), or None."""
    if isinstance(raw, os.PathLike):
        raw = os.fspath(raw)
    return parse_optional_str(raw)


def parse_optional_workers(raw: Any) -> int | None:
    """A worker count, or None (unset: follow -w)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        return parse_int(minimum=1)(raw)  # type: ignore[no-any-return]
    except ValueError:
        raise ValueError("expected a number of workers of at least 1") from None


def parse_fraction(raw: Any) -> float:
    """0..1, or a percentage: 0.8 and 80% are the same."""
    text = str(raw).strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError("expected a fraction from 0 to 1, or a percentage such as 80%") from None
    if not 0 < value <= 1:
        raise ValueError("expected a fraction from 0 to 1, or a percentage such as 80%")
    return value


def parse_memory(raw: Any) -> str:
    """Megabytes ("512") or a share of the machine's or container's memory ("10%"), kept as text."""
    text = str(raw).strip().upper().removesuffix("MB").strip()
    number = text.removesuffix("%")
    try:
        value = float(number)
    except ValueError:
        raise ValueError("expected megabytes (e.g. 512) or a percentage of memory (e.g. 10%)") from None
    if value < 0 or (text.endswith("%") and value >= 100):
        raise ValueError("expected megabytes (e.g. 512) or a percentage of memory below 100%")
    return f"{number}%" if text.endswith("%") else number


def parse_choice(*choices: str) -> Parser:
    def parse(raw: Any) -> str:
        text = str(raw).strip().lower()
        if text not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return text

    return parse


def parse_user(raw: Any) -> str | None:
    """A user name or uid that exists (checked now, so a typo fails before anything starts)."""
    text = parse_optional_str(None if raw is None else str(raw).strip())
    if text is not None:
        privileges.lookup_user(text)
    return text


def parse_group(raw: Any) -> str | None:
    text = parse_optional_str(None if raw is None else str(raw).strip())
    if text is not None:
        privileges.lookup_group(text)
    return text


def _importable(module: str) -> bool:
    """Whether MODULE could be imported, without importing it or its packages.

    The master validates the settings and must not import uvicorn (memory: docs/benchmarks.md),
    so a submodule is looked for as a file in its top-level package's directory.
    """
    top, _, rest = module.partition(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None or not rest:
        return spec is not None
    relative = Path(*rest.split("."))
    return any(
        (Path(location) / relative).with_suffix(".py").is_file()
        or (Path(location) / relative / "__init__.py").is_file()
        for location in spec.submodule_search_locations or ()
    )


HTTP_CHOICES = ("auto", "fast", "httptools", "h11", "zttp")


def http_choice_problem(value: str, importable: Callable[[str], bool]) -> str | None:
    """Why --http VALUE cannot run here (a module it needs is missing), or None if it can."""
    if value in ("fast", "httptools") and not importable("httptools"):
        return f"'{value}' needs httptools, which is not installed: pip install httptools, or use h11"
    if value == "zttp" and not (importable("zttp") and importable("uvicorn.protocols.http.zttp_impl")):
        return "'zttp' needs the zttp package and uvicorn >= 0.54: pip install zttp, or use fast"
    return None


def parse_http(raw: Any) -> str:
    value: str = parse_choice(*HTTP_CHOICES)(raw)
    problem = http_choice_problem(value, _importable)
    if problem:
        raise ValueError(problem)
    return value


def parse_ip_list(raw: Any) -> str:
    """Validated, but kept as the comma-separated text uvicorn's ProxyHeadersMiddleware takes."""
    items = [raw] if isinstance(raw, str) else list(raw)
    hosts = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
    for host in hosts:
        if host == "*" or host.startswith("unix:"):
            continue
        try:
            ipaddress.ip_network(host, strict=False)
        except ValueError:
            raise ValueError(
                f"{host!r} is not an IP address or network; expected e.g. 10.0.0.0/8,127.0.0.1 or *"
            ) from None
    return ",".join(hosts)


def parse_optional_int(minimum: int = 0) -> Parser:
    """A whole number, or None (unset) for None or an empty string."""

    def parse(raw: Any) -> int | None:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        return parse_int(minimum)(raw)  # type: ignore[no-any-return]

    return parse


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3}


def parse_size(raw: Any) -> int:
    """A number of bytes: 1048576, 512k, 10M or 1GB (binary units); 0 means no limit."""
    if isinstance(raw, bool):
        raise ValueError("expected a size in bytes, e.g. 1048576, 512k or 10M")
    match = re.fullmatch(r"\s*([0-9]+)\s*([a-zA-Z]*)\s*", str(raw))
    unit = match[2].lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError("expected a size in bytes, e.g. 1048576, 512k or 10M")
    return int(match[1]) * _SIZE_UNITS[unit]


def _items(raw: Any, split: str) -> list[str]:
    """The values of a repeatable setting: a list (CLI, TOML, kwargs) or one string to split (env)."""
    if isinstance(raw, Mapping):
        return [f"{key}={value}" for key, value in raw.items()]
    if isinstance(raw, str):
        return [part.strip() for part in re.split(split, raw) if part.strip()]
    items = list(raw)
    if not all(isinstance(item, str) for item in items):
        raise ValueError("expected a list of strings")
    return [item.strip() for item in items if item.strip()]


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def parse_header_overrides(raw: Any) -> tuple[str, ...]:
    """NAME=VALUE pairs (an empty VALUE removes that header), kept as canonical text."""
    pairs = []
    for item in _items(raw, r"[\r\n]+"):
        name, equals, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not _TOKEN.fullmatch(name):
            raise ValueError(f"{item!r} is not NAME=VALUE; expected e.g. X-Frame-Options=DENY")
        if any(ord(char) < 32 and char != "\t" for char in value):
            raise ValueError(f"the value of {name} holds a control character")
        pairs.append(f"{name}={value}")
    return tuple(pairs)


def parse_static(raw: Any) -> tuple[str, ...]:
    """/PREFIX=DIR mounts, kept as canonical text; the directories are checked at start."""
    mounts = []
    for item in _items(raw, r"[,\s]+"):
        prefix, equals, directory = item.partition("=")
        prefix = prefix.strip().rstrip("/")
        if not equals or not prefix.startswith("/") or not directory.strip():
            raise ValueError(f"{item!r} is not /PREFIX=DIR; expected e.g. /static=./static")
        mounts.append(f"{prefix}={directory.strip()}")
    prefixes = [mount.partition("=")[0] for mount in mounts]
    for prefix in prefixes:
        if prefixes.count(prefix) > 1:
            raise ValueError(f"{prefix} is mounted twice; give each prefix once")
    return tuple(mounts)


TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")


def parse_tls_version(raw: Any) -> str:
    text = str(raw).strip()
    for version in TLS_VERSIONS:
        if text.lower() == version.lower():
            return version
    raise ValueError("expected the lowest TLS version to accept: " + " or ".join(TLS_VERSIONS))


@dataclass(frozen=True)
class BindSpec:
    """One listening address. ``kind`` is tcp (host, port), unix (path) or fd (an inherited fd)."""

    kind: Literal["tcp", "unix", "fd"]
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


_BIND_FORMS = "expected HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"


def parse_bind_one(text: str) -> BindSpec:
    text = text.strip()
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise ValueError(f"no path after 'unix:'; {_BIND_FORMS}")
        return BindSpec("unix", path=path)
    if text.startswith("fd://"):
        number = text[len("fd://") :]
        if not re.fullmatch(r"[0-9]+", number):
            raise ValueError(f"{number!r} is not a file descriptor number; {_BIND_FORMS}")
        return BindSpec("fd", fd=int(number))
    match = re.fullmatch(
        r"\[(?P<v6>[^\]]+)\](?::(?P<port6>[^:]*))?|(?P<host>[^:\[\]]*)(?::(?P<port>[^:]*))?", text
    )
    if not match or not text:
        raise ValueError(_BIND_FORMS)
    host = match["v6"] if match["v6"] is not None else match["host"]
    port_text = match["port6"] if match["v6"] is not None else match["port"]
    if match["v6"] is not None:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address; {_BIND_FORMS}") from None
    host = host or "0.0.0.0"
    if port_text is None:
        port = 8000
    elif not re.fullmatch(r"[0-9]+", port_text) or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not a number from 0 to 65535; {_BIND_FORMS}")
    else:
        port = int(port_text)
    return BindSpec("tcp", host=host, port=port)


def parse_binds(raw: Any) -> tuple[BindSpec, ...]:
    items: Iterable[Any] = [raw] if isinstance(raw, str | BindSpec) else raw
    specs: list[BindSpec] = []
    for item in items:
        if isinstance(item, BindSpec):
            specs.append(item)
            continue
        # An environment variable carries several addresses separated by commas or spaces.
        for part in re.split(r"[,\s]+", str(item).strip()):
            if part:
                specs.append(parse_bind_one(part))
    if not specs:
        raise ValueError(f"no address given; {_BIND_FORMS}")
    return tuple(specs)


def parse_metrics_bind(raw: Any) -> str | None:
    """A TCP HOST:PORT for the master's metrics server, kept as text (it crosses exec as JSON)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    spec = parse_bind_one(str(raw))
    if spec.kind != "tcp":
        raise ValueError("expected HOST:PORT or [IPv6]:PORT (the metrics server listens on TCP)")
    return str(spec)


BALANCE_MODES = ("kernel", "reuseport", "round-robin", "least-conn", "ip-hash")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


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
        "is killed and replaced. 0 disables the check.",
    )  # fmt: skip
    graceful_timeout: float = setting(
        30.0, "--graceful-timeout", parse=parse_seconds, metavar="SECONDS",
        help="On TERM/INT/HUP, how long a worker may take to finish in-flight requests before it is killed.",
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
    reload: bool = setting(
        False, "--reload", parse=parse_bool, is_flag=True, group="Reload and recycling",
        help="Development: watch the app's directory and roll new workers in when a .py file changes.",
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
        "'none' turns it off. By default under $XDG_RUNTIME_DIR/forkserve, else /run/forkserve for root, "
        "else /tmp/forkserve-<uid> (see docs/control.md).",
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
    proxy_headers: bool = setting(
        True, "--proxy-headers", parse=parse_bool, is_flag=True, group="Proxy",
        help="Trust X-Forwarded-For/-Proto from --forwarded-allow-ips for the client address and scheme.",
    )  # fmt: skip
    forwarded_allow_ips: str = setting(
        "127.0.0.1", "--forwarded-allow-ips", parse=parse_ip_list, metavar="IPS", group="Proxy",
        env=("FORKSERVE_FORWARDED_ALLOW_IPS", "FORWARDED_ALLOW_IPS"),
        help="Comma-separated addresses or networks whose proxy headers are trusted; '*' trusts all.",
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


# ---------------------------------------------------------------------------------------------
# Merging sources: defaults < environment < keyword arguments or command line.


@dataclass(frozen=True)
class Source:
    """Raw values from one place. ``kind`` decides how a bad value's origin is named."""

    kind: Literal["env", "cli", "kwargs", "file"]
    values: Mapping[str, Any]
    label: str = ""


def _origin(source: Source, spec: Setting, key: str) -> str:
    if source.kind == "cli":
        return spec.flags[-1]
    if source.kind == "env":
        return key
    if source.kind == "file":
        return f"{source.label}: {key} ="
    return f"{spec.name}="


def env_source(environ: Mapping[str, str]) -> Source:
    """The settings given by ``FORKSERVE_*`` (and the few conventional) environment variables.

    A setting with several variables takes the first one set, so FORKSERVE_WORKERS beats the
    Heroku-style WEB_CONCURRENCY.
    """
    values: dict[str, Any] = {}
    for spec in SETTINGS:
        for key in spec.env:
            if key in environ:
                values[key] = environ[key]
                break
    return Source("env", values)


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _bad_item(spec: Setting, raw: Any) -> Any:
    """For a repeated flag, the one value that failed, so the error quotes it alone."""
    if spec.multiple and isinstance(raw, tuple):
        for item in raw:
            try:
                spec.parse([item] if isinstance(item, str) else item)
            except ValueError:
                return item
            except TypeError:
                return item
    return raw


def _setting_named(source: Source, key: str) -> Setting:
    """The setting a key of a file, keyword-argument or CLI source names, or a ConfigError."""
    # A file may spell names as flags do (graceful-timeout) or as Python does (graceful_timeout).
    name = key.replace("-", "_") if source.kind == "file" else key
    spec = SETTINGS_BY_NAME.get(name)
    where = f"{source.label}: " if source.label else ""
    if spec is None:
        candidates = list(SETTINGS_BY_NAME)
        if source.kind == "file" and "-" in key:
            candidates = [candidate.replace("_", "-") for candidate in candidates]
        suggestion = _suggest(key, candidates)
        raise ConfigError(
            f"{where}unknown setting {key!r}{suggestion}; see docs/configuration.md for the list"
        )
    if source.kind == "file" and spec.name == "config":
        raise ConfigError(f"{where}{key!r} cannot be set inside a config file; pass -c on the command line")
    return spec


def _origin_label(source: Source, spec: Setting, key: str) -> str:
    """Where a value came from, as --print-config shows it."""
    if source.kind == "env":
        return f"env {key}"
    if source.label:
        return source.label
    if source.kind == "cli":
        return f"flag {spec.flags[-1]}"
    return source.kind


def resolve(sources: Sequence[Source]) -> tuple[Config, dict[str, str]]:
    """Merge raw sources, later ones winning, into a validated Config and each value's origin.

    Environment sources are keyed by variable name; the others by setting name. A value of None
    from the CLI or keyword arguments means "not given" and leaves the lower source in force.
    """
    values: dict[str, Any] = dict(DEFAULTS)
    origins = {name: "default" for name in values}
    env_names = {key: spec for spec in SETTINGS for key in spec.env}
    for source in sources:
        for key, raw in source.values.items():
            if source.kind == "env":
                spec = env_names.get(key)
                if spec is None:
                    continue
            else:
                spec = _setting_named(source, key)
            if raw is None or (spec.multiple and source.kind == "cli" and raw == ()):
                continue
            if spec.multiple and not isinstance(raw, str | BindSpec | Mapping):
                raw = tuple(raw)  # a generator must survive being read twice
            try:
                values[spec.name] = spec.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{_origin(source, spec, key)} {_bad_item(spec, raw)!r}: {exc}") from None
            origins[spec.name] = _origin_label(source, spec, key)
    config = Config(**values)
    _check_consistency(config)
    return config, origins


def _check_consistency(config: Config) -> None:
    if config.workers != "auto":
        low = config.min_workers or config.workers
        high = config.max_workers or max(config.workers, low)
        if config.min_workers and config.min_workers > config.workers:
            raise ConfigError(
                f"--min-workers {low} is above -w {config.workers}; start with at least the minimum"
            )
        if high < config.workers:
            raise ConfigError(f"--max-workers {high} is below -w {config.workers}; raise it, or lower -w")
    if config.balance == "reuseport" and any(spec.kind == "fd" for spec in config.bind):
        raise ConfigError(
            "--balance reuseport binds one socket per worker, which an inherited fd:// socket cannot be; "
            "bind HOST:PORT instead, or pick another --balance mode"
        )
    fds = [spec.fd for spec in config.bind if spec.kind == "fd"]
    if len(fds) != len(set(fds)):
        raise ConfigError("--bind names the same fd:// twice; give each inherited socket once")
    addresses = [str(spec) for spec in config.bind]
    if config.metrics_bind is not None and config.metrics_bind in addresses:
        raise ConfigError(
            f"--metrics-bind {config.metrics_bind} is also a --bind address; give it its own port"
        )
    for address in addresses:
        if addresses.count(address) > 1:
            raise ConfigError(f"--bind {address} is given twice; give each address once")
