"""Statement normalization: strip literals so the same query shape groups together."""

from __future__ import annotations

import re

import numpy as np

from analyzer.model.arrays import LOW_BYTES, hash_slices, mix, words

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


_WORD = _table(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_", True)
_JOINS = _table(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_$.", True)


def shape_keys(buf: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """A 64-bit key per statement `buf[start:start+length]` (UTF-8 bytes, `buf` padded as
    `hash_slices` needs) such that statements with equal keys have equal `normalize_sql` shapes.

    The key hashes the pieces of text between the statement's standalone numbers (runs of ASCII
    digits not preceded by a word character, `$` or `.`, nor followed by a word character), in
    order: as if each such number were one marker. `_LITERAL` turns each such number into `?`
    on its own or as part of a larger literal ('...', :name, %(name)s) whose content it
    ignores, so numbers that differ there cannot change the shape; every other byte is kept.
    Non-ASCII bytes count as word characters, which keeps a digit after a non-ASCII letter as it
    is. An N+1 loop's thousands of statements then share a handful of keys (one per number of
    digits) and are normalized a handful of times."""
    n = start.shape[0]
    start, length = start.astype(np.int64), length.astype(np.int64)
    # `s`: the statements one after the other, each read in whole 8-byte words (8x fewer elements
    # to gather than bytes) from `first` on, the bytes of its last word past its end zeroed (0 is
    # no digit and no word character).
    n_words = (length + 7) >> 3
    word_first = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(n_words[:-1], out=word_first[1:])
    total_words = int(n_words.sum())
    word_owner = np.repeat(np.arange(n), n_words)
    ws = words(buf)[start[word_owner] + 8 * (np.arange(total_words) - word_first[word_owner])]
    some = np.flatnonzero(n_words)
    ws[word_first[some] + n_words[some] - 1] &= LOW_BYTES[length[some] - 8 * (n_words[some] - 1)]
    s = ws.view(np.uint8)  # (little-endian words: their bytes in buffer order)
    first = 8 * word_first
    total = 8 * total_words
    base = start - first  # buf position of s[i] is i + base[its statement]
    head = np.zeros(total + 1, dtype=bool)  # a statement's first byte (and one past the last)
    head[first[length > 0]] = True
    head[total] = True
    d = (s - np.uint8(ord("0"))) < 10  # (bytes below "0" wrap around to 208 and more)
    run_start = d.copy()
    run_start[1:] &= ~d[:-1] | head[1:total]
    run_end = d.copy()
    run_end[:-1] &= ~d[1:] | head[1:total]
    at_start, at_end = np.flatnonzero(run_start), np.flatnonzero(run_end)
    joined = ~head[at_start] & _JOINS[s[np.maximum(at_start - 1, 0)]]
    glued = ~head[at_end + 1] & _WORD[s[np.minimum(at_end + 1, max(total - 1, 0))]]
    standalone = ~(joined | glued)
    run_start, run_end = at_start[standalone], at_end[standalone]

    # Pieces: per statement, the text before its first number, between numbers, after the last.
    owner = np.searchsorted(first, run_start, side="right") - 1
    runs = np.bincount(owner, minlength=n)
    pieces = runs + 1
    piece_first = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(pieces[:-1], out=piece_first[1:])
    slot = piece_first[owner] + np.arange(run_start.shape[0]) - (np.cumsum(runs) - runs)[owner]
    piece_start = np.empty(int(pieces.sum()), dtype=np.int64)
    piece_end = np.empty_like(piece_start)
    piece_start[piece_first] = first
    piece_end[piece_first + runs] = first + length
    piece_end[slot] = run_start
    piece_start[slot + 1] = run_end + 1
    piece_owner = np.repeat(np.arange(n), pieces)
    h = hash_slices(buf, piece_start + base[piece_owner], piece_end - piece_start)
    index = (np.arange(piece_start.shape[0]) - piece_first[piece_owner]).astype(np.uint64)
    h = mix(h ^ mix(index + np.uint64(1)))
    keys = np.add.reduceat(h, piece_first) if n else h
    return mix(keys ^ pieces.astype(np.uint64))
