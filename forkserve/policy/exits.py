"""How a process ended, in words an operator can act on."""

from __future__ import annotations

import os
import signal

_SIGNAL_HINTS = {
    signal.SIGKILL: "perhaps out of memory? check dmesg for the OOM killer",
    signal.SIGSEGV: "a crash in native code",
    signal.SIGBUS: "a crash in native code",
    signal.SIGABRT: "the process aborted",
}

_EXIT_HINTS = {
    3: "the app failed to boot",
}


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_status(status: int, *, killed_by_us: bool = False) -> str:
    """Turn a waitpid() status into words: 'exited with code 1', 'was killed by SIGKILL (...)'.

    ``killed_by_us``: forkserve itself sent the SIGKILL (hung, or past its graceful timeout), so
    the out-of-memory hint would mislead.
    """
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if killed_by_us and number == signal.SIGKILL:
            return "was killed by SIGKILL (sent by forkserve)"
        hint = _SIGNAL_HINTS.get(signal.Signals(number)) if number in signal.valid_signals() else None
        words = f"was killed by {signal_name(number)}"
        return f"{words} ({hint})" if hint else words
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        if code == 0:
            return "exited cleanly"
        hint = _EXIT_HINTS.get(code)
        return f"exited with code {code} ({hint})" if hint else f"exited with code {code}"
    return f"ended with status {status}"


def exit_code_of(status: int) -> int:
    """The exit code a shell would show: the code, or 128 + the signal number."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1
