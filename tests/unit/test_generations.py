"""What a zygote's exit means (``Generations.classify_exit``), from a table."""

from __future__ import annotations

import socket

import pytest

from forkserve.master.generations import Generations, ZygoteExit
from forkserve.master.zygotes import ZygoteHandle

# (its generation, loaded, failed, retiring, the server stopping) -> what its exit means,
# with generation 2 current.
CASES = [
    ((2, True, False, False, False), ZygoteExit.REPLACE),  # the serving generation's zygote died
    ((2, True, False, True, False), ZygoteExit.EXPECTED),  # retired: it was asked to leave
    ((2, True, False, False, True), ZygoteExit.EXPECTED),  # the server is stopping
    ((3, False, False, False, False), ZygoteExit.FAILED_LOADING),  # a reload's zygote died importing
    ((3, False, False, False, True), ZygoteExit.EXPECTED),  # ... but the server is stopping anyway
    ((3, False, True, False, False), ZygoteExit.IGNORE),  # it reported "failed" first: already handled
    ((1, True, False, False, False), ZygoteExit.IGNORE),  # an older generation's: nothing to replace
    ((2, True, True, False, False), ZygoteExit.IGNORE),
]


@pytest.mark.parametrize(("case", "expected"), CASES)
def test_classify_exit(case: tuple[int, bool, bool, bool, bool], expected: ZygoteExit) -> None:
    generation, loaded, failed, retiring, stopping = case
    master_end, zygote_end = socket.socketpair()
    try:
        handle = ZygoteHandle(
            pid=0, generation=generation, channel=master_end, pidfd=-1, loaded=loaded, failed=failed,
            retiring=retiring, generations={generation},
        )  # fmt: skip
        generations = Generations()
        generations.current = 2
        assert generations.classify_exit(handle, stopping=stopping) is expected
    finally:
        master_end.close()
        zygote_end.close()
