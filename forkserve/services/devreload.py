"""--reload (development): a thread in the master that turns a saved file into a rolling reload.

It uses the same path as HUP, so a change goes live without a dropped request and a syntax error
leaves the running code serving. watchfiles (Rust notify underneath) does the watching: inotify
where it can, and debouncing, which an editor's save-as-rename-and-write needs.

Which files count is uvicorn's rule (``--reload-include``/``--reload-exclude``, the same
defaults), decided by ``ReloadFilter``, a pure function of the path: a file is watched when its
name matches an include glob and neither it nor any directory above it (below the watched
directory) matches an exclude glob, so ``.*`` keeps ``.git`` and ``.venv`` out. An explicit
include wins over a default exclude that names the same pattern.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path, PurePath
from typing import Any

from forkserve.common import faults
from forkserve.services.resilience import Pacer

logger = logging.getLogger("forkserve")

DEFAULT_INCLUDES = ("*.py",)
DEFAULT_EXCLUDES = (".*", ".py[cod]", ".sw.*", "~*")


class ReloadFilter:
    def __init__(
        self, roots: Sequence[str], includes: Sequence[str] = (), excludes: Sequence[str] = ()
    ) -> None:
        self.roots = [PurePath(root) for root in roots]
        self.includes = [*DEFAULT_INCLUDES, *includes]
        self.excludes = [pattern for pattern in DEFAULT_EXCLUDES if pattern not in includes] + [
            pattern for pattern in excludes if pattern not in DEFAULT_EXCLUDES
        ]

    def __call__(self, _change: Any, path: str) -> bool:
        pure = PurePath(path)
        parts = pure.parts
        for root in self.roots:
            if pure.is_relative_to(root):
                parts = pure.relative_to(root).parts
                break
        if not parts or not any(fnmatch.fnmatchcase(parts[-1], pattern) for pattern in self.includes):
            return False
        return not any(fnmatch.fnmatchcase(part, pattern) for part in parts for pattern in self.excludes)


class SourceWatcher:
    def __init__(
        self,
        paths: Sequence[str],
        on_change: Callable[[], None],
        includes: Sequence[str] = (),
        excludes: Sequence[str] = (),
        delay: float = 0.25,
    ) -> None:
        self.paths = [str(Path(path).resolve()) for path in paths]
        self.on_change = on_change
        self.errors = Pacer("--reload: watching for changes")
        self.filter = ReloadFilter(self.paths, includes, excludes)
        self.delay = delay
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forkserve-reload", daemon=True)

    def start(self) -> None:
        logger.info(
            "--reload: watching %s for changes to %s", ", ".join(self.paths), ", ".join(self.filter.includes)
        )
        self._thread.start()

    def _run(self) -> None:
        # An error (the inotify watch limit, EMFILE) pauses the watching, which then starts over.
        while not self._stop.is_set():
            try:
                self._watch()
            except Exception as error:
                self._stop.wait(self.errors.failed(error))

    def _watch(self) -> None:
        import watchfiles  # only a server started with --reload pays for it

        faults.check(faults.DEVRELOAD_WATCH)
        step = max(1, int(self.delay * 1000))
        changes_seen = watchfiles.watch(
            *self.paths,
            watch_filter=self.filter,
            stop_event=self._stop,
            raise_interrupt=False,
            step=step,
            debounce=max(1600, step),
        )
        for changes in changes_seen:
            self.errors.worked()
            names = sorted({Path(path).name for _, path in changes})
            logger.info(
                "--reload: %s changed; reloading", ", ".join(names[:5]) + ("..." if len(names) > 5 else "")
            )
            self.on_change()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
