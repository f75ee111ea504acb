"""How a service loop lives through an error it can survive: log it once, pause, go on.

When the machine runs out of something (file descriptors: EMFILE, ENFILE; memory: ENOMEM; EAGAIN),
the call that failed will fail again at once: a loop that retries immediately spins a CPU, and one
that logs each failure writes thousands of lines a second, which is how a full disk follows a full
fd table. A loop that returns on the error is worse: /health stops answering forever. So each loop
keeps a ``Pacer``: the first failure of a run is logged (what failed and that it will retry), the
pause before the next try doubles from ``first`` up to ``cap``, while it keeps failing one summary
line per ``every`` seconds says how many more failures there were, and the first success after a
logged run says that the loop works again. A new run within ``every`` seconds of the last line is
counted for the next summary rather than logged. The decisions are pure (``now`` in, what to log and how long
to wait out), so the table of them is tested with a fake clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from forkserve.policy.backoff import restart_delay

logger = logging.getLogger("forkserve")

FIRST_PAUSE = 0.05
MAX_PAUSE = 2.0
SUMMARY_EVERY = 60.0


@dataclass(frozen=True)
class Step:
    pause: float  # seconds to wait before trying again
    log: str | None  # the line to log now, if any


class Pacer:
    """The errors of one loop (WHAT names it in the log: "the control socket's accept")."""

    def __init__(
        self,
        what: str,
        *,
        first: float = FIRST_PAUSE,
        cap: float = MAX_PAUSE,
        every: float = SUMMARY_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.first, self.cap, self.every = first, cap, every
        self.clock = clock
        self.failures = 0  # in the current run of failures
        self.unlogged = 0  # failures since the last line about them
        self.logged_at: float | None = None  # when the last line about a failure was logged
        self.announced = False  # a "failed" line was logged and no "works again" since
        self._lock = threading.Lock()

    def decide(self, error: BaseException, now: float) -> Step:
        self.failures += 1
        pause = restart_delay(self.failures, first=self.first, cap=self.cap)
        quiet = self.logged_at is None or now - self.logged_at >= self.every
        if self.failures == 1 and quiet:
            self.logged_at, self.unlogged, self.announced = now, 0, True
            return Step(pause, f"{self.what} failed: {_describe(error)}; pausing and retrying until it works")
        self.unlogged += 1
        if quiet:
            count, self.unlogged, self.logged_at = self.unlogged, 0, now
            cause = _describe(error)
            return Step(pause, f"{self.what} still failing: {count} more times since the last line ({cause})")
        return Step(pause, None)

    def decide_recovered(self) -> str | None:
        """The line for a success after failures; None when the failure was not told either.

        An error that comes and goes (a loop at the very edge of its fd limit) thus costs at most
        one "failed", one "works again" and one summary line a minute, not a pair per flap.
        """
        if not self.failures:
            return None
        count, self.failures = self.failures, 0
        if not self.announced:
            return None
        self.announced = False
        return f"{self.what} works again after {count} failure{'' if count == 1 else 's'}"

    # Effects: the loop calls these.

    def failed(self, error: BaseException) -> float:
        """Log (when due) and return the pause before the next try."""
        with self._lock:  # a pool's threads may share one pacer
            step = self.decide(error, self.clock())
        if step.log is not None:
            logger.warning("%s", step.log)
        return step.pause

    def worked(self) -> None:
        with self._lock:
            line = self.decide_recovered()
        if line is not None:
            logger.info("%s", line)


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {error}"
