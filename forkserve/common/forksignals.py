"""The master's signals to a worker, held back from the fork until the worker can act on them.

The zygote ignores TERM and INT (a Ctrl-C or systemd's TERM to the whole group is the master's to
act on) and a forked child inherits that. A TERM the master sent a worker between its fork and its
own handlers was therefore discarded, and the worker served on until --graceful-timeout's SIGKILL:
a server stopped while a worker booted took 30 s to exit. So the zygote blocks these signals
around the fork; one sent in that window stays pending in the child, which unblocks it once its
handler (or the default action it wants) is in place. Fork clears a child's pending signals but
keeps its mask, so none meant for the zygote reaches a worker.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable

# Stop (graceful, interrupted, immediate), reopen the logs, dump the stacks.
STOPS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})
HELD = STOPS | {signal.SIGUSR1, signal.SIGUSR2}


def fork() -> int:
    """os.fork(), with HELD blocked in the child (until it calls release) and the parent's mask kept."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        raise
    if pid:
        # Only the parent: a child that restored the mask here would reopen the window.
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return pid


def release(signals: Iterable[signal.Signals] = HELD) -> None:
    """Deliver what was held of SIGNALS, now that this process's dispositions for them are set."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
