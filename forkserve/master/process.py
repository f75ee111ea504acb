"""Small OS-facing helpers the master needs: subreaper, pidfile, signal capture."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterable
from types import FrameType
from typing import Any

_PR_SET_CHILD_SUBREAPER = 36


def set_child_subreaper(enabled: bool) -> bool:
    """Adopt orphaned descendants (the double-forked workers); False where the OS cannot."""
    if not sys.platform.startswith("linux"):
        return False
    # The process's own symbols, libc's among them: ctypes.util.find_library would run ldconfig in a
    # subprocess and leave shutil, tempfile and the compression modules loaded in the master.
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1 if enabled else 0, 0, 0, 0)) == 0


def write_pidfile(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as handle:
        handle.write(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove_pidfile(path: str) -> None:
    """Remove PATH only while it still names this process (a successor may own it now)."""
    with contextlib.suppress(OSError, ValueError):
        with open(path) as handle:
            if int(handle.read().strip() or 0) != os.getpid():
                return
        os.unlink(path)


def signal_process(pid: int, number: int) -> bool:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def _noop(number: int, frame: FrameType | None) -> None:
    """The real work happens in the master's loop, woken by set_wakeup_fd's byte."""


class SignalCapture:
    """Route signals to the master's loop through one wake-up socket, and put everything back after.

    Python runs signal handlers between bytecodes of the main thread; a handler that did work
    could run in the middle of the loop's own bookkeeping. Instead the handlers do nothing and
    ``signal.set_wakeup_fd`` writes each signal's number to a socket the loop selects on, the way
    the stdlib's forkserver does. Only the main thread may do this; elsewhere (an embedding host's
    thread) nothing is installed and the host calls ``stop()``.
    """

    def __init__(self, wake_w: socket.socket, numbers: Iterable[int]) -> None:
        self.wake_w = wake_w
        self.numbers = list(numbers)
        self.previous: dict[int, Any] = {}
        self.previous_wakeup = -1
        self.active = False

    def install(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        self.previous_wakeup = signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        for number in self.numbers:
            self.previous[number] = signal.signal(number, _noop)
        self.active = True
        return True

    def restore(self) -> None:
        if not self.active:
            return
        for number, handler in self.previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(self.previous_wakeup)
        self.active = False
