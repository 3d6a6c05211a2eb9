"""glibc malloc settings for a server that receives large bodies.

Every received chunk is a new ``bytes`` of up to 256 KiB (the socket read, then httptools' copy of
the body). With glibc's defaults such blocks are either ``mmap``ed and unmapped each time, or
carved from the top of the heap, which ``free`` then trims back to the kernel: either way every
chunk lands on fresh pages that the kernel has to fault in and zero (12.7 % of the server's CPU
during an upload, plus ``brk``/``munmap``). Fixing the mmap threshold above the chunk sizes and
raising the trim threshold keeps freed chunks in the heap, where the next chunk reuses them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 4 << 20  # blocks below this come from the heap (a fixed value: no adaptation)
TRIM_THRESHOLD = 128 << 20  # free memory at the top of the heap kept for reuse, not returned


def tune_malloc() -> bool:
    """Apply the settings to this process (Linux with glibc; elsewhere nothing). True if applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
