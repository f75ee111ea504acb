"""The master's loop survives its own steps' failures: each step is guarded, none ends the loop.

Every worker depends on the master; a master that died of an error it could have lived through
(an fd limit reached while reaping, a bug in one message's handling) would take them all down. So
each step of the loop runs in ``LoopGuard.step``: the first failure of a step is logged with its
traceback, repeats are counted and summarised (never a storm), and while steps keep failing the
loop pauses a little longer each pass (a readable fd whose handler fails would otherwise spin).
The resource errors it is meant for are handled where they happen (see ``policy.oserrors``); this
is the net under everything else.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

logger = logging.getLogger("forkserve")

MAX_PAUSE = 1.0
FIRST_PAUSE = 0.01


class LoopGuard:
    def __init__(self) -> None:
        self.failures: dict[str, int] = {}
        self.failed_this_pass = False
        self._pause = 0.0

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as error:
            self.failed_this_pass = True
            count = self.failures[what] = self.failures.get(what, 0) + 1
            if count == 1:
                logger.exception("the master's loop failed while %s; it carries on", what)
            elif count & (count - 1) == 0:  # 2, 4, 8, ...: a summary, never a storm
                logger.error("the master's loop failed %d times in a row while %s: %r", count, what, error)
        else:
            if self.failures.pop(what, 0) > 1:
                logger.info("the master's loop is %s again", what)

    def end_pass(self) -> float:
        """Seconds to pause before the next pass: 0 while all is well, growing while steps fail."""
        if self.failed_this_pass:
            self._pause = min(MAX_PAUSE, max(FIRST_PAUSE, self._pause * 2))
        else:
            self._pause = 0.0
        self.failed_this_pass = False
        return self._pause
