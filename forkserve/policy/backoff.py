"""Restart back-off and boot-failure verdicts.

A worker that crashes after a long, healthy run is replaced at once: that is the point of a
supervisor. A worker that dies young, again and again, is replaced ever more slowly (doubling,
capped), so a crash loop costs a few forks a minute instead of a fork storm. A worker that fails
while booting before the server ever served is not a crash at all: the app is broken, and the
master stops with exit 3 rather than respawning forever. And when every worker is down at once
(they all back off in step), one worker still starts every ``RESCUE_INTERVAL``: a crash loop
costs a few forks a minute, never a full outage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

# A worker that lived this long was healthy: its death does not count toward a crash loop.
STABLE_AFTER = 10.0
FIRST_DELAY = 0.5
MAX_DELAY = 30.0
# When every worker is down (all backing off together), one may still start this often: a crash
# loop must not turn into a full outage while the back-offs run, nor into a fork storm.
RESCUE_INTERVAL = 1.0
# Forks that fail in a row (a process or memory limit) before the failure is a verdict, not a loop.
SPAWN_TRIES = 3


def restart_delay(consecutive_failures: int, *, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> float:
    """Seconds to wait before the next start, after that many young deaths in a row.

    0 failures (the last one ran long): immediately; then first, 2*first, 4*first, ... up to cap.
    """
    if consecutive_failures <= 0:
        return 0.0
    # The exponent is capped too: 2.0 ** 1024 overflows long before a crash loop would end.
    return float(min(cap, first * 2.0 ** min(consecutive_failures - 1, 64)))


@dataclass
class Backoff:
    """Young-death counts per worker id, and when each id may be started again."""

    stable_after: float = STABLE_AFTER
    failures: dict[int, int] = field(default_factory=dict)
    not_before: dict[int, float] = field(default_factory=dict)

    def record_exit(self, worker_id: int, lifetime: float, now: float, *, planned: bool) -> float:
        """Note that a worker ended; return the delay before its replacement may start."""
        if planned or lifetime >= self.stable_after:
            self.failures[worker_id] = 0
        else:
            self.failures[worker_id] = self.failures.get(worker_id, 0) + 1
        delay = 0.0 if planned else restart_delay(self.failures[worker_id])
        self.not_before[worker_id] = now + delay
        return delay

    def may_start(self, worker_id: int, now: float) -> bool:
        return now >= self.not_before.get(worker_id, 0.0)

    def next_start(self) -> float | None:
        return min(self.not_before.values(), default=None)

    rescue_not_before: float = 0.0
    # Worker forks that failed in a row, whichever worker id: one success clears it.
    spawn_failures: int = 0

    def spawn_failed(self, worker_id: int, now: float) -> float:
        """A fork of WORKER_ID failed: back off as for a crash at birth; return the delay."""
        self.spawn_failures += 1
        return self.record_exit(worker_id, 0.0, now, planned=False)

    def spawned(self) -> None:
        self.spawn_failures = 0

    def may_rescue(self, now: float) -> bool:
        """With no worker serving at all, may one start now despite its back-off?"""
        return now >= self.rescue_not_before

    def rescued(self, now: float) -> None:
        self.rescue_not_before = now + RESCUE_INTERVAL


class Verdict(Enum):
    RESPAWN = "respawn"
    STOP_SERVER = "stop server"
    ABORT_RELOAD = "abort reload"
    SHRINK = "shrink"  # keep the workers that serve, ask for no more: a limit stands in the way


def boot_failure_verdict(
    *, died_booting: bool, server_ever_ready: bool, generation_ever_ready: bool
) -> Verdict:
    """What a worker's death means for the server, from where in its life it died."""
    if not died_booting:
        return Verdict.RESPAWN
    if not server_ever_ready:
        # The very first start failed: the app is broken; respawning would only repeat it.
        return Verdict.STOP_SERVER
    if not generation_ever_ready:
        # New code that never served: keep the old generation serving.
        return Verdict.ABORT_RELOAD
    # Code that has served before failed to boot (a database briefly down): retry, with back-off.
    return Verdict.RESPAWN


def spawn_failure_verdict(
    consecutive: int, *, server_ever_ready: bool, generation_ever_ready: bool, serving: int,
    tries: int = SPAWN_TRIES,
) -> Verdict:  # fmt: skip
    """What CONSECUTIVE failed forks (or spawns) in a row mean: retry (with back-off) until TRIES.

    Then: nothing ever served, stop the server (the limit must be raised first); a reload's new
    generation never served, abort it (the old one serves); a scale-up, or a replacement, cannot
    fork, keep the SERVING workers. With none serving there is nothing to keep: retry, backed off.
    """
    if consecutive < tries:
        return Verdict.RESPAWN
    if not server_ever_ready:
        return Verdict.STOP_SERVER
    if not generation_ever_ready:
        return Verdict.ABORT_RELOAD
    return Verdict.SHRINK if serving > 0 else Verdict.RESPAWN
