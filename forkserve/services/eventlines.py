"""Lifecycle events as structured log lines: every fleet event, with its fields, in the one stream.

The master already writes a sentence for each thing that happens ("worker 2 (pid 81, generation
1) was killed by SIGKILL"); this service adds the same event as data (``event``, ``worker_id``,
``reason``, ...) so a log pipeline can count respawns or chart reloads without parsing English.
With ``--log-format json`` the lines are INFO, each a JSON object whose keys are the event's
fields. In the text format they are DEBUG, shown as ``event=... key=value``: a person reading the
text log already has the sentence, and would read everything twice.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from forkserve.services.events import FleetEvent

if TYPE_CHECKING:
    from forkserve.services.port import MasterPort

logger = logging.getLogger("forkserve.events")


def describe(event: FleetEvent) -> str:
    pairs = " ".join(f"{key}={value}" for key, value in event.fields.items())
    return f"event={event.kind} {pairs}: {event.message}" if pairs else f"event={event.kind}: {event.message}"


class EventLines:
    name = "event-log"

    def __init__(self, log_format: str) -> None:
        self.json = log_format == "json"
        self.level = logging.INFO if self.json else logging.DEBUG

    def start(self, master: MasterPort) -> None:
        master.events.subscribe(self._log)

    def _log(self, event: FleetEvent) -> None:
        if logger.isEnabledFor(self.level):
            text = event.message if self.json else describe(event)
            fields = {("worker_pid" if key == "pid" else key): value for key, value in event.fields.items()}
            logger.log(self.level, "%s", text, extra={"fields": {"event": event.kind, **fields}})

    def stop(self) -> None:
        pass
