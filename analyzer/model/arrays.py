"""Small numpy kernels shared by the analysis."""

from __future__ import annotations

import numpy as np

# Zero bytes kept after the data of a buffer read with `words`, `hash_slices` or the protobuf
# readers: varints and words read a little past a message's end stay inside the buffer.
PAD = 64

# Rows per range of whole traces that the breakdown works through at a time: a range's sorts and
# gathers stay in the 2 MB L2 and 32 MB L3 caches, so their cost per span does not grow with the
# table. (The table's finish sorts smaller ranges: `table.RANGE_ROWS`.)
RANGE_ROWS = 1 << 17


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


def unique_inverse(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`np.unique(v, return_inverse=True)` for a 1-d array, with one unstable sort: the sorted
    distinct values and each value's index among them."""
    order = np.argsort(v)
    s = v[order]
    new = np.empty(s.shape[0], dtype=bool)
    new[:1] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    rank = np.cumsum(new, dtype=np.int64) - 1
    out = np.empty(s.shape[0], dtype=np.int64)
    out[order] = rank
    return s[new], out


def dense_ranks(v: np.ndarray) -> tuple[np.ndarray, int]:
    """Each value's index among the sorted distinct values of `v`, and how many distinct values
    there are: `searchsorted(unique(v), v)` with one sort instead of three."""
    values, rank = unique_inverse(v)
    return rank, values.shape[0]


def words(buf: np.ndarray, dtype: str = "<u8") -> np.ndarray:
    """An 8-byte word starting at every byte of `buf` (a view, unaligned): `words(buf)[p]` is the
    integer in `buf[p:p+8]`, little- or big-endian per `dtype`."""
    return np.ndarray(shape=(buf.shape[0] - 7,), dtype=dtype, buffer=buf, strides=(1,))


# LOW_BYTES[i] keeps the low `i` bytes of a word: the first `i` bytes of what `words` read.
LOW_BYTES = np.array([(1 << (8 * i)) - 1 for i in range(9)], dtype=np.uint64)


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit flips about half the output bits."""
    x = x ^ (x >> np.uint64(30))
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    return x ^ (x >> np.uint64(31))


def hash_slices(buf: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each byte string `buf[start:start+length]` (`buf` padded by `PAD`).

    The k-th 8-byte word of every slice is read in one step (masked to the slice) and folded into
    its slice's hash with an xor, a multiplication by an odd constant and a shift (a bijection of
    the word for a given running hash, so slices that differ in one word always differ); the
    length and a final mix come last. Every slice gets its first two words folded, zero past its
    end, so those two steps run over all slices without asking which have ended (most names and
    attribute values have one or two); later words, over the slices that have them. Words past the
    first `_CHAIN` are not chained but summed, each mixed with its position (`_tail_sums`), so that
    a long slice costs a few array operations rather than one per word (a 60 MB string took 100 s).
    For telemetry (names, keys, statements) two different strings collide with probability about
    2^-64: a million distinct values have about one chance in 10^7 of any collision."""
    length = length.astype(np.int64)
    at = start.astype(np.int64)
    w = words(buf)
    last = w.shape[0] - 1  # (a slice's index is held inside the buffer: one near its end may be short)
    cut = np.minimum(length, 16)
    h = w[np.minimum(at, last)]
    h &= LOW_BYTES[np.minimum(cut, 8)]
    h ^= _SEED
    _fold(h)
    second = w[np.minimum(at + 8, last)]
    second &= _SECOND_BYTES[cut]
    h ^= second
    _fold(h)
    rows = np.flatnonzero(length > 16)
    k = 2
    while rows.shape[0]:
        if k == _CHAIN:  # the rows left are longer than _CHAIN words
            h[rows] ^= _tail_sums(w, at[rows], length[rows])
            break
        left = length[rows] - 8 * k
        h[rows] = _fold(h[rows] ^ (w[at[rows] + 8 * k] & LOW_BYTES[np.minimum(left, 8)]))
        rows = rows[left > 8]
        k += 1
    return mix(h ^ length.astype(np.uint64))


_SEED = np.uint64(0x9E3779B97F4A7C15)
_SECOND_BYTES = LOW_BYTES[np.clip(np.arange(17) - 8, 0, 8)]  # by length up to 16: the mask of its second word
_CHAIN = 32  # words of a slice chained in `hash_slices`; the rest go through `_tail_sums`
_TAIL_CELLS = 1 << 20  # words read per step of `_tail_sums`


def _tail_sums(w: np.ndarray, at: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Per slice, the sum (mod 2^64) of mix(word i ^ mix(i)) over its words from `_CHAIN` on: a
    block of words of every slice per step, the block wide when the slices are few."""
    acc = np.zeros(at.shape[0], np.uint64)
    rows = np.arange(at.shape[0])
    k = _CHAIN
    while rows.shape[0]:
        width = max(64, _TAIL_CELLS // rows.shape[0])
        i = k + np.arange(width)
        left = length[rows, None] - 8 * i  # bytes of the slice from word i on
        pos = at[rows, None] + 8 * np.where(left > 0, i, 0)
        word = w[pos] & LOW_BYTES[np.clip(left, 0, 8)]
        mixed = mix(word ^ mix(i.astype(np.uint64) + _SEED))
        acc[rows] += np.where(left > 0, mixed, 0).sum(axis=1, dtype=np.uint64)
        k += width
        rows = rows[length[rows] > 8 * k]
    return acc


def _fold(h: np.ndarray) -> np.ndarray:
    """One mixing step of `hash_slices`, in place."""
    h *= _M1
    h ^= h >> np.uint64(29)
    return h

def weighted_quantile(values: np.ndarray, q: float, weights: np.ndarray | None = None) -> float:
    """The q-quantile of `values`, each counted `weights` times (sample weights, usually >= 1).

    Without weights this is `np.quantile` (linear interpolation). With them it is the same rule
    applied as if each value were repeated: value i holds the positions from S(i-1) to S(i) - 1
    (S the cumulative weights) out of S(n) - 1, and q is interpolated between them. With whole
    weights that is exactly `np.quantile` of the repeated values."""
    if weights is None:
        return float(np.quantile(values, q))
    order = np.argsort(values, kind="stable")
    v, w = values[order].astype(np.float64), weights[order].astype(np.float64)
    cum = np.cumsum(w)
    lo = cum - w
    hi = np.maximum(lo, cum - 1.0)
    last = cum[-1] - 1.0
    if last <= 0:
        return float(np.average(v, weights=w)) if cum[-1] > 0 else float(v[-1])
    return float(np.interp(q * last, np.column_stack((lo, hi)).ravel(), np.repeat(v, 2)))
