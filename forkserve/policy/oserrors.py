"""What an OSError from creating a resource means, and which limit to raise: one line for the log.

A master that runs out of something must say so once, in words an operator can act on: the errno
names the limit (EMFILE: this process's open files; EAGAIN from a fork: the user's processes) far
better than a traceback does.
"""

from __future__ import annotations

import errno

# errno -> (what ran out, how to raise it)
LIMITS: dict[int, tuple[str, str]] = {
    errno.EMFILE: (
        "the process's open-file limit (RLIMIT_NOFILE) is reached",
        "raise it (ulimit -n, LimitNOFILE= under systemd)",
    ),
    errno.ENFILE: (
        "the system-wide open-file limit is reached",
        "raise fs.file-max (sysctl) or close files elsewhere",
    ),
    errno.EAGAIN: (
        "the user's process limit (RLIMIT_NPROC) or the cgroup's pids.max is reached",
        "raise it (ulimit -u, LimitNPROC= or TasksMax= under systemd, pids.max in a container)",
    ),
    errno.ENOMEM: ("the system is out of memory", "free memory or lower the number of workers"),
    errno.ENOSPC: ("a kernel table is full", "check the system's limits (dmesg may say which)"),
}


def explain(error: OSError, doing: str) -> str:
    """``could not fork worker 2: [Errno 11] ...: the user's process limit ... is reached; raise it (...)``"""
    if error.errno:
        head = f"could not {doing}: [Errno {error.errno}] {error.strerror or error}"
    else:
        head = f"could not {doing}: {error.strerror or error}"
    limit = LIMITS.get(error.errno or 0)
    if limit is None:
        return head
    what, fix = limit
    return f"{head}: {what}; {fix}"
