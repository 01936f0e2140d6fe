"""Keep freed host memory in the process for reuse (glibc ``mallopt``).

PyTorch has no caching allocator on the CPU: every temporary of a forward is a
``malloc``/``free``. glibc serves blocks above its mmap threshold with fresh
``mmap`` calls and returns the heap's free top to the kernel above its trim
threshold, so a loop of equal-sized activations page-faults the same megabytes
in again and again. On the fold model's CPU path that is 15-35% of the time
(2 cores, 64-93 residues). Raising both thresholds keeps the blocks in the heap.

The setting is process-wide and one-way (the process keeps its peak heap until
it exits), which is what a worker that runs one model after another wants.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameter numbers (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (HEAP_MAX_SIZE / 2); larger
# blocks are always mapped on their own
MMAP_THRESHOLD_MAX = 32 * 2**20
TRIM_THRESHOLD = 2**31 - 1  # an int: never trim the heap's top

_retained = False


def retain_freed_memory() -> bool:
    """Serve blocks up to 32 MiB from the heap and never trim it; True when set
    (now or before), False where the C library has no glibc ``mallopt``."""
    global _retained
    if _retained:
        return True
    mallopt = _mallopt()
    if mallopt is None:
        log.info("host heap: no glibc mallopt here; freed memory goes back as usual")
        return False
    # the mmap threshold first: setting the trim threshold alone turns glibc's
    # dynamic threshold off at its 128 KiB start, which maps far more blocks
    if not mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) or not mallopt(
        M_TRIM_THRESHOLD, TRIM_THRESHOLD
    ):
        log.warning("host heap: mallopt refused the thresholds; left as they were")
        return False
    _retained = True
    log.info("host heap: blocks up to 32 MiB reused from the heap, never trimmed")
    return True


def _mallopt():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt
