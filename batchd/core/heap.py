"""The C heap of a long ingest: big buffers given back to the system when freed.

glibc's malloc raises its mmap threshold each time a big mmapped buffer is freed, so the
multi-MB buffers ingest makes and frees per block (worker results, encoded blocks, row
batches) soon come from the heap, where freed space is kept rather than returned: the
process's RSS then creeps up with the input's size though nothing is held (seen: 290 MB
for 1M lines, 390 MB for 10M). A fixed threshold keeps every buffer of 1 MB or more
mmapped, returned as it is freed. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
BIG_BUFFER_BYTES = 1 << 20
_done = False


def return_big_buffers() -> bool:
    """Fix the mmap threshold at BIG_BUFFER_BYTES (once per process); True if it took."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _done = bool(mallopt(M_MMAP_THRESHOLD, BIG_BUFFER_BYTES))
    return _done
