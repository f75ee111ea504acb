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

from forkserve.common import faults
from forkserve.services.events import FleetEvent
from forkserve.services.resilience import Pacer

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
        self.errors = Pacer("writing event lines")

    def start(self, master: MasterPort) -> None:
        master.events.subscribe(self._log)

    def _log(self, event: FleetEvent) -> None:
        if not logger.isEnabledFor(self.level):
            return
        try:
            faults.check(faults.EVENT_LINES)
            text = event.message if self.json else describe(event)
            fields = {("worker_pid" if key == "pid" else key): value for key, value in event.fields.items()}
            logger.log(self.level, "%s", text, extra={"fields": {"event": event.kind, **fields}})
        except Exception as error:
            # One event's line lost, not every later one (the event log drops failing observers).
            self.errors.failed(error)
        else:
            self.errors.worked()

    def stop(self) -> None:
        pass
