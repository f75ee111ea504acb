"""When the zygote may leave and when one must come back (``--zygote-idle-exit``), and what to call it.

The zygote is a template: the workers are forked from its pages and share them until they write to
them. An app whose requests read many Python objects writes their reference counts, so every worker
soon holds a private copy of every page it uses, and the zygote's originals are then held by the
zygote alone (docs/design.md, "Memory"). With the setting, the master trades the fast fork of the
next worker for those pages: once the fleet is full and the zygote has been asked for no worker for
the set time, it is retired; the next worker wanted first starts a fresh zygote (an exec and the
app's import), and the workers wanted while it loads wait for that one, never each for their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from forkserve.policy.fleet import WorkerView
from forkserve.policy.lifecycle import State


class ZygoteMove(Enum):
    STAY = "stay"  # nothing to do
    RETIRE = "retire"  # the fleet is full and the zygote idle: let it exit, a planned exit
    START = "start"  # a worker is wanted and no zygote can fork it: start one (it loads, then forks)


@dataclass(frozen=True)
class ZygoteView:
    running: bool  # the current generation's zygote has loaded and was not told to leave
    starting: bool  # a zygote is loading, or one is to be tried again after a failure (backed off)
    fleet_full: bool  # each worker number 1..N has a serving worker of the current generation
    spawn_wanted: bool  # the fleet plan wants a worker started now
    idle_for: float  # seconds since the zygote loaded or was last asked for a worker
    reloading: bool  # a reload's zygotes are the reload's business until it ends


def zygote_move(view: ZygoteView, *, idle_exit: float | None) -> ZygoteMove:
    """What the master does about the current generation's zygote; IDLE_EXIT None: the setting is off."""
    if idle_exit is None or view.reloading:
        return ZygoteMove.STAY
    if view.running:
        if view.fleet_full and not view.spawn_wanted and view.idle_for >= idle_exit:
            return ZygoteMove.RETIRE
        return ZygoteMove.STAY
    if view.spawn_wanted and not view.starting:
        return ZygoteMove.START
    return ZygoteMove.STAY


def fleet_full(workers: Iterable[WorkerView], *, desired: int, generation: int) -> bool:
    """Every worker number from 1 to DESIRED serves, of GENERATION, and none asked to be replaced."""
    serving = {
        w.worker_id
        for w in workers
        if w.state is State.READY and w.generation == generation and not w.outgoing
    }
    return serving >= set(range(1, desired + 1))


class ZygoteState(Enum):
    """The current generation's zygote, as ``ctl status`` and ``/metrics`` show it."""

    RUNNING = "running"  # loaded: forks a worker in milliseconds
    STARTING = "starting"  # loading the app (at start, after a crash, or for a worker wanted)
    RETIRED = "retired"  # exited on purpose (--zygote-idle-exit): the next worker starts a fresh one
    FAILED = "failed"  # could not be started or could not load: tried again, backed off
    NONE = "none"  # the server is stopping, and the zygote has gone


def zygote_state(
    *, running: bool, loading: bool, retrying: bool, retired: bool, stopping: bool
) -> ZygoteState:
    if running:
        return ZygoteState.RUNNING
    if stopping:
        return ZygoteState.NONE
    if loading:
        return ZygoteState.STARTING
    if retrying:
        return ZygoteState.FAILED
    if retired:
        return ZygoteState.RETIRED
    # Between a crash and its replacement's start: the master starts one in the same loop pass.
    return ZygoteState.STARTING
