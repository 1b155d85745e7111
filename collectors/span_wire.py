"""The fields of many OTLP spans at once, read from protobuf wire bytes with numpy.

Every encoder in use (the SDKs, the Collector) writes a span's fields in field-number order, so
the fields before the attributes sit at positions a few array operations find for all spans
together: trace id, span id, an optional trace state and parent, name, kind, start and end.
The attributes are then read one KeyValue per step for all spans, and what follows them
(status and flags, or events, links and the rest) by `protowire.scan`. A span that is laid out
any other way (fields out of order or repeated, lengths of three bytes or more, ids of the
wrong length) is read field by field with `protowire.scan`, with the same result, and a
malformed one is reported as such.

Field numbers are those of opentelemetry-proto's trace.proto and common.proto.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analyzer.model.arrays import words
from collectors.protowire import I64, LEN, VARINT, scan, varints

# Span fields (trace.proto) and their one-byte tags.
TRACE_ID, SPAN_ID, TRACE_STATE, PARENT_ID, NAME, KIND, START, END, ATTRIBUTES, STATUS = 1, 2, 3, 4, 5, 6, 7, 8, 9, 15
_TAG_TRACE_ID, _TAG_SPAN_ID, _TAG_TRACE_STATE, _TAG_PARENT = 0x0A, 0x12, 0x1A, 0x22
_TAG_NAME, _TAG_KIND, _TAG_START, _TAG_END, _TAG_ATTR, _TAG_STATUS = 0x2A, 0x30, 0x39, 0x41, 0x4A, 0x7A
_TAG_FLAGS = (0x85, 0x01)  # field 16, fixed32: a two-byte tag
STATUS_CODE = 3  # Status.code
KV_KEY, KV_VALUE = 1, 2  # KeyValue
ANY_STRING, ANY_INT, ANY_BYTES = 1, 3, 7  # AnyValue.string_value, .int_value, .bytes_value (the last member)
# AnyValue kinds as `values` reports them.
NONE, STRING, INT = 0, 1, 2


@dataclass
class Spans:
    """Columns of n spans, in input order."""

    readable: np.ndarray  # bool: False for a span whose bytes or status do not decode, or out of range
    ids_ok: np.ndarray  # bool: trace id of 16 bytes and span id of 8, neither all zero
    parent_ok: np.ndarray  # bool: parent id absent or of 8 bytes (else it is dropped: a repair)
    trace_hi: np.ndarray  # uint64: trace id bytes 0-7, big-endian
    trace_lo: np.ndarray  # uint64: bytes 8-15
    span_id: np.ndarray  # uint64: the 8 id bytes read big-endian
    parent_id: np.ndarray  # uint64, 0 for none
    name_start: np.ndarray  # int64 into the buffer
    name_len: np.ndarray  # int64
    kind: np.ndarray  # int64
    start: np.ndarray  # int64 ns
    end: np.ndarray  # int64 ns
    status: np.ndarray  # int64 status code
    attr_span: np.ndarray  # int64 per attribute: its span's index
    attr_start: np.ndarray  # int64: where its serialized KeyValue starts
    attr_len: np.ndarray  # int64


def read_spans(buf: np.ndarray, s: np.ndarray, e: np.ndarray, skip_kinds: tuple[int, ...] = ()) -> Spans:
    """The spans serialized at `buf[s[i]:e[i]]`; the attributes of spans of `skip_kinds` are not
    reported (`attr_*` only hold the others')."""
    n = s.shape[0]
    B, W, WB = buf, words(buf), words(buf, ">u8")
    i64 = np.int64

    # The fields before the attributes, in order. `ok` stays True while the layout is the usual one.
    ok = (B[s] == _TAG_TRACE_ID) & (B[s + 1] == 16)
    trace_hi, trace_lo = WB[s + 2].astype(np.uint64), WB[s + 10].astype(np.uint64)  # ids read big-endian
    p = s + 18
    ok &= (B[p] == _TAG_SPAN_ID) & (B[p + 1] == 8)
    span_id = WB[p + 2].astype(np.uint64)
    p = p + 10
    has = B[p] == _TAG_TRACE_STATE
    if has.any():  # not read, only stepped over
        length = B[p + 1].astype(i64)
        ok &= ~has | (length < 0x80)
        p = np.minimum(p + np.where(has, 2 + length, 0), e)
    has = B[p] == _TAG_PARENT
    ok &= ~has | (B[p + 1] == 8)
    parent_id = np.where(has, WB[p + 2], np.uint64(0))
    p = p + has * 10
    has = B[p] == _TAG_NAME
    length, after, short = length_at(B, p)
    ok &= ~has | short
    name_start = np.where(has, after, p)
    name_len = np.where(has, length, 0)
    p = np.where(has, after + length, p)
    ok &= p <= e
    p = np.minimum(p, e)
    has = B[p] == _TAG_KIND
    kind = np.where(has, B[p + 1], 0).astype(i64)
    ok &= ~has | (B[p + 1] < 0x80)
    p = p + has * 2
    has = B[p] == _TAG_START
    start = np.where(has, W[p + 1], np.uint64(0)).view(i64)
    p = p + has * 9
    has = B[p] == _TAG_END
    end = np.where(has, W[p + 1], np.uint64(0)).view(i64)
    p = p + has * 9
    ok &= p <= e
    p = np.minimum(p, e)

    # Attributes: recorded for the spans whose kind is not skipped, stepped over for the others.
    has = ok & (B[p] == _TAG_ATTR) & (p < e)
    skip = np.isin(kind, skip_kinds)
    _step_over_attributes(B, p, e, np.flatnonzero(has & skip), ok, record=False)
    attr_span, attr_start, attr_len = _step_over_attributes(B, p, e, np.flatnonzero(has & ~skip), ok, record=True)
    ok &= p <= e
    p = np.minimum(p, e)

    # Status (empty when unset) and flags, as SDKs write them; anything else goes through scan.
    status_start = np.full(n, -1, i64)
    status_len = np.zeros(n, i64)
    has = ok & (B[p] == _TAG_STATUS) & (B[p + 1] < 0x80)
    status_start[has] = p[has] + 2
    status_len[has] = B[p[has] + 1]
    p = p + np.where(has, 2 + status_len, 0)
    has = (B[p] == _TAG_FLAGS[0]) & (B[p + 1] == _TAG_FLAGS[1])
    p = p + has * 6
    ok &= p <= e
    rest = np.flatnonzero(ok & (p < e))
    if rest.shape[0]:
        f = scan(B, p[rest], e[rest])
        early = f.number <= ATTRIBUTES  # a field the fast path has already passed: out of order
        redo = f.bad.copy()
        redo[f.owner[early]] = True
        ok[rest[redo]] = False
        st = f.select(STATUS, LEN)
        st = st[~redo[f.owner[st]]]
        status_start[rest[f.owner[st]]] = f.start[st]
        status_len[rest[f.owner[st]]] = f.value[st].astype(i64)

    readable = np.ones(n, dtype=bool)
    ids_ok = np.ones(n, dtype=bool)
    parent_ok = np.ones(n, dtype=bool)
    if not ok.all():  # drop what the fast path read of the other spans; read them field by field
        keep = ok[attr_span]
        attr_span, attr_start, attr_len = attr_span[keep], attr_start[keep], attr_len[keep]
        slow = np.flatnonzero(~ok)
        f = scan(B, s[slow], e[slow])
        readable[slow[f.bad]] = False
        cols = _SlowColumns(B, f, slow)
        ids_ok[slow] = cols.exact(TRACE_ID, 16) & cols.exact(SPAN_ID, 8)
        parent_ok[slow] = np.isin(cols.length(PARENT_ID), (0, 8))
        trace_hi[slow], trace_lo[slow] = cols.word(TRACE_ID, 0), cols.word(TRACE_ID, 8)
        span_id[slow] = cols.word(SPAN_ID, 0)
        parent_id[slow] = np.where(parent_ok[slow] & (cols.length(PARENT_ID) == 8), cols.word(PARENT_ID, 0), 0)
        name_start[slow], name_len[slow] = cols.at(NAME), cols.length(NAME)
        kind[slow] = cols.varint(KIND)
        start[slow], end[slow] = cols.fixed64(START), cols.fixed64(END)
        status_start[slow], status_len[slow] = cols.at(STATUS), cols.length(STATUS)
        a = f.select(ATTRIBUTES, LEN)
        a = a[~f.bad[f.owner[a]] & ~np.isin(kind[slow[f.owner[a]]], skip_kinds)]
        attr_span = np.concatenate([attr_span, slow[f.owner[a]]])
        attr_start = np.concatenate([attr_start, f.start[a]])
        attr_len = np.concatenate([attr_len, f.value[a].astype(i64)])
    ids_ok &= ((trace_hi | trace_lo) != 0) & (span_id != 0)

    status = np.zeros(n, i64)
    rows = np.flatnonzero(readable & (status_len > 0))
    if rows.shape[0]:
        f = scan(B, status_start[rows], status_start[rows] + status_len[rows])
        readable[rows[f.bad]] = False
        c = f.select(STATUS_CODE, VARINT)
        status[rows[f.owner[c]]] = f.value[c].astype(i64)
    # The table keeps kind and status code in int8: a value beyond it is no SpanKind or status.
    readable &= (kind >= -128) & (kind <= 127) & (status >= -128) & (status <= 127)
    return Spans(readable, ids_ok, parent_ok, trace_hi, trace_lo, span_id, parent_id, name_start, name_len, kind,
                 start, end, status, attr_span, attr_start, attr_len)


def _step_over_attributes(B: np.ndarray, p: np.ndarray, e: np.ndarray, rows: np.ndarray, ok: np.ndarray,
                          record: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step over the attributes of spans `rows`, the k-th KeyValue of each in the k-th step;
    `p[rows]` ends past them. Lengths are one byte, or two for a KeyValue of 128 bytes or more (a
    long statement or URL); longer ones clear `ok`. With `record`, (span, start, length) of each
    KeyValue, in reading order per span."""
    out: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    q, lim = p[rows], e[rows]
    while rows.shape[0]:
        length = B[q + 1].astype(np.int64)
        after = q + 2
        two = np.flatnonzero(length >= 0x80)
        if two.shape[0]:
            second = B[q[two] + 2].astype(np.int64)
            length[two] = (length[two] & 0x7F) | (second << 7)
            after[two] += 1
            ok[rows[two[second >= 0x80]]] = False  # 16 KiB or more: read this span field by field
        q = after + length
        if record:
            out[0].append(rows)
            out[1].append(after)
            out[2].append(length)
        else:
            p[rows] = q
        more = (q < lim) & (B[np.minimum(q, lim)] == _TAG_ATTR)
        rows, q, lim = rows[more], q[more], lim[more]
    span, start, length = (np.concatenate(c) if c else np.zeros(0, np.int64) for c in out)
    if record:
        p[span] = start + length  # after each span's last KeyValue (the last step's assignment wins)
    return span, start, length


def length_at(B: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one- or two-byte length varint after the tag at each `p`: (length, where the payload
    starts, whether it fits in two bytes)."""
    b1 = B[p + 1].astype(np.int64)
    two = b1 >= 0x80
    if not two.any():
        return b1, p + 2, np.ones(p.shape[0], dtype=bool)
    b2 = B[p + 2].astype(np.int64)
    return np.where(two, (b1 & 0x7F) | (b2 << 7), b1), p + 2 + two, ~two | (b2 < 0x80)


class _SlowColumns:
    """The last occurrence of each span field (protobuf's rule for a repeated singular field),
    for spans read field by field."""

    def __init__(self, B: np.ndarray, f, rows: np.ndarray) -> None:
        self.B, self.f, self.n = B, f, rows.shape[0]
        self._last: dict[tuple[int, int], np.ndarray] = {}

    def _row(self, number: int, wire: int) -> np.ndarray:
        """Per span, the row of its last field `number` with this wire type, or -1."""
        key = (number, wire)
        if key not in self._last:
            r = self.f.select(number, wire)
            r = r[~self.f.bad[self.f.owner[r]]]
            last = np.full(self.n, -1, np.int64)
            last[self.f.owner[r]] = r  # rows ascend in reading order: the last assignment wins
            self._last[key] = last
        return self._last[key]

    def _take(self, values: np.ndarray, number: int, wire: int, default: int) -> np.ndarray:
        r = self._row(number, wire)
        if not values.shape[0]:
            return np.full(self.n, default, dtype=values.dtype)
        return np.where(r >= 0, values[np.maximum(r, 0)], values.dtype.type(default))

    def at(self, number: int) -> np.ndarray:
        return self._take(self.f.start, number, LEN, -1)

    def length(self, number: int) -> np.ndarray:
        return self._take(self.f.value, number, LEN, 0).astype(np.int64)

    def exact(self, number: int, size: int) -> np.ndarray:
        return self.length(number) == size

    def word(self, number: int, offset: int) -> np.ndarray:
        w = words(self.B, ">u8")[np.maximum(self.at(number), 0) + offset]
        return np.where(self.length(number) >= offset + 8, w, np.uint64(0))

    def varint(self, number: int) -> np.ndarray:
        return self._take(self.f.value, number, VARINT, 0).astype(np.int64)

    def fixed64(self, number: int) -> np.ndarray:
        at = self._take(self.f.start, number, I64, -1)
        return np.where(at >= 0, words(self.B)[np.maximum(at, 0)], np.uint64(0)).view(np.int64)


@dataclass
class KeyValues:
    """Key and value positions of serialized KeyValues."""

    readable: np.ndarray  # bool
    key_start: np.ndarray  # int64
    key_len: np.ndarray  # int64
    value_start: np.ndarray  # int64: the serialized AnyValue
    value_len: np.ndarray  # int64


def read_key_values(buf: np.ndarray, s: np.ndarray, length: np.ndarray) -> KeyValues:
    """Where each KeyValue's key and value are; usually `0A <key length> key 12 <value length> value`."""
    B = buf
    e = s + length
    key_len = B[s + 1].astype(np.int64)
    key_start = s + 2
    v = np.minimum(key_start + key_len, e)  # (a key length byte of another layout can point past it)
    value_len, value_start, short = length_at(B, v)
    ok = (B[s] == 0x0A) & (key_len < 0x80) & (B[v] == 0x12) & short & (value_start + value_len == e)
    ok &= length >= 2
    readable = np.ones(s.shape[0], dtype=bool)
    if not ok.all():
        slow = np.flatnonzero(~ok)
        f = scan(B, s[slow], e[slow])
        readable[slow[f.bad]] = False
        cols = _SlowColumns(B, f, slow)
        key_start[slow], key_len[slow] = cols.at(KV_KEY), cols.length(KV_KEY)
        value_start[slow], value_len[slow] = cols.at(KV_VALUE), cols.length(KV_VALUE)
        readable[slow] &= key_start[slow] >= 0
        value_start[slow] = np.where(value_start[slow] >= 0, value_start[slow], key_start[slow])
    return KeyValues(readable, key_start, key_len, value_start, value_len)


def read_values(buf: np.ndarray, s: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(kind, string start, string length, integer) of serialized AnyValues: `STRING` for a
    non-empty string, else `INT` for a non-zero integer, else `NONE` (what the analysis reads of
    an attribute: `string_value or int_value`)."""
    B = buf
    n = s.shape[0]
    e = s + length
    kind = np.zeros(n, np.int8)
    str_start = np.zeros(n, np.int64)
    str_len = np.zeros(n, np.int64)
    integer = np.zeros(n, np.int64)
    tag = B[s]
    is_str = (tag == 0x0A) & (length > 0)
    slen, sat, short = length_at(B, s)
    fast_str = is_str & short & (sat + slen == e)
    str_start[fast_str], str_len[fast_str] = sat[fast_str], slen[fast_str]
    is_int = (tag == 0x18) & (length > 0)
    if is_int.any():
        r = np.flatnonzero(is_int)
        value, after, good = varints(B, s[r] + 1)
        fine = good & (after == e[r])
        integer[r[fine]] = value[fine].astype(np.int64)
        is_int[r[~fine]] = False
    other = np.flatnonzero((length > 0) & ~fast_str & ~is_int)
    if other.shape[0]:  # another type, several fields, or a long length: the last member set wins
        f = scan(B, s[other], e[other])
        members = np.flatnonzero((f.number >= ANY_STRING) & (f.number <= ANY_BYTES) & ~f.bad[f.owner])
        last = np.full(other.shape[0], -1, np.int64)
        last[f.owner[members]] = members
        got = last >= 0
        rows, lr = other[got], last[got]
        as_str = (f.number[lr] == ANY_STRING) & (f.wire[lr] == LEN)
        as_int = (f.number[lr] == ANY_INT) & (f.wire[lr] == VARINT)
        str_start[rows[as_str]], str_len[rows[as_str]] = f.start[lr[as_str]], f.value[lr[as_str]].astype(np.int64)
        fast_str[rows[as_str]] = True
        integer[rows[as_int]] = f.value[lr[as_int]].astype(np.int64)
        is_int[rows[as_int]] = True
    kind[is_int & (integer != 0)] = INT
    kind[fast_str & (str_len > 0)] = STRING
    return kind, str_start, str_len, integer

