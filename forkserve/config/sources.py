"""Merging sources: defaults < config file < environment < keyword arguments or command line.

``resolve`` is a pure function of plain mappings (no ``os.environ`` read inside), so it is tested
from tables; each value remembers where it came from (``--print-config``), and a bad one is named
by its origin (``FORKSERVE_WORKERS``, ``--workers``, ``forkserve.toml: workers =``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from forkserve.config.parsers import (
    BindSpec,
)
from forkserve.config.settings import DEFAULTS, SETTINGS, SETTINGS_BY_NAME, Config, Setting
from forkserve.errors import ConfigError


@dataclass(frozen=True)
class Source:
    """Raw values from one place. ``kind`` decides how a bad value's origin is named."""

    kind: Literal["env", "cli", "kwargs", "file"]
    values: Mapping[str, Any]
    label: str = ""
    where: str = ""  # flags not from the command line (GUNICORN_CMD_ARGS): said before the flag


def _origin(source: Source, spec: Setting, key: str) -> str:
    if source.kind == "cli":
        return f"{source.where}: {spec.flags[-1]}" if source.where else spec.flags[-1]
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
    # Imported here: only a misspelt name needs it, and the master that re-reads its settings
    # (cli/runmaster.py) would hold it for good.
    import difflib

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
    if config.error_logfile is not None and config.log_file not in (None, config.error_logfile):
        raise ConfigError(
            f"--error-logfile {config.error_logfile} and --log-file {config.log_file} name two error "
            "logs; give one of them (they are the same setting under gunicorn's and forkserve's names)"
        )
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
