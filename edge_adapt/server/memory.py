"""Keeping a long-running server's memory where its requests leave it.

glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB), after
which large request bodies, prompts and token buffers are carved from the heap, where freeing
them leaves holes the process keeps: RSS then creeps up with every large request. A fixed
threshold keeps such blocks
mmapped, so they go back to the system when freed, and fewer arenas keep the threads from each
holding their own holes. Elsewhere (musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc mallopt parameters
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, held fixed
ARENA_MAX = 2


def hold_malloc_steady() -> bool:
    """Fix glibc's mmap threshold and cap its arenas; False where this is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_ARENA_MAX, ARENA_MAX))
    if not ok:
        log.debug("mallopt refused the settings; memory is managed by malloc's defaults")
    return ok
