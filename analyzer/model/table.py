"""Building a SpanTable from decoded batches, with every repair counted.

Decoders append `Batch`es of columns, trace ids as two 64-bit halves; `TableBuilder.finish`
concatenates the columns, numbers traces in trace-id order, sorts rows by (trace, start) and
resolves parents, all with integer sorts.

Repairs, each counted in `Repairs` and shown under the report's `input`:
- `negative_duration`: end before start; the end is set to the start (duration 0).
- `duplicate_spans`: a (trace id, span id) seen again (exporter retries deliver twice);
  the first copy is kept, later ones dropped.
- `orphans`: the parent span id is not in the input; the span is treated as a root.
- `parent_cycles`: following parents loops back; the loop is cut at one span per loop
  reached, which becomes a root.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from analyzer.model.arrays import mix, unique_inverse
from analyzer.model.spans import SpanTable
from analyzer.model.semconv import DEPLOYMENT_ENVIRONMENT, runtime_of


class Interner:
    """String -> dense int32 code, in first-seen order."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def code(self, value: str | None) -> int:
        if value is None:
            return -1
        codes = self.codes
        c = codes.get(value)
        if c is None:
            c = codes[value] = len(codes)
        return c

    def codes_of(self, values: list[str]) -> np.ndarray:
        codes = self.codes
        return np.fromiter((codes.setdefault(v, len(codes)) for v in values), dtype=np.int32, count=len(values))

    def values(self) -> list[str]:
        """The strings by code; a lone surrogate (JSON allows `"\\ud800"`, UTF-8 cannot carry it)
        becomes U+FFFD, so that every output stays valid UTF-8."""
        return [v if v.isascii() or _encodable(v) else v.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
                for v in self.codes]


def _encodable(v: str) -> bool:
    try:
        v.encode()
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class Batch:
    """Columns of one group of spans."""

    service: np.ndarray  # int32 codes of TableBuilder.services
    trace_hi: np.ndarray  # uint64: trace id bytes 0-7 read big-endian
    trace_lo: np.ndarray  # uint64: bytes 8-15
    span_id: np.ndarray  # uint64, the 8 id bytes read big-endian
    parent_id: np.ndarray  # uint64, 0 for none
    name: np.ndarray  # int32
    kind: np.ndarray  # int8
    start: np.ndarray  # int64
    end: np.ndarray  # int64
    status: np.ndarray  # int8
    span_class: np.ndarray  # int8
    db_system: np.ndarray  # int32
    statement: np.ndarray  # int32
    peer: np.ndarray  # int32
    code_location: np.ndarray  # int32
    cache_key: np.ndarray  # int32
    environment: np.ndarray | None = None  # int32 codes of TableBuilder.environments; None: all absent


@dataclass
class Repairs:
    negative_duration: int = 0
    duplicate_spans: int = 0
    orphans: int = 0
    parent_cycles: int = 0

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class TableBuilder:
    services: Interner = field(default_factory=Interner)
    names: Interner = field(default_factory=Interner)
    statements: Interner = field(default_factory=Interner)
    peers: Interner = field(default_factory=Interner)
    code_locations: Interner = field(default_factory=Interner)
    strings: Interner = field(default_factory=Interner)
    environments: Interner = field(default_factory=Interner)
    runtimes: dict[str, str] = field(default_factory=dict)
    repairs: Repairs = field(default_factory=Repairs)
    # Each span's columns side by side in one record, in read order, so that putting the rows in
    # trace order reads one or two cache lines per span instead of one per column (past a few
    # million spans every column is far larger than the caches and each read of it misses). The
    # records fill blocks as batches arrive, so each batch's arrays are freed once copied.
    _blocks: list[np.ndarray] = field(default_factory=list, repr=False)
    _his: list[np.ndarray] = field(default_factory=list, repr=False)  # each block's trace_hi also apart: grouping reads it whole
    _rows: int = 0  # rows in the blocks
    _room: int = 0  # rows left in the last block

    def service(self, name: str, process_runtime: str | None, sdk_language: str | None) -> int:
        code = self.services.code(name)
        runtime = runtime_of(process_runtime, sdk_language)
        if runtime != "unknown" or name not in self.runtimes:
            self.runtimes[name] = runtime
        return code

    def environment(self, attrs: dict) -> int:
        """The code of a resource's `deployment.environment` (under either name), -1 when it names none."""
        for key in DEPLOYMENT_ENVIRONMENT:
            value = attrs.get(key)
            if value is not None and value != "":
                return self.environments.code(str(value))
        return -1

    def add(self, batch: Batch) -> None:
        m = batch.kind.shape[0]
        if not m:
            return
        bad = batch.end < batch.start
        self.repairs.negative_duration += int(np.count_nonzero(bad))
        values = {name: getattr(batch, name) for name in _RECORD.names}
        values["end"] = np.where(bad, batch.start, batch.end)
        if batch.environment is None:
            values["environment"] = -1
        done = 0
        while done < m:
            if not self._room:  # blocks double in size up to BLOCK_ROWS: small inputs stay small
                self._room = min(BLOCK_ROWS, max(FIRST_BLOCK_ROWS, self._rows))
                self._blocks.append(np.empty(self._room, dtype=_RECORD))
                self._his.append(np.empty(self._room, dtype=np.uint64))
            k = min(m - done, self._room)
            begin = self._blocks[-1].shape[0] - self._room
            part = self._blocks[-1][begin:begin + k]
            for name, value in values.items():
                part[name] = value if np.ndim(value) == 0 else value[done:done + k]
            self._his[-1][begin:begin + k] = batch.trace_hi[done:done + k]
            done += k
            self._rows += k
            self._room -= k

    def finish(self) -> SpanTable:
        n = self._rows
        blocks, his = self._blocks, self._his
        if blocks:  # the last block up to its rows so far
            blocks[-1] = blocks[-1][:blocks[-1].shape[0] - self._room]
            his[-1] = his[-1][:blocks[-1].shape[0]]
        self._blocks, self._his, self._room = [], [], 0

        # Every trace lies in one range of rows grouped by trace-id prefix: numbering, duplicates,
        # parent links and the row order are found per range, with sorts that fit in cache; each
        # range's rows are then written to the columns in their final order.
        ranges = _TraceRanges(blocks, his)
        del blocks, his  # the ranges free the blocks as they deal them out
        cols = {name: np.empty(n, dtype) for name, dtype in _COLUMNS}
        trace = np.empty(n, dtype=np.int32)
        parent = np.empty(n, dtype=np.int32)
        ids_parts: list[np.ndarray] = []
        n_traces = kept = 0
        for g in ranges:
            local, ids, by_trace = _trace_codes(g["trace_hi"], g["trace_lo"])
            local = local[by_trace]
            # Duplicates: keep the first copy read of each (trace, span id).
            first, parent_read = _links(local, g["span_id"][by_trace], g["parent_id"][by_trace])
            # Final row order: by trace, then start time, so each trace is a contiguous range.
            at = np.flatnonzero(first)
            at = at[_stable_order(local[at], g["start"][by_trace[at]])]
            final = np.empty(by_trace.shape[0], dtype=np.int32)
            final[at] = np.arange(kept, kept + at.shape[0], dtype=np.int32)
            parent_at = parent_read[at]
            out = slice(kept, kept + at.shape[0])
            parent[out] = np.where(parent_at >= 0, final[parent_at], -1)
            trace[out] = local[at] + n_traces
            g = _take(g, by_trace[at])
            for name, _ in _COLUMNS:
                cols[name][out] = g[name]
            ids_parts.append(ids)
            n_traces += ids.shape[0]
            kept += at.shape[0]
        del ranges
        self.repairs.duplicate_spans += n - kept
        trace_ids = np.concatenate(ids_parts) if ids_parts else np.zeros((0, 16), np.uint8)
        if kept < n:  # copies dropped: the columns end early
            trace, parent = trace[:kept].copy(), parent[:kept].copy()
            cols = {k: v[:kept].copy() for k, v in cols.items()}

        has_parent_id = cols["parent_id"] != 0
        self.repairs.orphans += int((has_parent_id & (parent < 0)).sum())
        cut = _cut_cycles(parent, trace)
        self.repairs.parent_cycles += cut

        return SpanTable(
            trace=trace,
            parent=parent,
            trace_ids=trace_ids,
            services=self.services.values(),
            names=self.names.values(),
            statements=self.statements.values(),
            peers=self.peers.values(),
            code_locations=self.code_locations.values(),
            strings=self.strings.values(),
            environments=self.environments.values(),
            runtimes=dict(self.runtimes),
            **cols,
        )


_COLUMNS = (("service", np.int32), ("span_id", np.uint64), ("parent_id", np.uint64), ("name", np.int32), ("kind", np.int8),
            ("start", np.int64), ("end", np.int64), ("status", np.int8), ("span_class", np.int8),
            ("db_system", np.int32), ("statement", np.int32), ("peer", np.int32), ("code_location", np.int32),
            ("cache_key", np.int32), ("environment", np.int32))
# Rows per range of whole traces that finish works through at a time: a range's sorted keys (128 KB
# each) stay in the 1 MB L2 cache of a core and its records (1.4 MB) in L3. Smaller than the
# breakdown's ranges: at 8x this size finish took a quarter more CPU at 10M spans.
RANGE_ROWS = 1 << 14
# Rows of a part finish deals the blocks out to (46 MB: above glibc's largest mmap threshold, so that
# a part freed goes back to the system at once and the columns can take its pages).
PART_ROWS = 1 << 19
# Rows of the builder's first block of records; each next block is as large as all before it, up to
# BLOCK_ROWS (~92 MB), so a small input allocates little, and finish, which frees each block once
# dealt out, holds at most one block more than the records (at 4x this size, 10M spans peaked
# 30 B/span higher and spent 0.5 s more system time there).
FIRST_BLOCK_ROWS = 1 << 16
BLOCK_ROWS = 1 << 20
# A span's columns, with the trace id, as one record: widest first, so that every field is aligned
# (88 bytes, the last 5 padding).
_RECORD = np.dtype(sorted([("trace_hi", np.uint64), ("trace_lo", np.uint64), *_COLUMNS],
                          key=lambda f: -np.dtype(f[1]).itemsize), align=True)


def _take(records: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`records[rows]`, through the records viewed as rows of 64-bit words: numpy copies a
    structured record field by field, a row of words in one go (ten times faster)."""
    return np.take(_words(records), rows, axis=0).view(_RECORD).reshape(-1)


def _words(records: np.ndarray) -> np.ndarray:
    return records.view(np.uint64).reshape(records.shape[0], _RECORD.itemsize // 8)


class _TraceRanges:
    """The builder's records in ranges of whole traces, in trace-id order, about `RANGE_ROWS` rows
    each. Each block's rows are grouped by the top 16 bits of their trace id (a radix sort, read
    order kept within a group); a range is a run of groups, taken from each block in turn, so the
    rows of a trace come in read order. The prefix is taken of the high half, or of the low half
    when every high half is equal (64-bit ids), below the bits all share; a group larger than
    `RANGE_ROWS` (ids made by hand) is one range, just slower to sort.

    Iterating deals each block out to parts (runs of ranges of about `PART_ROWS` rows) and frees
    it, then cuts each part into its ranges and frees it. So the memory freed is soon taken again,
    by the parts and then by the table's columns, and the peak stays near the blocks' size: fresh
    memory costs several times more system time than reused memory on a VM whose host takes free
    memory back (about 2 ms per MB on the benchmark VM)."""

    def __init__(self, blocks: list[np.ndarray], his: list[np.ndarray]) -> None:
        self.blocks: list[np.ndarray | None] = list(blocks)
        self.orders: list[np.ndarray | None] = []  # per block: its rows by group (int32: at most BLOCK_ROWS)
        self.starts: list[np.ndarray] = []  # per block: where each group starts in its order, and the end
        self.parts: list[list[tuple[int, int]]] = []  # the ranges as runs of groups, by part
        if not blocks:
            return
        words = his
        low, high = _bounds(words)
        if low == high:
            words = [b["trace_lo"] for b in blocks]
            low, high = _bounds(words)
        shift = np.uint64(max(0, (high - low).bit_length() - 16))
        for w in words:
            group = ((w - np.uint64(low)) >> shift).astype(np.uint16)
            self.orders.append(np.argsort(group, kind="stable").astype(np.int32))
            self.starts.append(np.concatenate(([0], np.cumsum(np.bincount(group, minlength=1 << 16)))))
        total = sum(self.starts)
        at = np.searchsorted(total[1:], np.arange(RANGE_ROWS, int(total[-1]), RANGE_ROWS))
        bounds = sorted({0, 1 << 16, *(at + 1).tolist()})
        part: list[tuple[int, int]] = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            if total[b] > total[a]:  # groups with no row make no range
                if part and total[b] - total[part[0][0]] > PART_ROWS:
                    self.parts.append(part)
                    part = []
                part.append((a, b))
        self.parts.append(part)

    def __iter__(self) -> Iterator[np.ndarray]:
        firsts = [part[0][0] for part in self.parts]
        lasts = [part[-1][1] for part in self.parts]
        parts: list[np.ndarray | None] = [np.empty(sum(int(s[b] - s[a]) for s in self.starts), dtype=_RECORD)
                                          for a, b in zip(firsts, lasts)]
        at = np.zeros((len(parts), len(self.starts) + 1), dtype=np.int64)  # where each block's piece begins in each part
        for k, s in enumerate(self.starts):
            block, order = self.blocks[k], self.orders[k]
            for p, (a, b) in enumerate(zip(firsts, lasts)):
                rows = order[s[a]:s[b]]
                at[p, k + 1] = at[p, k] + rows.shape[0]
                np.take(_words(block), rows, axis=0, out=_words(parts[p])[at[p, k]:at[p, k + 1]], mode="clip")
            self.blocks[k] = self.orders[k] = None
        for p, ranges in enumerate(self.parts):
            for a, b in ranges:  # a part of one range (a small input, or ids made by hand) is that range
                yield parts[p] if len(ranges) == 1 else np.concatenate(
                    [parts[p][at[p, k] + s[a] - s[firsts[p]]:at[p, k] + s[b] - s[firsts[p]]] for k, s in enumerate(self.starts)])
            parts[p] = None


def _bounds(words: list[np.ndarray]) -> tuple[int, int]:
    return min(int(w.min()) for w in words), max(int(w.max()) for w in words)


def _stable_order(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """`np.lexsort((minor, major))` for `major` >= 0: one stable sort of a single int64 key when
    `major` and the range of `minor` fit in its 63 bits. Timsort there: the rows come grouped by
    `major` and mostly in `minor` order, which it exploits (a lexsort is several times slower)."""
    if not major.shape[0]:
        return np.zeros(0, dtype=np.intp)
    low = int(minor.min())
    shift = (int(minor.max()) - low).bit_length()
    if int(major.max()).bit_length() + shift > 63:
        return np.lexsort((minor, major))
    return np.argsort((major.astype(np.int64) << shift) | (minor - low), kind="stable")


def _stable_argsort(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`np.argsort(key, kind="stable")` of uint64 keys, and the sorted keys, in about half the
    time of numpy's unstable argsort: a value sort of each key's high bits with its row in the
    low bits, which also puts equal keys in row order; only runs whose high bits tie while
    their keys differ (rare for ids and hashes) are then sorted by the whole key."""
    n = key.shape[0]
    bits = max(1, (n - 1).bit_length())
    low = np.uint64((1 << bits) - 1)
    packed = key & ~low
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    order = (packed & low).astype(np.intp)
    k = key[order]
    packed >>= np.uint64(bits)
    tie = packed[1:] == packed[:-1]
    mixed = tie & (k[1:] != k[:-1])
    if mixed.any():
        run = np.cumsum(np.concatenate(([False], ~tie)))
        bad = np.zeros(int(run[-1]) + 1, dtype=bool)
        bad[run[1:][mixed]] = True
        at = np.flatnonzero(bad[run])
        order[at] = order[at][np.argsort(k[at], kind="stable")]
        k[at] = key[order[at]]
    return order, k


def _trace_codes(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each span's trace code, numbering the distinct trace ids in id order; those ids as
    (n_traces, 16) bytes; and the rows by trace code, in read order within a trace. Sorted by
    the high half, then by both halves if different ids share a high half (random ids almost
    never do; 64-bit trace ids, with the high half zero, and ids made by hand do)."""
    order, h = _stable_argsort(hi)
    l = lo[order]
    # Spans of one trace always tie on the high half; only different ids sharing it need the low
    # half: then sort by it first (both sorts are stable, so read order stays within a trace).
    if ((h[1:] == h[:-1]) & (l[1:] != l[:-1])).any():
        by_lo, _ = _stable_argsort(lo)
        order = by_lo[_stable_argsort(hi[by_lo])[0]]
        h, l = hi[order], lo[order]
    new = np.ones(h.shape[0], dtype=bool)
    new[1:] = (h[1:] != h[:-1]) | (l[1:] != l[:-1])
    code = np.cumsum(new, dtype=np.int32) - 1
    trace = np.empty(h.shape[0], np.int32)
    trace[order] = code
    ids = np.empty((int(new.sum()), 2), dtype=">u8")
    ids[:, 0], ids[:, 1] = h[new], l[new]
    return trace, ids.view(np.uint8).reshape(-1, 16), order


def _links(trace: np.ndarray, span_id: np.ndarray, parent_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each row is the first copy read of its (trace, span id), and the read row of its
    parent's first copy (-1 when the parent id is 0 or not in the trace).

    A (trace, id) pair is keyed by the id xor a mix of the trace code: one uint64 sort then
    serves both duplicates and parent lookups. Different pairs share a key with probability
    about n^2 / 2^65; that is checked, and then exact keys are used instead."""
    salt = mix(trace.astype(np.uint64))
    found = _match(trace, span_id ^ salt, parent_id ^ salt, parent_id != 0)
    if found is None:
        found = _match(trace, *_exact_keys(trace, span_id, parent_id), parent_id != 0)
    return found


def _exact_keys(trace: np.ndarray, span_id: np.ndarray, parent_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The keys of `_links` for each span and each parent without collisions: the trace code and
    the id's rank among all span ids in one integer; all ones for a parent id no span has."""
    ids, rank = unique_inverse(span_id)
    width = max(1, ids.shape[0])
    key = trace.astype(np.int64) * width + rank
    pos = np.minimum(np.searchsorted(ids, parent_id), width - 1)
    known = ids[pos] == parent_id if ids.shape[0] else np.zeros(0, dtype=bool)
    return key.view(np.uint64), np.where(known, trace.astype(np.int64) * width + pos, -1).view(np.uint64)


def _match(trace: np.ndarray, key: np.ndarray, want: np.ndarray, has_parent: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """`_links` from a key per span and the key of each span's parent; None if two spans of
    different traces share a key (equal keys within a trace are copies of one span)."""
    order, k = _stable_argsort(key)  # copies of a span in read order: the first is the first read
    t = trace[order]
    same = k[1:] == k[:-1]
    if (same & (t[1:] != t[:-1])).any():
        return None
    new = np.empty(k.shape[0], dtype=bool)
    new[:1] = True
    new[1:] = ~same
    first = np.empty_like(new)
    first[order] = new
    # Parents looked up in key order (why: arrays.searchsorted_many), so reads of the sorted keys at the
    # found positions stay near each other too.
    q, w = _stable_argsort(want)
    at = np.minimum(np.searchsorted(k, w), max(k.shape[0] - 1, 0))
    # A key of another trace matches only if the parent is absent: else the parent's key would
    # be shared by two traces, which was ruled out above.
    found = (k[at] == w) & (t[at] == trace[q]) & has_parent[q]
    parent = np.empty(k.shape[0], dtype=np.intp)
    parent[q] = np.where(found, order[at], -1)
    return first, parent


def _cut_cycles(parent: np.ndarray, trace: np.ndarray) -> int:
    """Detach spans so that following parents always ends at a root; returns how many were cut.

    Pointer doubling: after k rounds `jump` is the 2^k-th ancestor. Spans whose chain has not
    ended after log2(n)+1 rounds lead into a loop, and where they land is on the loop. Per
    trace, the lowest such landing row is made a root; repeat until no loop is left."""
    n = parent.shape[0]
    # A loop has a span whose parent is not an earlier row; by start order parents come first.
    if (parent < np.arange(n, dtype=np.int32)).all():
        return 0
    cut = 0
    while True:
        jump = parent.copy()
        for _ in range(max(1, int(n).bit_length() + 1)):
            alive = jump >= 0
            if not alive.any():
                return cut
            jump[alive] = jump[jump[alive]]
        looping = jump >= 0
        if not looping.any():
            return cut
        landing = np.unique(jump[looping])  # sorted rows, so the first per trace is the lowest
        _, first = np.unique(trace[landing], return_index=True)
        landing = landing[first]
        parent[landing] = -1
        cut += int(landing.shape[0])

