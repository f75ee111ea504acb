"""Giving memory back: ``trim()`` returns the C heap's free pages to the system (glibc only).

A long-lived process that allocated a lot while starting (imports, parsing the settings) keeps
the freed part of its heap resident: glibc returns only the top of the heap on its own. The
master calls ``trim()`` once it has started and the zygote just before it forks, where what
stays resident is shared by no one or copied into every worker (docs/design.md "Memory"
measures both). Elsewhere (musl, macOS) there is no such call and ``trim()`` does nothing.
"""

from __future__ import annotations

import ctypes
import sys


def trim() -> bool:
    """``malloc_trim(0)``; True when glibc released something."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(malloc_trim(0))
