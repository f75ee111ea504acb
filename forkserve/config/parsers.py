"""Parsers for the settings: each takes a raw value and returns the typed value, or raises ValueError.

A raw value is a string from the command line, the environment or a file, or a Python value from
the library API. The message says what was expected; ``forkserve.config.sources`` adds where the
value came from. ``parse_user``/``parse_group`` look the names up in the system, so a typo fails
at start, in one line.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from forkserve.common import accessformat, privileges

Parser = Callable[[Any], Any]
Workers = int | Literal["auto"]


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


def parse_optional_seconds(raw: Any) -> float | None:
    """A number of seconds, or None (unset: follow another setting)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return parse_seconds(raw)


def parse_positive_seconds(raw: Any) -> float:
    value = parse_seconds(raw)
    if value <= 0:
        raise ValueError("expected a number of seconds greater than 0")
    return value


def parse_drain_period(raw: Any) -> float | Literal["auto"]:
    if isinstance(raw, str) and raw.strip().lower() == "auto":
        return "auto"
    try:
        return parse_seconds(raw)
    except ValueError:
        raise ValueError("expected 'auto' or a number of seconds of at least 0, e.g. 20") from None


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


def parse_optional_bool(raw: Any) -> bool | None:
    """True, False, or None (unset: decided at run time)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return parse_bool(raw)


def parse_dirs(raw: Any) -> tuple[str, ...]:
    """Directories that exist (checked now, so a typo fails before anything starts)."""
    if isinstance(raw, os.PathLike):
        raw = os.fspath(raw)
    if not isinstance(raw, str) and not isinstance(raw, Mapping):
        raw = [os.fspath(item) if isinstance(item, os.PathLike) else item for item in raw]
    dirs = tuple(_items(raw, r"[,\s]+"))
    for path in dirs:
        if not os.path.isdir(path):
            raise ValueError(f"{path!r} is not a directory")
    return dirs


def parse_patterns(raw: Any) -> tuple[str, ...]:
    return tuple(_items(raw, r"[,\s]+"))


def parse_access_logformat(raw: Any) -> str | None:
    """gunicorn's access-log format, checked now by rendering it once with sample facts."""
    text = parse_optional_str(raw)
    if text is not None:
        problem = accessformat.format_problem(text)
        if problem:
            raise ValueError(problem)
    return text


def parse_log_config(raw: Any) -> str | None:
    path = parse_optional_path(raw)
    if path is not None and not os.path.isfile(path):
        raise ValueError("no such file; expected a logging config (.json, .yaml, .yml or ini)")
    return path
