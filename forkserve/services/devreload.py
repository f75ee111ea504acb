"""--reload (development): a thread in the master that turns a saved .py file into a rolling reload.

It uses the same path as HUP, so a change goes live without a dropped request and a syntax error
leaves the running code serving. watchfiles (Rust notify underneath) does the watching: inotify
where it can, and debouncing, which an editor's save-as-rename-and-write needs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from forkserve.common import faults
from forkserve.services.resilience import Pacer

logger = logging.getLogger("forkserve")


class SourceWatcher:
    def __init__(self, paths: Sequence[str], on_change: Callable[[], None]) -> None:
        self.paths = [str(Path(path).resolve()) for path in paths]
        self.on_change = on_change
        self.errors = Pacer("--reload: watching for changes")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forkserve-reload", daemon=True)

    def start(self) -> None:
        logger.info("--reload: watching %s for changes to .py files", ", ".join(self.paths))
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
        changes_seen = watchfiles.watch(
            *self.paths, watch_filter=watchfiles.PythonFilter(), stop_event=self._stop, raise_interrupt=False
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
