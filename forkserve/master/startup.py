"""What the master does before the first process exists: check what can be checked, then bind.

Everything here fails as a one-line ``ForkserveError`` with its exit code (a bad setting 2, an
address in use 4), before any zygote or worker is started: an error found now is a message, the
same error found in a worker would be a boot failure. The order matters and is the one below:
the installed uvicorn (forkserve.common.supported), then the working directory (relative paths in the
other settings depend on it), then the files the settings name, then the umask (it applies to the
unix sockets bound next), then the identity to drop to (resolved while /etc/passwd is still
readable), then the sockets.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from forkserve.common import privileges, sockets, supported, tls
from forkserve.common.apppath import prepare_chdir
from forkserve.config.envfile import read_env_file
from forkserve.config.settings import DEFAULTS, Config
from forkserve.config.static import check_mounts
from forkserve.errors import ConfigError
from forkserve.master import upgrade
from forkserve.services import systemd

logger = logging.getLogger("forkserve")


@dataclass
class Prepared:
    app_environ: dict[str, str] = field(default_factory=dict)  # --env-file's variables
    identity: privileges.Identity | None = None  # --user/--group, for the zygotes
    listeners: list[sockets.Listener] = field(default_factory=list)
    activated: int = 0  # how many of the listeners systemd passed in (they come first)


def check_settings(config: Config, *, exec_mode: bool) -> dict[str, str]:
    """Check the settings that name files or need an import string; return --env-file's variables."""
    supported.check_uvicorn()  # first: with another uvicorn nothing after this would serve
    if config.reload and not exec_mode:
        raise ConfigError(
            "--reload needs the app as an import string (module:app): an app object cannot be "
            "re-imported; pass forkserve.run('module:app', reload=True)"
        )
    if config.zygote_idle_exit is not None and not exec_mode:
        raise ConfigError(
            "--zygote-idle-exit needs the app as an import string (module:app): a zygote started "
            "again must import the app, and an app object cannot cross an exec; pass "
            "forkserve.run('module:app', zygote_idle_exit=...)"
        )
    if config.chdir:
        # Once, here: zygotes and workers inherit the directory (and the relative --app-dir).
        prepare_chdir(config.chdir)
    app_environ = read_env_file(config.env_file) if config.env_file else {}
    tls.server_context(config)
    check_mounts(config.static)
    return app_environ


def bind(config: Config) -> tuple[privileges.Identity | None, list[sockets.Listener], int]:
    """Set the umask, resolve the identity to drop to, and open every listening socket."""
    if config.umask is not None:
        os.umask(config.umask)
    identity = privileges.resolve_identity(config.user, config.group)
    privileges.check_can_switch(identity)
    activated = systemd.take_listen_fds()
    listeners = sockets.open_listeners(
        config.bind, config.backlog, inherited=upgrade.inherited_fds(), activated=activated,
        binds_are_default=config.bind == DEFAULTS["bind"], reuse_port=config.balance == "reuseport",
    )  # fmt: skip
    return identity, listeners, len(activated)


def prepare(config: Config, *, exec_mode: bool) -> Prepared:
    app_environ = check_settings(config, exec_mode=exec_mode)
    identity, listeners, activated = bind(config)
    return Prepared(app_environ, identity, listeners, activated)


def log_listeners(config: Config, prepared: Prepared) -> None:
    for index, listener in enumerate(prepared.listeners):
        scheme = "unix" if listener.spec.kind == "unix" else "https" if config.certfile else "http"
        logger.info(
            "Listening at: %s://%s%s", scheme, listener.address.removeprefix("unix:"),
            " (socket activation)" if index < prepared.activated else "",
        )  # fmt: skip
