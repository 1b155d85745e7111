"""Which of a fixed set of short byte strings (the attribute keys the analysis reads) sits at
each of many positions of a buffer, compared exactly, without hashing each string.

A string of L bytes (8 <= L <= 8 * words) is read as `words` 8-byte words at offsets
min(8k, L - 8): they cover it whole, overlapping when it is not a multiple of 8, and stay inside
it. Shorter strings are read as one word masked to their length. A sum of the words times odd
constants, plus the length, picks a slot of a small table (the constants are chosen so that the
known strings fill distinct slots); the string is that slot's only if its length and every word
equal the slot's. A word gather costs about three times a byte gather and an arithmetic pass a
tenth of one, so this is about half the cost of hashing every key and searching the hashes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from analyzer.model.arrays import LOW_BYTES, words

_BITS = 10  # 1,024 slots


class KeyTable:
    """Exact lookup of `keys` (byte strings) in a buffer padded as `analyzer.model.arrays.words`
    needs."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self.width = max(1, -(-max(map(len, keys)) // 8))  # words per key
        self.short = min(map(len, keys)) < 8
        rows = [self._row(k) for k in keys]
        lens = np.array([len(k) for k in keys] + [-1], dtype=np.int64)  # the last row: no key
        table = np.array(rows + [[0] * self.width], dtype=np.uint64).reshape(-1, self.width)
        for seed in range(1, 1000):  # the first multipliers that put every key in its own slot
            mult = _odd_constants(seed, self.width + 1)
            slots = self._slots(table[:-1].T, lens[:-1], mult)
            if np.unique(slots).shape[0] == len(keys):
                break
        else:  # pragma: no cover - 28 keys in 1,024 slots need a handful of tries
            raise RuntimeError("no collision-free key table")
        self._mult = mult
        self._slot_row = np.full(1 << _BITS, len(keys), dtype=np.intp)
        self._slot_row[slots] = np.arange(len(keys))
        self._words = [np.ascontiguousarray(table[:, k]) for k in range(self.width)]
        self._lens = lens

    def _row(self, key: bytes) -> list[int]:
        padded = key + bytes(8)
        offsets = [min(8 * k, max(len(key) - 8, 0)) for k in range(self.width)]
        mask = (1 << (8 * min(len(key), 8))) - 1
        return [int.from_bytes(padded[o:o + 8], "little") & mask if len(key) < 8 else
                int.from_bytes(padded[o:o + 8], "little") for o in offsets]

    def _slots(self, cols: Sequence[np.ndarray], length: np.ndarray, mult: np.ndarray) -> np.ndarray:
        h = length.astype(np.uint64) * mult[0]
        for k, c in enumerate(cols):
            h += c * mult[k + 1]
        return (h >> np.uint64(64 - _BITS)).astype(np.intp)

    def find(self, buf: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
        """The index in `keys` of the string `buf[start[i]:start[i] + length[i]]`, -1 when it is
        none of them (callers pass lengths of keys only: longer strings are read in part)."""
        w = words(buf)
        length = length.astype(np.int64)
        tail = np.maximum(length - 8, 0)
        cols = []
        for k in range(self.width):
            c = w[start + np.minimum(8 * k, tail)] if k else w[start]
            if k == 0 and self.short:
                c &= LOW_BYTES[np.minimum(length, 8)]
            cols.append(c)
        row = self._slot_row[self._slots(cols, length, self._mult)]
        same = self._lens[row] == length
        for k, c in enumerate(cols):
            same &= self._words[k][row] == c
        return np.where(same, row, -1)


def _odd_constants(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1 << 63, n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
