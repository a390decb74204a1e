"""Provides the C allocator's settings of a serving process (glibc's malloc)."""

import ctypes
import logging
import os
import platform

from django.conf import settings

from eventhub.daphne_bodies import request_buffer_bytes

logger = logging.getLogger(__name__)

# mallopt(3)'s parameter numbers (malloc.h); Python's ctypes has no names for them.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc refuses a larger mmap threshold (HEAP_MAX_SIZE / 2 on 64-bit systems).
MAX_MMAP_THRESHOLD = 32 * 2**20
# glibc's own settings of the same thresholds, by environment: when the operator gave any,
# they are kept.
_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold", "glibc.malloc.top_pad")


def thresholds() -> tuple[int, int]:
    """(mmap threshold, trim threshold): a block of a publish body's size, and two of them free
    at the top of the heap, stay in the process for the next body."""
    mmap = min(MAX_MMAP_THRESHOLD, 2 * request_buffer_bytes())
    return mmap, 2 * mmap


def install() -> bool:
    """Called once when the ASGI application is imported (by daphne, and by whatever else
    loads it: runworker, the tests); True when the thresholds were set.

    A large publish body is copied whole a few times on the event loop (Twisted's temporary
    file read back, the decoded text), each copy one block of megabytes. glibc serves a block
    over its mmap threshold with fresh pages from the kernel, and gives the top of its heap back
    once more than the trim threshold lies free there; both thresholds start low and adapt only
    to a block freed before. So every 4 MiB body faulted its copies in again, page by page: 2-3
    ms per copy on this machine's VM, 0.3-0.5 ms with the thresholds fixed above the body's
    size (bench/noisy.py, big bodies: loop stalls over 10 ms 19-68 → 0 in 10 s). What the
    process keeps for reuse is at most the trim threshold free at the top of each malloc arena
    (the loop's, and one per worker thread that allocates), besides what fragmentation holds
    below live blocks, as before (docs/security.md).
    """
    if not settings.EVENTHUB_MALLOC_TUNING or platform.libc_ver()[0] != "glibc":
        return False
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(name in os.environ for name in _ENVIRONMENT) or any(t in tunables for t in _TUNABLES):
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mmap, trim = thresholds()
    done = [mallopt(M_MMAP_THRESHOLD, mmap), mallopt(M_TRIM_THRESHOLD, trim)]
    if not all(done):
        logger.warning("glibc refused malloc thresholds mmap %d, trim %d: %s", mmap, trim, done)
        return False
    logger.debug("malloc thresholds: mmap %d, trim %d", mmap, trim)
    return True
