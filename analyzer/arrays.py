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


def searchsorted_many(a: np.ndarray, v: np.ndarray, side: str = "left") -> np.ndarray:
    """`np.searchsorted(a, v, side)` for many queries in no particular order.

    Binary searches in random order miss the cache on every step of a large `a`; numpy narrows
    each search with the previous result when the queries ascend, so sorting them first and
    scattering the answers back is ~5x faster at 1M queries, argsort included."""
    if v.shape[0] < 50_000:
        return np.searchsorted(a, v, side=side)  # type: ignore[call-overload]
    order = np.argsort(v)
    out = np.empty(v.shape[0], dtype=np.intp)
    out[order] = np.searchsorted(a, v[order], side=side)  # type: ignore[call-overload]
    return out


def dense_ranks(v: np.ndarray) -> tuple[np.ndarray, int]:
    """Each value's index among the sorted distinct values of `v`, and how many distinct values
    there are: `searchsorted(unique(v), v)` with one sort instead of three."""
    if not v.shape[0]:
        return np.zeros(0, dtype=np.int64), 0
    order = np.argsort(v)
    s = v[order]
    new = np.empty(s.shape[0], dtype=bool)
    new[0] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    rank = np.cumsum(new, dtype=np.int64) - 1
    out = np.empty(s.shape[0], dtype=np.int64)
    out[order] = rank
    return out, int(rank[-1]) + 1
