"""Statement normalization: strip literals so the same query shape groups together."""

from __future__ import annotations

import re

import numpy as np

from analyzer.arrays import PAD, hash_slices

# One pass for every literal and placeholder form: 'strings', 0x1F, -1.5e3, $1, :name, %s, %(name)s.
# The lookahead on the characters a literal can start with lets the engine skip every other
# position without trying each alternative there (3x faster; the matches are the same).
_LITERAL = re.compile(
    r"(?=['\d$:%-])(?:"
    r"'(?:[^']|'')*'"
    r"|\b0x[0-9a-fA-F]+\b"
    r"|(?<![\w$.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b"
    r"|\$\d+|(?<!:):\w+|%s|%\(\w+\)s"
    r")"
)
_IN_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_VALUES_ROWS = re.compile(r"(\(\?\))(?:\s*,\s*\(\?\))+")


def normalize_sql(text: str) -> str:
    """`SELECT * FROM t WHERE id = 42 AND n IN (1, 2)` -> `SELECT * FROM t WHERE id = ? AND n IN (?)`.

    Literals and driver placeholders ($1, :name, %s) all become `?`, lists of them collapse
    to one, and white space is folded, so an N+1 loop's queries share one shape."""
    s = _LITERAL.sub("?", text)
    if "?," in s or "? ," in s:
        s = _IN_LIST.sub("(?)", s)
        s = _VALUES_ROWS.sub(r"\1", s)
    return " ".join(s.split())  # str.split's white space is re's \s, so this folds runs and strips


def normalize_command(text: str) -> tuple[str, str | None]:
    """A cache command `GET user:42` -> (`GET ?`, `user:42`): the shape and the key, when visible."""
    parts = text.split(None, 2)
    if not parts:
        return "", None
    op = parts[0].upper()
    if len(parts) == 1:
        return op, None
    key = parts[1]
    if key == "?":
        return f"{op} ?", None
    return f"{op} ?" + (" ..." if len(parts) > 2 else ""), key


def _table(chars: bytes, high: bool) -> np.ndarray:
    t = np.zeros(256, dtype=bool)
    t[list(chars)] = True
    t[0x80:] = high  # bytes of non-ASCII characters, which `\w` may match
    return t


_DIGIT = _table(b"0123456789", False)
_WORD = _table(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_", True)
_JOINS = _table(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_$.", True)


def shape_keys(buf: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """A 64-bit key per statement `buf[start:start+length]` (UTF-8 bytes, `buf` padded as
    `hash_slices` needs) such that statements with equal keys have equal `normalize_sql` shapes.

    The key hashes the statement with every standalone number (a run of ASCII digits not preceded
    by a word character, `$` or `.`, nor followed by a word character) collapsed to one marker
    byte. `_LITERAL` turns each such run into `?` on its own or as part of a larger literal
    ('...', :name, %(name)s) whose content it ignores, so numbers that differ there cannot change
    the shape; everything else is kept byte for byte. Non-ASCII bytes count as word characters,
    which keeps a digit after a non-ASCII letter as it is. A statement holding a NUL byte (the
    marker) is keyed by its exact bytes. An N+1 loop's thousands of statements then share a
    handful of keys and are normalized a handful of times."""
    n = start.shape[0]
    length = length.astype(np.int64)
    nonempty = length > 0
    first = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(length[:-1], out=first[1:])
    total = int(length.sum())
    s = buf[np.repeat(start.astype(np.int64) - first, length) + np.arange(total)]
    head = np.zeros(total + 1, dtype=bool)  # first byte of a statement (and one past the end)
    head[first[nonempty]] = True
    head[total] = True
    d = _DIGIT[s]
    run_start = d.copy()
    run_start[1:] &= ~d[:-1] | head[1:total]
    run_end = d.copy()
    run_end[:-1] &= ~d[1:] | head[1:total]
    run = np.cumsum(run_start) - 1  # the run of each digit
    at_start, at_end = np.flatnonzero(run_start), np.flatnonzero(run_end)
    joined = np.zeros(at_start.shape[0], dtype=bool)  # the run follows \w, $ or .
    inner = at_start[~head[at_start]]
    joined[run[inner]] = _JOINS[s[inner - 1]]
    glued = np.zeros(at_start.shape[0], dtype=bool)  # a \w follows the run
    inner = at_end[~head[at_end + 1]]
    glued[run[inner]] = _WORD[s[inner + 1]]
    masked = d & ~(joined | glued)[np.maximum(run, 0)]
    nul = s == 0
    s[masked & run_start] = 0
    keep = ~masked | run_start
    kept_len = np.zeros(n, dtype=np.int64)
    kept_len[nonempty] = np.add.reduceat(keep, first[nonempty]) if total else 0
    kept = np.zeros(total + PAD, dtype=np.uint8)
    body = s[keep]
    kept[:body.shape[0]] = body
    kept_first = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(kept_len[:-1], out=kept_first[1:])
    keys = hash_slices(kept, kept_first, kept_len)
    if nul.any():
        has_nul = np.zeros(n, dtype=bool)
        has_nul[nonempty] = np.add.reduceat(nul, first[nonempty]) > 0
        keys[has_nul] = hash_slices(buf, start[has_nul], length[has_nul]) ^ _EXACT
    return keys


_EXACT = np.uint64(0x6A09E667F3BCC908)  # keeps exact-bytes keys apart from collapsed ones
