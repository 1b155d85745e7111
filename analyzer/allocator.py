"""Fixed malloc thresholds for an analysis (glibc only), so that its temporaries stop being
faulted in again and again.

glibc starts with a 128 KiB mmap threshold and a 128 KiB trim threshold and raises both only as
mmapped blocks are freed (the trim threshold to twice the mmap one). The reader and the per-range
stages make thousands of temporaries of 100 KiB to a few MiB: while the thresholds are still low
each one is a fresh mapping, and afterwards two or three of them freed together leave more than
the trim threshold free at the heap's top, which glibc hands back to the kernel, so the next
temporaries fault the same pages in again. 1,000 calls of `np.minimum(a + 8, x)` on 50k int64
took 163k page faults and 0.26 ms each, against 200 faults and 0.02 ms with the thresholds fixed.

Fixed here at glibc's own ceiling for the mmap threshold (32 MiB) and twice that for trimming:
arrays of 32 MiB and more stay fresh mappings as before (numpy asks for huge pages on them), the
smaller ones are carved from a heap that keeps up to 64 MiB free. `analyze` and `report` turn it
on; `PROFILE_FIRST_MALLOC_DEFAULTS=1` keeps glibc's defaults.
"""

from __future__ import annotations

import ctypes
import os
import platform

ENV = "PROFILE_FIRST_MALLOC_DEFAULTS"
# mallopt(3) parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD


def fix_malloc_thresholds() -> bool:
    """Set the thresholds above; True when they took effect (False on other C libraries, or when
    opted out)."""
    if os.environ.get(ENV) == "1" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own libc
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
