"""waitpid() statuses in words, from statuses built by hand (the inverse of os.waitstatus_to_exitcode)."""

from __future__ import annotations

import os
import signal

import pytest

from forkserve.policy.exits import describe_status, exit_code_of, signal_name

CORE_DUMPED = 0x80


def exited(code: int) -> int:
    return code << 8


def killed(number: int, *, core: bool = False) -> int:
    return number | (CORE_DUMPED if core else 0)


def stopped(number: int) -> int:
    return (number << 8) | 0x7F


@pytest.mark.parametrize(
    ("status", "shell_code"),
    [(exited(0), 0), (exited(1), 1), (exited(3), 3), (exited(255), 255), (killed(signal.SIGKILL), -9)],
)
def test_status_builders_are_what_the_kernel_reports(status: int, shell_code: int) -> None:
    # Guards the builders above: os agrees on what each hand-built status means.
    assert os.waitstatus_to_exitcode(status) == shell_code


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (exited(0), "exited cleanly"),
        (exited(1), "exited with code 1"),
        (exited(2), "exited with code 2"),
        (exited(3), "exited with code 3 (the app failed to boot)"),
        (exited(255), "exited with code 255"),
        (
            killed(signal.SIGKILL),
            "was killed by SIGKILL (perhaps out of memory? check dmesg for the OOM killer)",
        ),
        (killed(signal.SIGSEGV), "was killed by SIGSEGV (a crash in native code)"),
        (killed(signal.SIGSEGV, core=True), "was killed by SIGSEGV (a crash in native code)"),
        (killed(signal.SIGBUS), "was killed by SIGBUS (a crash in native code)"),
        (killed(signal.SIGABRT, core=True), "was killed by SIGABRT (the process aborted)"),
        (killed(signal.SIGTERM), "was killed by SIGTERM"),
        (killed(signal.SIGINT), "was killed by SIGINT"),
        # glibc reserves 32 and 33 for threads: no name, and no hint lookup that could raise.
        (killed(32), "was killed by signal 32"),
        (killed(signal.SIGRTMIN), "was killed by SIGRTMIN"),
        # A stopped child is neither exited nor signalled.
        (stopped(signal.SIGSTOP), f"ended with status {stopped(signal.SIGSTOP)}"),
    ],
)
def test_describe_status(status: int, words: str) -> None:
    assert describe_status(status) == words


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (exited(0), 0),
        (exited(1), 1),
        (exited(3), 3),
        (exited(255), 255),
        # A shell shows a signal death as 128 + the signal number.
        (killed(signal.SIGKILL), 137),
        (killed(signal.SIGTERM), 143),
        (killed(signal.SIGSEGV, core=True), 139),
        (killed(signal.SIGINT), 130),
        # Not a death at all: reported as a generic failure.
        (stopped(signal.SIGSTOP), 1),
    ],
)
def test_exit_code_of(status: int, code: int) -> None:
    assert exit_code_of(status) == code


@pytest.mark.parametrize(
    ("number", "name"),
    [
        (signal.SIGKILL, "SIGKILL"),
        (int(signal.SIGHUP), "SIGHUP"),
        (32, "signal 32"),
        (0, "signal 0"),
        (999, "signal 999"),
    ],
)
def test_signal_name(number: int, name: str) -> None:
    assert signal_name(number) == name
