"""Every state a worker can be in, as the master sees it, and every legal move between them.

Rule: everything that changes a worker's lifecycle state goes through ``WorkerRecord.apply`` with
one of the events below, and the table is the whole story. An illegal move raises with the facts,
which in practice means a bug in the master, not a user's mistake.

    SPAWNING   asked the zygote to fork it; no pid yet
    BOOTING    forked; running lifespan startup (its heartbeat already counts)
    READY      serving requests
    DRAINING   told to stop (TERM): finishes in-flight requests, then exits
    KILLING    hung, or out of graceful time: stack dumped, SIGKILL follows
    EXITED     reaped; its scoreboard slot is free again
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class State(enum.Enum):
    SPAWNING = "spawning"
    BOOTING = "booting"
    READY = "ready"
    DRAINING = "draining"
    KILLING = "killing"
    EXITED = "exited"


class Event(enum.Enum):
    FORKED = "forked"  # the zygote reported the pid
    READY = "ready"  # the worker finished lifespan startup and serves
    DRAIN = "drain"  # the master sent TERM (stop, scale-down, reload)
    KILL = "kill"  # hung, or past its graceful deadline
    EXITED = "exited"  # reaped (or its zygote died before forking it)


TRANSITIONS: dict[State, dict[Event, State]] = {
    State.SPAWNING: {Event.FORKED: State.BOOTING, Event.DRAIN: State.DRAINING, Event.EXITED: State.EXITED},
    State.BOOTING: {
        Event.READY: State.READY,
        Event.DRAIN: State.DRAINING,
        Event.KILL: State.KILLING,
        Event.EXITED: State.EXITED,
    },
    State.READY: {Event.DRAIN: State.DRAINING, Event.KILL: State.KILLING, Event.EXITED: State.EXITED},
    State.DRAINING: {Event.KILL: State.KILLING, Event.EXITED: State.EXITED, Event.DRAIN: State.DRAINING},
    State.KILLING: {Event.EXITED: State.EXITED, Event.KILL: State.KILLING, Event.DRAIN: State.KILLING},
    State.EXITED: {},
}

LIVE = frozenset({State.SPAWNING, State.BOOTING, State.READY, State.DRAINING, State.KILLING})
# States in which a worker counts toward the desired number of workers.
SERVING_OR_ABOUT_TO = frozenset({State.SPAWNING, State.BOOTING, State.READY})


class IllegalTransition(RuntimeError):
    pass


@dataclass
class WorkerRecord:
    worker_id: int
    slot: int
    generation: int
    spawned_at: float
    state: State = State.SPAWNING
    pid: int = 0
    ready_at: float | None = None
    # When a DRAINING worker gets SIGKILL, or a KILLING one gets it after its stack dump.
    deadline: float | None = None
    # Why it was told to stop or killed, for the exit log line.
    reason: str = ""
    # Asked to be replaced (--max-requests); retired once its successor serves.
    outgoing: bool = False
    history: list[tuple[float, State]] = field(default_factory=list)

    def apply(self, event: Event, now: float) -> State:
        try:
            new = TRANSITIONS[self.state][event]
        except KeyError:
            raise IllegalTransition(
                f"can't handle event {event.value} for worker {self.worker_id} (pid {self.pid}) "
                f"in state {self.state.value}"
            ) from None
        if new is not self.state:
            self.history.append((now, new))
        self.state = new
        if new is State.READY:
            self.ready_at = now
        return new

    @property
    def live(self) -> bool:
        return self.state in LIVE
