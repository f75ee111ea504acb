"""Code generations and their zygotes: which generation serves, which is loading, which can go.

Generation 1 is the code the server started with; each HUP starts generation N+1. For an import
string every generation has its own zygote (a fresh interpreter that imported the code anew). For
an app object one zygote serves every generation, since an object cannot be re-imported.

    pending   a zygote still loading a HUP's code; on "loaded" it becomes current
    current   the generation new workers are forked from
    retiring  zygotes of generations that no longer serve, told to leave (EOF on their channel)

A generation that fails to load or to boot never becomes (or stops being) current: the previous
generation that served keeps serving.
"""

from __future__ import annotations

import logging
import os
from enum import Enum

from forkserve.master import zygotes
from forkserve.master.registry import waitpid
from forkserve.master.zygotes import ZygoteHandle

logger = logging.getLogger("forkserve")


class ZygoteExit(Enum):
    EXPECTED = "expected"  # retired, or the server is stopping
    FAILED_LOADING = "failed loading"  # died before it could say "loaded" or "failed"
    REPLACE = "replace"  # the current generation's zygote died: start another for it
    IGNORE = "ignore"  # a zygote nobody needs any more


class Generations:
    def __init__(self) -> None:
        self.zygotes: list[ZygoteHandle] = []
        self.current = 0
        self.newest = 0
        self.pending: ZygoteHandle | None = None
        self.ready: set[int] = set()
        # The generation whose zygote exited on purpose (--zygote-idle-exit) and has not come back.
        self.idle_retired: int | None = None

    def next_number(self) -> int:
        self.newest += 1
        return self.newest

    def add_pending(self, handle: ZygoteHandle) -> None:
        if self.pending is not None:
            if self.pending.generation == self.current:
                logger.info("generation %d replaces the zygote being started again", handle.generation)
            else:
                logger.info("reload requested again: abandoning generation %d", self.pending.generation)
            zygotes.retire(self.pending)
        self.zygotes.append(handle)
        self.pending = handle

    def share_zygote(self, generation: int) -> None:
        """Fork mode: the one zygote forks the new generation's workers too."""
        self.zygotes[-1].generations.add(generation)
        self.current = generation

    def loaded(self, handle: ZygoteHandle) -> bool:
        """Note a zygote's "loaded"; True when that made its generation current."""
        handle.loaded = True
        if handle is not self.pending:
            return False
        self.pending = None
        self.current = handle.generation
        self.idle_retired = None
        return True

    def failed(self, handle: ZygoteHandle) -> None:
        handle.failed = True
        if handle is self.pending:
            self.pending = None
        zygotes.retire(handle)

    def mark_ready(self, generation: int) -> None:
        self.ready.add(generation)

    @property
    def ever_ready(self) -> bool:
        return bool(self.ready)

    def revert(self, failed_generation: int) -> int | None:
        """A generation failed to boot: go back to the newest one that served, if any."""
        previous = max((g for g in self.ready if g < failed_generation), default=None)
        if previous is None:
            return None
        self.current = previous
        for handle in self.zygotes:
            if failed_generation in handle.generations and previous not in handle.generations:
                zygotes.retire(handle)
        return previous

    def current_zygote(self) -> ZygoteHandle | None:
        """The zygote that forks the current generation's workers now, if one has loaded and stays."""
        for handle in reversed(self.zygotes):
            leaving = handle.exited or handle.retiring
            if self.current in handle.generations and handle.loaded and not leaving:
                return handle
        return None

    def retire_idle_zygote(self, handle: ZygoteHandle) -> None:
        """--zygote-idle-exit: a planned exit; the next worker wanted starts a fresh zygote."""
        self.idle_retired = handle.generation
        zygotes.retire(handle)

    def classify_exit(self, handle: ZygoteHandle, *, stopping: bool) -> ZygoteExit:
        if handle.retiring or stopping:
            return ZygoteExit.EXPECTED
        if not handle.loaded and not handle.failed:
            return ZygoteExit.FAILED_LOADING
        if handle.failed or self.current not in handle.generations:
            return ZygoteExit.IGNORE
        return ZygoteExit.REPLACE

    def forget(self, handle: ZygoteHandle) -> None:
        self.zygotes.remove(handle)

    def retire_idle(self, live_generations: set[int]) -> None:
        for handle in self.zygotes:
            if handle.retiring or handle is self.pending or self.current in handle.generations:
                continue
            if not handle.generations & live_generations:
                logger.debug("retiring the zygote of generation %d", handle.generation)
                zygotes.retire(handle)
        self.zygotes = [z for z in self.zygotes if not (z.exited and z.retiring)]

    def retire_all(self) -> None:
        for handle in self.zygotes:
            zygotes.retire(handle)

    def all_exited(self) -> bool:
        return all(handle.exited for handle in self.zygotes)

    def close_in_child(self) -> None:
        """In a process forked from the master: drop the master's ends of every zygote."""
        for handle in self.zygotes:
            handle.channel.close()
            os.close(handle.pidfd)

    def kill_all(self) -> None:
        for handle in self.zygotes:
            if not handle.exited:
                zygotes.kill(handle)
                waitpid(handle.pid, block=True)
                os.close(handle.pidfd)
                handle.exited = True
                if handle.proc is not None:
                    handle.proc.returncode = -9
            handle.channel.close()
