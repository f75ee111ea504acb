"""The private prometheus-client multiprocess directory: made, folded and removed by the master.

Theory of operation. prometheus-client's multiprocess mode has each process write its metric
values into mmap files named ``<type>_<pid>.db`` (gauges: ``gauge_<mode>_<pid>.db``) in the
directory named by ``PROMETHEUS_MULTIPROC_DIR``, and a collector sums the files at scrape time.
Two things go wrong with pre-fork servers in practice (gunicorn#1394, client_python#275): the
variable must be set by hand, before anything imports prometheus_client, and the directory gains a
set of files for every process that ever lived, so scrapes slow down and the disk fills, worst
with --max-requests recycling.

While --metrics-bind is set forkserve owns a private directory: the master creates it (on tmpfs
when there is one, so the mmap writes never reach a disk), each zygote exports its path before it
imports the app, and the master removes it on exit. A process's files outlive it only until the
next sweep, which folds its counters, histograms and summaries into one archive file per type, so
totals never drop when a worker is replaced, and deletes its gauges, which described a process
that no longer exists. The directory thus holds at most one archive per type plus the files of
the processes alive now.

The obvious alternative, ``prometheus_client.multiprocess.mark_process_dead``, removes only the
``live*`` gauges: the counter files of every dead pid stay, which is exactly the growth users hit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

# The request metrics every worker writes (forkserve.worker.reqstats) and the master reads back.
REQUESTS = "forkserve_requests"
DURATION = "forkserve_request_duration_seconds"
# prometheus-client's defaults, with the 75s dropped and 1 ms and 2.5 ms added: a fast endpoint
# answers in well under 5 ms, where the defaults cannot tell 0.2 ms from 4 ms.
BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")

logger = logging.getLogger("forkserve")

ENV = "PROMETHEUS_MULTIPROC_DIR"
ARCHIVE = "archive"
# Types whose values of a dead process still count (sums over every process that ever lived).
FOLDED_TYPES = ("counter", "histogram", "summary")
DIR_PREFIX = "forkserve-metrics-"
_DIR_NAME = re.compile(re.escape(DIR_PREFIX) + r"(?P<pid>[0-9]+)-")
_DB_NAME = re.compile(
    r"(?P<type>counter|histogram|summary|gauge)_(?:(?P<mode>[a-z]+)_)?(?P<owner>[0-9]+|archive)\.db"
)


@dataclass(frozen=True)
class DbFile:
    name: str
    type: str
    pid: int | None  # None for an archive


def parse_db_name(name: str) -> DbFile | None:
    """What a file in the directory is; None for anything that is not a metrics file."""
    match = _DB_NAME.fullmatch(name)
    if match is None:
        return None
    owner = match["owner"]
    return DbFile(name, match["type"], None if owner == ARCHIVE else int(owner))


@dataclass
class Sweep:
    fold: dict[str, list[str]] = field(default_factory=dict)  # type -> files to fold into its archive
    drop: list[str] = field(default_factory=list)  # files to delete

    def __bool__(self) -> bool:
        return bool(self.fold or self.drop)


def plan_sweep(names: Iterable[str], is_alive: Callable[[int], bool]) -> Sweep:
    """Which files of dead processes to fold into the archives, and which to delete."""
    sweep = Sweep()
    for name in sorted(names):
        db = parse_db_name(name)
        if db is None or db.pid is None or is_alive(db.pid):
            continue
        if db.type in FOLDED_TYPES:
            sweep.fold.setdefault(db.type, []).append(name)
        else:
            sweep.drop.append(name)
    return sweep


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's process now has that pid: ours is gone, but its files wait
    return True


def archive_name(kind: str) -> str:
    return f"{kind}_{ARCHIVE}.db"


def fold(path: str, kind: str, names: Sequence[str]) -> None:
    """Add the values in NAMES to KIND's archive, then delete them.

    The new archive is written beside the old one and renamed over it, so a reader sees the old
    archive or the new one, never half of one. (Readers in this process hold the directory's lock
    across the rename and the deletes, so they never count a folded value twice either.)
    """
    from prometheus_client.mmap_dict import mmap_key

    MmapedDict, MultiProcessCollector = _prometheus_classes()

    archive = os.path.join(path, archive_name(kind))
    sources = [os.path.join(path, name) for name in names]
    inputs = ([archive] if os.path.exists(archive) else []) + sources
    # accumulate=False keeps histogram buckets per bucket, as the files store them.
    merged = MultiProcessCollector.merge(inputs, accumulate=False)
    temporary = archive + ".new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    target = MmapedDict(temporary)
    try:
        for metric in merged:
            for sample in metric.samples:
                labels = sample.labels
                key = mmap_key(
                    metric.name, sample.name, list(labels), list(labels.values()), metric.documentation
                )
                target.write_value(key, sample.value, 0.0)
    finally:
        target.close()
    os.replace(temporary, archive)
    for source in sources:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(source)


def _prometheus_classes() -> tuple[Any, Any]:
    """prometheus-client's file and merge classes (imported late: only the master needs them)."""
    from prometheus_client.mmap_dict import MmapedDict
    from prometheus_client.multiprocess import MultiProcessCollector

    return MmapedDict, MultiProcessCollector


def _runtime_parent() -> str:
    """tmpfs when there is one: the workers write these files on every flush."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()


def stale_dirs(names: Iterable[str], is_alive: Callable[[int], bool]) -> list[str]:
    """Directories left by masters that died without cleaning up (SIGKILL, power loss)."""
    stale = []
    for name in names:
        match = _DIR_NAME.match(name)
        if match and not is_alive(int(match["pid"])):
            stale.append(name)
    return stale


class MultiprocDir:
    """The directory, and the lock that keeps a sweep and a scrape from interleaving."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()

    @classmethod
    def create(cls, parent: str | None = None) -> MultiprocDir:
        parent = parent or _runtime_parent()
        with contextlib.suppress(OSError):
            for name in stale_dirs(os.listdir(parent), pid_alive):
                candidate = os.path.join(parent, name)
                if os.stat(candidate).st_uid == os.getuid():
                    shutil.rmtree(candidate, ignore_errors=True)
        return cls(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=parent))

    def sweep(self) -> Sweep:
        """Fold or drop the files of processes that have ended; safe to call often."""
        with self.lock:
            try:
                names = os.listdir(self.path)
            except FileNotFoundError:
                return Sweep()
            sweep = plan_sweep(names, pid_alive)
            for kind, files in sweep.fold.items():
                try:
                    fold(self.path, kind, files)
                except (OSError, ValueError):
                    logger.exception("could not fold ended workers' %s metrics into the archive", kind)
            for name in sweep.drop:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.path, name))
        return sweep

    def collect(self) -> Iterator[Any]:
        """The merged metrics of every process, dead ones through the archives."""
        _, MultiProcessCollector = _prometheus_classes()
        self.sweep()
        with self.lock:
            names = [n for n in os.listdir(self.path) if parse_db_name(n) is not None]
            files = [os.path.join(self.path, n) for n in names]
            return iter(list(MultiProcessCollector.merge(files, accumulate=True)))

    def file_count(self) -> int:
        try:
            return len(os.listdir(self.path))
        except FileNotFoundError:
            return 0

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def adopt(path: str) -> None:
    """In a zygote, before the app is imported: make prometheus_client write into PATH.

    prometheus_client picks its value class when it is first imported. An exec'd zygote has not
    imported it yet, so the variable suffices; a zygote forked from a host that already imported
    it (forkserve.run(app)) gets the class switched for the metrics created from now on (the
    host's metrics created before the fork stay per-process: pass the app as an import string).
    """
    os.environ[ENV] = path
    values: Any = sys.modules.get("prometheus_client.values")
    if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.get_value_class()
