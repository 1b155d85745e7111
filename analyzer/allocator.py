"""Keep the memory an analysis frees for its own next arrays (glibc's malloc only).

By default glibc serves every allocation above 32 MB with a fresh `mmap` and unmaps it on free,
and trims the top of its heap once 64 MB there are free. An analysis of millions of spans makes
and drops hundreds of such arrays (sort orders, masks, temporaries), so the kernel hands it fresh
pages again and again, each faulted in and zeroed once more. With mmap disabled for allocations and trimming off, freed
arrays go back to the heap and the next ones are carved from pages the process already has; the
memory is returned when the process exits. Measured on the benchmark inputs (best of 3
interleaved runs each, README "Growth to 10M spans"): system CPU 0.55 -> 0.11 s at 1M spans and
6.9 -> 6.4 s at 10M; peak RSS +6 % at 1M and +2 % at 10M (holes in a heap that never shrinks);
reports byte-identical.

Only `analyze` and `report` turn it on (runs over a whole input that then exit); `capture`'s
receiver keeps glibc's defaults. `PROFILE_FIRST_KEEP_FREED_MEMORY=0` keeps them for an analysis too.
"""

from __future__ import annotations

import ctypes
import os
import platform

ENV = "PROFILE_FIRST_KEEP_FREED_MEMORY"
# mallopt(3) parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve large arrays from its heap and never give freed memory back
    before exit; True when it took effect (False elsewhere: musl, macOS, or opted out)."""
    if os.environ.get(ENV, "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own libc
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # (-1 as the trim threshold is "never trim"; mallopt returns 1 on success)
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, -1) == 1
