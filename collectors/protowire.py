"""Protobuf wire format, read for many messages at once with numpy.

A message is a run of fields, each a tag varint (field number << 3 | wire type) and a value; a
field's position depends on the length of the one before it, so one message cannot be read in
parallel. Many messages can: `scan` reads the k-th field of every message in one set of array
operations and repeats until every message is read. A step costs the same few operations
whatever the number of messages, so a batch of thousands of spans is read in as many steps as
its longest span has fields.

The messages above the spans (a request, its ResourceSpans and ScopeSpans) are few and long:
`walk`, `first_field` and `len_fields` read them in Python, one loop turn per field, and
`field_runs` finds the runs of spans in them for many at once.

Buffers are `uint8` arrays with `PAD` zero bytes after the data, so reading a varint or a word
near the end never indexes out of bounds; a field that runs past its message is reported as
damage, not read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analyzer.model.arrays import PAD

VARINT, I64, LEN, I32 = 0, 1, 2, 5
_MAX_STEPS_VARINT = 10


def padded(data: bytes | list[bytes], reuse: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One buffer holding `data` (or each part of it, back to back) and the offset each part starts
    at; the start of `reuse` when it is large enough (a buffer filled chunk after chunk is not
    faulted in from fresh memory each time)."""
    parts = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    sizes = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    size = int(sizes.sum()) + PAD
    buf = reuse[:size] if reuse is not None and reuse.shape[0] >= size else np.empty(size, dtype=np.uint8)
    buf[-PAD:] = 0
    starts = np.zeros(len(parts), dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    at = 0
    for part, size in zip(parts, sizes.tolist()):
        buf[at:at + size] = np.frombuffer(part, dtype=np.uint8)
        at += size
    return buf, starts


def varints(buf: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value, position after it, well-formed) of the varint at each position.

    Nearly every varint in a span (tags, lengths, kinds) is one byte, so that case is read for
    all at once and only the longer ones go through the byte-by-byte loop."""
    b = buf[pos]
    value = b.astype(np.uint64)
    after = pos + 1
    ok = np.ones(pos.shape[0], dtype=bool)
    more = np.flatnonzero(b >= 0x80)
    if more.shape[0]:
        p = pos[more]
        acc = value[more] & np.uint64(0x7F)
        idx = more
        for shift in range(7, 7 * _MAX_STEPS_VARINT, 7):
            p = p + 1
            byte = buf[p]
            acc |= (byte.astype(np.uint64) & np.uint64(0x7F)) << np.uint64(shift)
            done = byte < 0x80
            if done.any():
                value[idx[done]] = acc[done]
                after[idx[done]] = p[done] + 1
            keep = ~done
            idx, p, acc = idx[keep], p[keep], acc[keep]
            if not idx.shape[0]:
                break
        ok[idx] = False  # longer than 10 bytes
    return value, after, ok


@dataclass
class Fields:
    """Every field of a set of messages, one row per field, in reading order per message
    (rows of a message's k-th field come after those of its (k-1)-th)."""

    owner: np.ndarray  # int64: index of the message the field belongs to
    number: np.ndarray  # int64: field number
    wire: np.ndarray  # uint8: wire type
    start: np.ndarray  # int64: where the value starts (a LEN field's payload, a fixed value's bytes)
    value: np.ndarray  # uint64: a VARINT's value, a LEN field's length
    bad: np.ndarray  # bool per message: malformed (bad wire type, varint, or a field past its end)

    def select(self, number: int, wire: int) -> np.ndarray:
        """Rows of the fields with this number and wire type (a field sent with another wire
        type than its schema's is ignored, as protobuf parsers treat it as unknown)."""
        return np.flatnonzero((self.number == number) & (self.wire == wire))


def scan(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> Fields:
    """Read every field of the messages `buf[starts[i]:ends[i]]`."""
    n = starts.shape[0]
    bad = np.zeros(n, dtype=bool)
    pos = starts.astype(np.int64)
    own = np.flatnonzero(pos < ends)
    pos = pos[own]
    rows: list[tuple[np.ndarray, ...]] = []
    while own.shape[0]:
        tag, at, ok1 = varints(buf, pos)
        wire = (tag & np.uint64(7)).astype(np.uint8)
        value, after, ok2 = varints(buf, at)
        lim = ends[own]
        # Where the next field starts, per wire type; LEN payloads start after their length.
        nxt = np.where(wire == VARINT, after, at + np.where(wire == I64, 8, 4))
        is_len = wire == LEN
        room = lim - after
        long_ok = value <= np.maximum(room, 0).astype(np.uint64)
        nxt = np.where(is_len, after + np.where(long_ok, value, 0).astype(np.int64), nxt)
        good = ok1 & ok2 & ((wire <= LEN) | (wire == I32)) & (~is_len | long_ok) & (nxt <= lim)
        if not good.all():
            bad[own[~good]] = True
            own, pos, tag, wire, at, value, after, nxt, lim, is_len = (
                x[good] for x in (own, pos, tag, wire, at, value, after, nxt, lim, is_len))
        rows.append((own, (tag >> np.uint64(3)).astype(np.int64), wire, np.where(is_len, after, at), value))
        more = nxt < lim
        own, pos = own[more], nxt[more]
    if rows:
        cols = [np.concatenate(c) for c in zip(*rows)]
    else:
        cols = [np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.int64),
                np.zeros(0, np.uint64)]
    f = Fields(*cols, bad=bad)
    if bad.any():  # a damaged message's fields are dropped with it
        keep = ~bad[f.owner]
        f = Fields(f.owner[keep], f.number[keep], f.wire[keep], f.start[keep], f.value[keep], bad)
    return f


def walk(data: bytes, i: int, end: int, keep: tuple[int, ...] = ()) -> list[tuple[int, int, int, int]] | None:
    """(field number, wire type, value start, value or length) of each LEN field numbered in `keep`
    of the message in `data[i:end]` (other fields are checked and stepped over, so what is returned
    grows with what is kept, not with the message), read in Python: for the few large messages
    above the spans (a request, its ResourceSpans and ScopeSpans). None when the message is
    malformed."""
    out = []
    try:
        while i < end:
            number, wire, start, value, i = _field(data, i)
            if i > end:
                return None
            if wire == LEN and number in keep:
                out.append((number, wire, start, value))
    except (IndexError, ValueError):
        return None
    return out


def _field(data: bytes, i: int) -> tuple[int, int, int, int, int]:
    """The field at `data[i]`: (number, wire type, value start, value or length, where the next
    field starts). IndexError past the data, ValueError for a wire type that does not exist."""
    tag, i = _varint(data, i)
    wire = tag & 7
    if tag < 8:
        raise ValueError("field number 0")
    if wire == VARINT:
        value, end = _varint(data, i)
    elif wire == LEN:
        value, i = _varint(data, i)
        end = i + value
    elif wire == I64 or wire == I32:
        value, end = 0, i + (8 if wire == I64 else 4)
    else:
        raise ValueError(f"wire type {wire}")
    return tag >> 3, wire, i, value, end


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[i]
        value |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise IndexError("varint longer than 10 bytes")


def len_fields(data: bytes, i: int, end: int, number: int, starts: list[int]) -> bool:
    """Append where the payload of every LEN field `number` of the message in `data[i:end]`
    starts (the spans of a ScopeSpans: one loop turn per span, the usual one-byte tag and
    one- or two-byte length read inline; `lengths_before` reads the lengths afterwards, for all
    at once). False when the message is malformed."""
    tag_byte = (number << 3) | LEN
    add = starts.append
    try:
        while i < end:
            if data[i] == tag_byte:
                while True:  # a run of them, as encoders write repeated fields
                    n = data[i + 1]
                    if n < 0x80:
                        i += 2
                    else:
                        m = data[i + 2]
                        if m < 0x80:
                            n = (n & 0x7F) | (m << 7)
                            i += 3
                        else:
                            n, i = _varint(data, i + 1)
                    add(i)
                    i += n
                    if i >= end or data[i] != tag_byte:
                        break
                if i > end:
                    return False
                continue
            field, wire, start, _, i = _field(data, i)
            if field == number and wire == LEN:
                add(start)
            if i > end:
                return False
    except (IndexError, ValueError):
        return False
    return True


def first_field(data: bytes, i: int, end: int, number: int) -> int | None:
    """Where the first LEN field `number` of the message in `data[i:end]` starts (its tag), `end`
    when it has none. The fields before it are checked as `len_fields` checks them; None when
    they do not decode."""
    try:
        while i < end:
            field, wire, _, _, after = _field(data, i)
            if field == number and wire == LEN:
                return i
            if after > end:
                return None
            i = after
    except (IndexError, ValueError):
        return None
    return end


def field_runs(buf: np.ndarray, size: int, tag: int, head: int, first: np.ndarray, end: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The runs of LEN fields with the one-byte tag `tag` that begin at `first[r]` in the regions
    `[first[r], end[r])` of `buf[:size]` (ascending, disjoint), found for all regions at once
    when every payload starts with the two bytes `head` (as a little-endian uint16) and every
    length is one or two bytes: the places where those two bytes follow a tag and a length are
    candidates; one that starts inside an earlier candidate's field is dropped (the same bytes
    inside a payload); a region whose candidates follow each other from `first[r]`, each field
    starting where the one before ends, is `tiled`. The others are left to `len_fields`.

    Returns (where the payload of each field of the tiled regions starts, ascending; its region;
    tiled, per region; where each tiled region's run of fields ends)."""
    n = first.shape[0]
    if not n:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, dtype=bool), first.copy()
    even = buf[:size & ~1].view("<u2")
    odd = np.ndarray(((size - 1) // 2,), "<u2", buf, 1, (2,))
    p = np.concatenate([np.flatnonzero(even == head) * 2, np.flatnonzero(odd == head) * 2 + 1])
    p.sort()
    p = p[p >= 2]
    b1, b2 = buf[p - 1], buf[p - 2]
    one = (b2 == tag) & (b1 < 0x80)
    sel = np.flatnonzero((one | ((buf[np.maximum(p - 3, 0)] == tag) & (b2 >= 0x80) & (p >= 3))) & (b1 < 0x80))
    p, one = p[sel], one[sel]
    b1, b2 = b1[sel].astype(np.int64), b2[sel].astype(np.int64)
    at = p - 3 + one
    stop = p + np.where(one, b1, (b2 & 0x7F) | (b1 << 7))
    region = np.searchsorted(first, at, side="right") - 1
    inside = np.flatnonzero((region >= 0) & (at < end[np.maximum(region, 0)]))
    p, at, stop, region = p[inside], at[inside], stop[inside], region[inside]
    if p.shape[0]:
        outer = np.ones(p.shape[0], dtype=bool)
        outer[1:] = at[1:] >= np.maximum.accumulate(stop)[:-1]
        p, at, stop, region = p[outer], at[outer], stop[outer], region[outer]
    same = region[1:] == region[:-1]
    lead = np.ones(p.shape[0], dtype=bool)
    lead[1:] = ~same
    tail = np.ones(p.shape[0], dtype=bool)
    tail[:-1] = ~same
    bad = np.bincount(region, minlength=n) == 0
    bad[region[1:][same & (at[1:] != stop[:-1])]] = True
    bad[region[lead][at[lead] != first[region[lead]]]] = True
    run_end = first.copy()
    run_end[region[tail]] = stop[tail]
    bad |= run_end > end
    take = ~bad[region]
    return p[take], region[take], ~bad, run_end


def lengths_before(buf: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The length of each LEN field whose payload starts at `starts`, read backwards from the
    varint that ends right before it: its earlier bytes are >= 0x80, the byte before it ends the
    field's tag (< 0x80)."""
    length = buf[starts - 1].astype(np.int64)
    rows, at = np.arange(starts.shape[0]), starts - 2
    for _ in range(_MAX_STEPS_VARINT - 1):
        more = buf[at] >= 0x80
        rows, at = rows[more], at[more]
        if not rows.shape[0]:
            break
        length[rows] = (length[rows] << 7) | (buf[at] & 0x7F)
        at = at - 1
    return length
