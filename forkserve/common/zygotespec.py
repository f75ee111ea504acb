"""What the master tells a zygote at its start: plain data that survives exec (fd numbers, not objects).

Shared by both sides: the master builds it (``forkserve.master.zygotes``), the zygote reads it
(``forkserve.zygote.zygote``). Exec'd, it travels as JSON in ``FORKSERVE_ZYGOTE_SPEC``; forked, as
the object itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from forkserve.config.plain import from_plain, to_plain
from forkserve.config.settings import Config

SPEC_VARIABLE = "FORKSERVE_ZYGOTE_SPEC"


@dataclass
class ZygoteSpec:
    """What a zygote needs, as plain data that survives exec (fd numbers, not objects)."""

    app: Any  # an import string, or (fork mode only) the app object
    app_name: str
    generation: int
    config: Config
    listener_fds: list[int]
    scoreboard_fd: int
    scoreboard_capacity: int
    channel_fd: int
    alive_fd: int
    # --env-file's variables, read by the master for this generation; set before the app is imported.
    environ: dict[str, str] = field(default_factory=dict)
    # The private prometheus-client directory (--metrics-bind), exported before the app's import.
    metrics_dir: str | None = None
    # --balance: each slot's hand-off channel (forkserve/common/handoff.py), or the per-worker
    # reuseport sockets.
    balance_fds: list[int] = field(default_factory=list)

    def to_json(self) -> str:
        assert isinstance(self.app, str), "only an import string can cross exec"
        # The master's hooks run in the master only; the workers' must be found again after exec.
        settings = to_plain(self.config, master_hooks=False)
        data = {
            "app": self.app,
            "app_name": self.app_name,
            "generation": self.generation,
            "settings": settings,
            "listener_fds": self.listener_fds,
            "scoreboard_fd": self.scoreboard_fd,
            "scoreboard_capacity": self.scoreboard_capacity,
            "channel_fd": self.channel_fd,
            "alive_fd": self.alive_fd,
            "environ": self.environ,
            "metrics_dir": self.metrics_dir,
            "balance_fds": self.balance_fds,
        }
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ZygoteSpec:
        data = json.loads(text)
        return cls(config=from_plain(data.pop("settings")), **data)
