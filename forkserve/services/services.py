"""Optional parts of the master that run beside its loop: the one place that lists them.

A service starts once the sockets are bound and the scoreboard exists (before the first zygote),
and stops when the master stops. It talks to the master only through what is safe from another
thread: ``master.events`` (subscribe, recent), ``master.call(fn)`` (run ``fn`` on the master's
thread and get its result through a Future), the scoreboard (read-only), and the public
``stop()``/``reload()``/``scale()``. A service that needs a loop of its own runs a daemon thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from forkserve.config.settings import Config
from forkserve.services.balancer import for_config
from forkserve.services.serviceloop import ServiceLoop
from forkserve.services.systemd import SystemdService

DISABLED_SOCKET = ("none", "off")

if TYPE_CHECKING:
    from forkserve.services.port import MasterPort


class Service(Protocol):
    name: str

    def start(self, master: MasterPort) -> None: ...

    def stop(self) -> None: ...


def build_services(config: Config) -> list[Service]:
    """The services this configuration asks for, in the order they start."""
    from forkserve.services.eventlines import EventLines

    services: list[Service] = [EventLines(config.log_format)]
    # systemd's environment, not a setting: under a Type=notify unit it is always wanted.
    notify = SystemdService.from_environ()
    if notify is not None:
        services.append(notify)
    balancer = for_config(config)
    if balancer is not None:
        services.append(balancer)
    # The control socket and the metrics server share one thread (see serviceloop).
    loop = ServiceLoop()
    if (config.control_socket or "").lower() not in DISABLED_SOCKET:
        from forkserve.services.control import ControlService

        services.append(ControlService(config.control_socket, loop))
    if config.metrics_bind:
        from forkserve.services.monitor import MonitorService

        services.append(MonitorService(config, loop))
    if config.config and config.config.endswith(".py"):
        from forkserve.services.gunicornhooks import GunicornHooks

        services.append(GunicornHooks(config))
    return services
