"""forksignals.fork: a stop sent to a child between its fork and its handlers is held, not lost.

The zygote ignores TERM (a group-wide TERM is the master's to act on), and its children inherit
that; a TERM the master sent a worker still booting used to be discarded, and the stop waited for
--graceful-timeout's SIGKILL. Run in a fresh interpreter: the signal mask is the process's own.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from forkserve.common import forksignals

    fork = forksignals.fork if sys.argv[1] == "held" else os.fork
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as the zygote has it
    ready_r, ready_w = os.pipe()
    sent_r, sent_w = os.pipe()
    pid = fork()
    if pid == 0:
        os.write(ready_w, b"r")
        os.read(sent_r, 1)  # the TERM has been sent: now the worker sets its dispositions
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        forksignals.release()
        os._exit(0)  # still alive: the TERM was lost
    os.read(ready_r, 1)
    os.kill(pid, signal.SIGTERM)
    os.write(sent_w, b"s")
    _, status = os.waitpid(pid, 0)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    print(os.WTERMSIG(status) if os.WIFSIGNALED(status) else -os.WEXITSTATUS(status), len(mask))
    """
)


@pytest.mark.parametrize(
    ("fork", "outcome"),
    [
        # The TERM waits in the blocked child and ends it once released; the parent's mask is as it was.
        ("held", f"{int(signal.SIGTERM)} 0"),
        # The oracle: a plain fork loses it (the child exits 0), which is the bug this prevents.
        ("plain", "0 0"),
    ],
)
def test_a_term_sent_while_the_child_boots_ends_it_once_released(fork, outcome):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, fork], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.split() == outcome.split(), done.stderr
