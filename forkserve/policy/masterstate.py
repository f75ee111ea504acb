"""The master's own state: serving, reloading, stopping, stopped, and every legal move between them.

Rule: like ``lifecycle.py`` for a worker, everything that changes the master's state goes through
``MasterState.apply`` with an event, and the table below is the whole of it. The master's loop and
the services read the state; nothing keeps a flag of its own.

    SERVING   --Reload(g)-->      RELOADING(g)   a HUP, ``ctl reload``, --reload, the API
    RELOADING --Reload(g')-->     RELOADING(g')  a HUP during a reload: the newer generation is awaited
    RELOADING --ReloadEnded(g)--> SERVING        generation g serves everywhere, or its reload aborted
    SERVING, RELOADING --Stop(mode)--> STOPPING(mode)
    STOPPING(graceful) --Stop(immediate)--> STOPPING(immediate)   a QUIT (or second INT) escalates
    any --Stopped--> STOPPED                     ``run()`` returned or raised

Requests arrive from signals and other threads at any moment, so some events are *ignored* rather
than illegal, each for a stated reason (``Ignored``): a reload while stopping, the end of a reload
that is no longer the one awaited, a stop that would not escalate. Moves out of STOPPED are
illegal (``IllegalMove``): the loop that applies them has ended.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Phase(enum.Enum):
    SERVING = "serving"
    RELOADING = "reloading"
    STOPPING = "stopping"
    STOPPED = "stopped"


class ShutdownMode(enum.Enum):
    """How the whole server stops: TERM (drain, then exit) or QUIT (at once)."""

    GRACEFUL = "graceful"
    IMMEDIATE = "immediate"


@dataclass(frozen=True)
class Reload:
    generation: int
    at: float


@dataclass(frozen=True)
class ReloadEnded:
    generation: int


@dataclass(frozen=True)
class Stop:
    mode: ShutdownMode


@dataclass(frozen=True)
class Stopped:
    pass


MasterEvent = Reload | ReloadEnded | Stop | Stopped

# (phase, kind of event) -> the phase it leads to. A pair that is absent is illegal.
TRANSITIONS: dict[tuple[Phase, type], Phase] = {
    (Phase.SERVING, Reload): Phase.RELOADING,
    (Phase.SERVING, ReloadEnded): Phase.SERVING,  # always ignored: no reload is awaited
    (Phase.SERVING, Stop): Phase.STOPPING,
    (Phase.SERVING, Stopped): Phase.STOPPED,
    (Phase.RELOADING, Reload): Phase.RELOADING,
    (Phase.RELOADING, ReloadEnded): Phase.SERVING,
    (Phase.RELOADING, Stop): Phase.STOPPING,
    (Phase.RELOADING, Stopped): Phase.STOPPED,
    (Phase.STOPPING, Reload): Phase.STOPPING,  # always ignored: nothing new starts while stopping
    (Phase.STOPPING, ReloadEnded): Phase.STOPPING,  # always ignored: the stop retired every generation
    (Phase.STOPPING, Stop): Phase.STOPPING,
    (Phase.STOPPING, Stopped): Phase.STOPPED,
}


class IllegalMove(RuntimeError):
    """A bug in the master, never a user's mistake."""


class Ignored(enum.Enum):
    """Why an event changed nothing (``MasterState.apply`` returns it)."""

    STOPPING = "the server is stopping"
    NO_RELOAD = "no reload is under way"
    STALE_RELOAD = "a later reload superseded that generation"
    NOT_AN_ESCALATION = "already stopping at least as fast"


@dataclass
class MasterState:
    phase: Phase = Phase.SERVING
    reload_generation: int | None = None  # while RELOADING: the generation awaited
    reload_started: float = 0.0
    stop_mode: ShutdownMode | None = None  # from STOPPING on
    history: list[tuple[MasterEvent, Phase]] = field(default_factory=list)

    @property
    def stopping(self) -> bool:
        return self.phase in (Phase.STOPPING, Phase.STOPPED)

    @property
    def reloading(self) -> int | None:
        """The generation a reload awaits, or None."""
        return self.reload_generation if self.phase is Phase.RELOADING else None

    def apply(self, event: MasterEvent) -> Ignored | None:
        """Move by EVENT; None when the state changed, else why it did not."""
        target = TRANSITIONS.get((self.phase, type(event)))
        if target is None:
            raise IllegalMove(f"can't handle {event!r} when the master is {self.phase.value}")
        ignored = self._ignored(event)
        if ignored is not None:
            return ignored
        if isinstance(event, Reload):
            self.reload_generation, self.reload_started = event.generation, event.at
        elif isinstance(event, ReloadEnded):
            self.reload_generation = None
        elif isinstance(event, Stop):
            self.stop_mode, self.reload_generation = event.mode, None
        self.phase = target
        self.history.append((event, target))
        return None

    def _ignored(self, event: MasterEvent) -> Ignored | None:
        if self.phase is Phase.STOPPING and isinstance(event, (Reload, ReloadEnded)):
            return Ignored.STOPPING
        if isinstance(event, ReloadEnded):
            if self.phase is Phase.SERVING:
                return Ignored.NO_RELOAD
            if event.generation != self.reload_generation:
                return Ignored.STALE_RELOAD
        if isinstance(event, Stop) and not _escalates(self.stop_mode, event.mode):
            return Ignored.NOT_AN_ESCALATION
        return None


def _escalates(current: ShutdownMode | None, requested: ShutdownMode) -> bool:
    return current is None or (current is ShutdownMode.GRACEFUL and requested is ShutdownMode.IMMEDIATE)
