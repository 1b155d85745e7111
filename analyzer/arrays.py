"""Small numpy kernels shared by the analysis."""

from __future__ import annotations

import numpy as np


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """`np.unique(a)` for a 1-d array, by sorting and keeping each run's first value.

    numpy >= 2.3 answers a plain `np.unique` through a hash table that is far slower than a sort
    on large, high-cardinality arrays (2M int64: 1.9 s against 0.02 s on the benchmark machine)."""
    s = np.sort(a, axis=None)
    if s.shape[0] < 2:
        return s
    first = np.empty(s.shape[0], dtype=bool)
    first[0] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    return s[first]
