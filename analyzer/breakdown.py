"""Critical-path breakdown of every entry span, vectorized over the whole SpanTable.

An entry span is a root, or a SERVER/CONSUMER span whose parent is in another service or
is a CLIENT/PRODUCER span. Each entry span owns the spans below it down to the next entry
spans. Its duration is split into exclusive parts that add up to it exactly:

    self | database | cache | remote_server | remote_gap | messaging

How (numpy passes grouped by parent, over ranges of whole traces):
1. Frames. Children are clipped to their parent's frame (clock skew, async children that
   outlive their parent). A SERVER child of a CLIENT span in another service that does not
   fit inside it is first shifted to the middle of the client span: that is a clock offset
   between hosts, not time spent outside the call. An entry span's frame for its own
   children is its full interval.
2. Critical chain among siblings: the child that ends last, then the one that ends last
   before that one starts, and so on (the chain that determines when the parent ends).
   Parallel children that end earlier are off the path.
3. A span is critical when it is on its siblings' chain and its parent is critical. Each
   critical span's exclusive time is its clipped length minus its critical children's.
4. Category: a span inside a database, cache, remote or messaging span inherits that
   class. Exclusive time of remote spans is the wire/queueing gap; a nested entry span
   (the downstream's SERVER span) counts whole as remote_server for the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from analyzer.model.arrays import RANGE_ROWS, dense_ranks, unique_inverse
from analyzer.model.spans import Kind, SpanClass, SpanTable

PARTS = ("self", "database", "cache", "remote_server", "remote_gap", "messaging")
P_SELF, P_DB, P_CACHE, P_SERVER, P_GAP, P_MSG = range(6)
# Part of a span's own exclusive time, by its effective class.
_PART_OF_CLASS = np.array([P_SELF, P_DB, P_CACHE, P_GAP, P_MSG], dtype=np.int64)
# Part a nested entry span counts as, by the effective class of its parent.
_NESTED_PART_OF_CLASS = np.array([P_SERVER, P_DB, P_CACHE, P_SERVER, P_MSG], dtype=np.int64)


@dataclass
class Breakdown:
    """Per entry span: `parts` (n_entries x 6, ns) adding up to its duration. `entries` are by
    operation (service, name), then start time, ties in row order: each operation's entries and
    parts are one slice, which its hot spot takes without a copy.

    Per span: `owner` (row of its entry span; itself for an entry span), `on_path` (critical for
    its owner), `entry_index` (index into `entries` for entry rows, -1 otherwise), `effective_class`
    (its SpanClass, or the class of the database/cache/remote/messaging span it is inside). Rows
    and entry indices are int32, as in the table's parent column."""

    entries: np.ndarray
    parts: np.ndarray
    owner: np.ndarray
    on_path: np.ndarray
    entry_index: np.ndarray
    clip_start: np.ndarray
    clip_end: np.ndarray
    effective_class: np.ndarray
    start: np.ndarray  # the table's start column, to order owned spans
    parent: np.ndarray  # the table's parent column, to find the entry spans a span calls
    ranges: list[tuple[int, int]]  # the row ranges of whole traces it was computed in

    def waiting_rows(self, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the waiting spans (database, cache, remote, messaging) owned by `entries` that are
        not inside another waiting span, by (owner, start), and for each row the index in `entries`
        of its owner: ranges cut from one index built per table, instead of a pass over every span
        per hot spot."""
        by_owner, first, stop = self._waiting_by_owner
        order = np.argsort(entries)
        at = self.entry_index[entries[order]]
        lo, hi = first[at], stop[at]
        counts = hi - lo
        total = int(counts.sum())
        if not total:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        # Concatenate the ranges [lo, hi) without a Python loop.
        offsets = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
        return by_owner[offsets + np.arange(total)], np.repeat(order, counts)

    def callees(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per span of `rows`, the nested entry spans that are its children (a client span's
        downstream SERVER span): their clipped ns added up (float64), and the row of the last of
        them (-1 when none). Read from one index per table of the spans that have such children,
        instead of matching every entry's parent against the client spans per hot spot."""
        slot, ns, last = self._callee_index
        i = slot[rows]
        return ns[i], last[i]

    @cached_property
    def _callee_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per span, its slot in the `callees` figures of the spans that have nested entry children
        (int32, as a row); the figures' last slot, which slot -1 reads, is the one of no children."""
        ent = np.flatnonzero(self.entry_index >= 0)
        ent = ent[self.parent[ent] >= 0]
        callers, which = unique_inverse(self.parent[ent])
        slot = np.full(self.parent.shape[0], -1, dtype=np.int32)
        slot[callers] = np.arange(callers.shape[0], dtype=np.int32)
        # (each caller's children are added in row order, as a bincount over all rows did)
        ns = np.bincount(which, weights=self.clip_end[ent] - self.clip_start[ent], minlength=callers.shape[0] + 1)
        last = np.full(callers.shape[0] + 1, -1, dtype=np.int64)
        last[which] = ent  # entries ascend: a span with several nested entries keeps the last one
        return slot, ns, last

    @cached_property
    def _waiting_by_owner(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The outermost waiting spans of `waiting_rows` by (owner, start); those owned by the entry
        with index i in `entries` are `by_owner[first[i]:stop[i]]`. Built per range, as the
        breakdown: a range's rows are owned by its entries, so the ranges' pieces in order are the
        table's index."""
        pieces = []
        first = np.empty(self.entries.shape[0], dtype=np.int64)
        stop = np.empty(self.entries.shape[0], dtype=np.int64)
        done = 0  # rows in the pieces so far
        for a, b in self.ranges:
            w = slice(a, b)
            waits = self.effective_class[w] != SpanClass.INTERNAL
            is_entry = self.entry_index[w] >= 0
            # Inside another waiting span: below a non-entry span whose effective class waits (an ORM
            # span > internal span > driver span; the class is inherited down to the next entry span).
            parent = _local(self.parent[w], a)
            p = np.maximum(parent, 0)
            inside = (parent >= 0) & ~is_entry[p] & waits[p]
            rows = np.flatnonzero(waits & ~is_entry & ~inside)
            owner, start = self.owner[w][rows] - a, self.start[w][rows]
            # Table rows are sorted by (trace, start), so a stable sort by owner alone usually leaves
            # each owner's rows by start already: checked, as that is ten times cheaper than lexsort.
            order = np.argsort(owner, kind="stable")
            if not _ascending_in_groups(owner[order], start[order]):
                order = np.lexsort((start, owner))
            pieces.append(rows[order] + a)
            # Each entry's count, in row order as the piece is, and its bounds put at its index.
            entries = np.flatnonzero(is_entry)
            counts = np.bincount((np.cumsum(is_entry) - 1)[owner], minlength=entries.shape[0])
            ends = done + np.cumsum(counts)
            at = self.entry_index[w][entries]
            first[at], stop[at] = ends - counts, ends
            done += rows.shape[0]
        return np.concatenate(pieces), first, stop


def _ascending_in_groups(group: np.ndarray, value: np.ndarray) -> bool:
    """Whether `value` never decreases within a run of equal `group`."""
    return not np.any((group[1:] == group[:-1]) & (value[1:] < value[:-1]))


def _entry_mask(parent: np.ndarray, kind: np.ndarray, service: np.ndarray) -> np.ndarray:
    has_parent = parent >= 0
    p = np.where(has_parent, parent, 0)
    entry_kind = (kind == Kind.SERVER) | (kind == Kind.CONSUMER)
    parent_kind = kind[p]
    parent_is_call = (parent_kind == Kind.CLIENT) | (parent_kind == Kind.PRODUCER)
    crosses = service[p] != service
    return ~has_parent | (entry_kind & (crosses | parent_is_call))


def levels(parent: np.ndarray) -> list[np.ndarray]:
    """Rows grouped by depth, roots first (breadth-first over a CSR child index)."""
    n = parent.shape[0]
    order = np.argsort(parent, kind="stable")
    # Row i's children are the child_counts[i] rows from order[first_child[i]]: rows without a
    # parent (-1) sort first, then the children of row 0, 1, ...; so the starts are running sums.
    has_parent = parent >= 0
    child_counts = np.bincount(parent[has_parent], minlength=n)
    first_child = (n - int(np.count_nonzero(has_parent))) + np.cumsum(child_counts) - child_counts
    out = []
    frontier = np.flatnonzero(parent < 0)
    while frontier.size:
        out.append(frontier)
        if frontier.size == 1:  # one span's children: a slice (a chain of spans is a level per span)
            a = int(first_child[frontier[0]])
            frontier = order[a:a + int(child_counts[frontier[0]])]
            continue
        lo, counts = first_child[frontier], child_counts[frontier]
        total = int(counts.sum())
        if not total:
            break
        # Concatenate the ranges [lo, lo + counts) without a Python loop.
        offsets = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
        frontier = order[offsets + np.arange(total)]
    return out


_INTERNAL = int(SpanClass.INTERNAL)  # (an enum member's lookup costs more than the level of a chain)


def compute(t: SpanTable) -> Breakdown:
    n = len(t)
    parent = t.parent
    # Every step runs per range of whole traces, on the range's own parent indices: its level walks,
    # sorts and temporaries stay in cache and are reused, and the only whole-table arrays are the
    # results (a whole-table temporary costs fresh pages as well as cache misses).
    ranges = _trace_ranges(t.trace, parent)
    is_entry = np.empty(n, dtype=bool)
    for a, b in ranges:
        is_entry[a:b] = _entry_mask(_local(parent[a:b], a), t.kind[a:b], t.service[a:b])
    entries = np.flatnonzero(is_entry)
    # By operation (service, name), then start: each hot spot is one slice of them and of `parts`.
    operation = t.service[entries].astype(np.int64) * max(len(t.names), 1) + t.name[entries]
    entries = entries[_by_key_then_start(operation, t.start[entries])]
    entry_index = np.full(n, -1, dtype=np.int32)
    entry_index[entries] = np.arange(entries.shape[0], dtype=np.int32)
    parts = np.empty((entries.shape[0], len(PARTS)), dtype=np.int64)
    clip_s, clip_e = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    eff = np.empty(n, dtype=t.span_class.dtype)
    owner = np.empty(n, dtype=np.int32)
    on_path = np.empty(n, dtype=bool)
    for a, b in ranges:
        w = slice(a, b)
        local, ent, kind, start, end = _local(parent[w], a), is_entry[w], t.kind[w], t.start[w], t.end[w]
        # SERVER entry spans called by a CLIENT span: the ones a clock offset may have moved.
        may_skew = ent & (kind == Kind.SERVER) & (local >= 0) & (kind[np.maximum(local, 0)] == Kind.CLIENT)
        cs, ce, ef, own, crit = _walk(local, ent, may_skew, t.span_class[w], start, end)
        # The range's parts, by its entries in row order, then put in their rows of `parts`.
        ent_rows = np.flatnonzero(ent)
        block = np.zeros((ent_rows.shape[0], len(PARTS)), dtype=np.int64)
        _add_parts(block.reshape(-1), np.cumsum(ent) - 1, local, ent, crit, own, ef, cs, ce, end - start)
        parts[entry_index[w][ent_rows]] = block
        clip_s[w], clip_e[w], eff[w], owner[w], on_path[w] = cs, ce, ef, own + a, crit | ent
    return Breakdown(entries=entries, parts=parts, owner=owner, on_path=on_path, entry_index=entry_index,
                     clip_start=clip_s, clip_end=clip_e, effective_class=eff, start=t.start, parent=parent,
                     ranges=ranges)


def _by_key_then_start(key: np.ndarray, start: np.ndarray) -> np.ndarray:
    """`np.lexsort((start, key))` as two stable sorts, by start and then by key: the second is a
    radix sort when the keys fit 16 bits (services x names are few), so the two cost about half of
    lexsort."""
    order = np.argsort(start, kind="stable")
    k = key[order]
    if k.size and -(2**15) <= int(k.min()) and int(k.max()) < 2**15:
        k = k.astype(np.int16)
    return order[np.argsort(k, kind="stable")]


def _local(parent: np.ndarray, a: int) -> np.ndarray:
    """The parent rows of a range that starts at row `a` as indices into the range (-1 stays)."""
    return np.where(parent >= 0, parent - a, -1)


def _add_parts(flat_parts: np.ndarray, entry_index: np.ndarray, parent: np.ndarray, is_entry: np.ndarray,
               critical: np.ndarray, owner: np.ndarray, eff: np.ndarray, cs: np.ndarray, ce: np.ndarray,
               duration: np.ndarray) -> None:
    """Adds one range's spans to its entries' parts (`flat_parts`, their rows of `parts` flat:
    ufunc.at is several times faster on one index than on two): each owned span's exclusive time to
    its owner's part for its class, and each critical nested entry span's whole clipped time to the
    owner of its parent."""
    clipped = ce - cs
    child = critical & (parent >= 0)
    covered = np.bincount(parent[child], weights=clipped[child], minlength=parent.shape[0]).astype(np.int64)
    # Owned: the entry spans (their whole length) and the critical spans (clipped), less the
    # critical children's time.
    rows = np.flatnonzero(critical | is_entry)
    exclusive = np.where(is_entry[rows], duration[rows], clipped[rows]) - covered[rows]
    np.add.at(flat_parts, entry_index[owner[rows]] * len(PARTS) + _PART_OF_CLASS[eff[rows]], exclusive)
    nested = np.flatnonzero(is_entry & critical)
    if nested.size:
        p = parent[nested]
        np.add.at(flat_parts, entry_index[owner[p]] * len(PARTS) + _NESTED_PART_OF_CLASS[eff[p]], clipped[nested])


def _trace_ranges(trace: np.ndarray, parent: np.ndarray) -> list[tuple[int, int]]:
    """Row ranges of about `RANGE_ROWS` rows, cut where a trace starts (the table's rows are by
    trace), that hold the parent of every row in them; one range for a table where they would not
    (rows made by hand)."""
    n = trace.shape[0]
    if n <= RANGE_ROWS:
        return [(0, n)]
    starts = np.flatnonzero(trace[1:] != trace[:-1]) + 1
    at = np.searchsorted(starts, np.arange(RANGE_ROWS, n, RANGE_ROWS))
    bounds = [0, *np.unique(starts[at[at < starts.shape[0]]]).tolist(), n]
    ranges = list(zip(bounds[:-1], bounds[1:]))
    for a, b in ranges:  # (range by range: no whole-table temporary)
        p = parent[a:b]
        if ((p < a) & (p >= 0)).any() or (p >= b).any():
            return [(0, n)]
    return ranges


def _walk(parent: np.ndarray, is_entry: np.ndarray, may_skew: np.ndarray, cls: np.ndarray, start: np.ndarray,
          end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1 to 3 of the module docstring over rows whose parents are among them: each row's
    clipped interval, effective class, owner (a row) and whether it is critical for its owner."""
    n = parent.shape[0]
    clip_s, clip_e = start.copy(), end.copy()  # interval as seen by the parent's accounting
    frame_s, frame_e = start.copy(), end.copy()  # interval offered to the children
    eff = cls.copy()  # effective class, inherited from database/cache/remote/messaging ancestors
    owner = np.arange(n, dtype=np.int64)
    lv = levels(parent)
    for rows in lv[1:]:
        p = parent[rows]
        ps, pe = frame_s[p], frame_e[p]
        s, e = start[rows], end[rows]
        k = np.flatnonzero(may_skew[rows])
        if k.size:
            s[k], e[k] = _unskew(s[k], e[k], ps[k], pe[k])
        # (minimum of maximum rather than np.clip: the same, without clip's fixed cost per call,
        # which a trace a million levels deep pays a million times)
        cs = np.minimum(np.maximum(s, ps), pe)
        ce = np.minimum(np.maximum(e, cs), pe)
        clip_s[rows], clip_e[rows] = cs, ce
        ent = is_entry[rows]
        frame_s[rows] = np.where(ent, start[rows], cs)
        frame_e[rows] = np.where(ent, end[rows], ce)
        peff = eff[p]
        inherit = (peff != _INTERNAL) & ~is_entry[p] & ~ent
        eff[rows] = np.where(inherit, peff, cls[rows])
        owner[rows] = np.where(ent, rows, owner[p])

    on_path = _critical_chains(parent, clip_s, clip_e, frame_s)

    critical = np.zeros(n, dtype=bool)
    for rows in lv:
        p = parent[rows]
        has_p = p >= 0
        q = np.where(has_p, p, 0)
        crit_p = np.where(has_p, critical[q] | is_entry[q], False)  # (gathered first: O(level), not O(n))
        critical[rows] = np.where(has_p, on_path[rows] & crit_p, False)
    return clip_s, clip_e, eff, owner, critical


def _unskew(s: np.ndarray, e: np.ndarray, ps: np.ndarray, pe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clock skew: a downstream SERVER span [s, e] outside its CLIENT parent's frame [ps, pe] that
    would fit in it is moved to the middle of it."""
    skewed = ((s < ps) | (e > pe)) & ((e - s) <= (pe - ps))
    shift = np.where(skewed, ps + ((pe - ps) - (e - s)) // 2 - s, 0)
    return s + shift, e + shift


def _critical_chains(parent: np.ndarray, cs: np.ndarray, ce: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Mark the children on each parent's critical chain (see the module docstring, step 2).

    `base[p]` is where parent p's frame starts: its children's clipped times are offsets from it."""
    n = parent.shape[0]
    on = np.zeros(n, dtype=bool)
    cand = np.flatnonzero((parent >= 0) & (ce > cs))
    if not cand.size:
        return on
    p = parent[cand].astype(np.int64)
    key_s, key_e = _sibling_keys(p, cs[cand], ce[cand], base[p])
    order = _by_end_then_start(key_e, key_s)
    key_end = key_e[order]
    sorted_rows = cand[order]
    sorted_parent = p[order]
    # Heads: the last child (latest end) of each parent.
    last = np.ones(order.shape[0], dtype=bool)
    last[:-1] = sorted_parent[1:] != sorted_parent[:-1]
    # next(c): the sibling with the latest end at or before c's start.
    j = np.searchsorted(key_end, key_s[order], side="right") - 1
    valid = (j >= 0) & (sorted_parent[np.maximum(j, 0)] == sorted_parent)
    nxt = np.where(valid, j, -1)
    frontier = np.flatnonzero(last)
    while frontier.size:
        on[sorted_rows[frontier]] = True
        frontier = nxt[frontier]
        frontier = frontier[frontier >= 0]
    return on


def _sibling_keys(p: np.ndarray, s: np.ndarray, e: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One int64 key each for (parent, start) and (parent, end) that sorts like the pair.

    The time is the offset into the parent's frame when every offset is non-negative and parent x
    offset fits in 63 bits (a sort of the times is then not needed), else its dense rank among
    all the times."""
    off_s, off_e = s - base, e - base
    width = int(off_e.max()) + 1 if off_e.size else 1
    if off_s.size and (int(off_s.min()) < 0 or (int(p.max()) + 1) * width >= 2**63):
        m = s.shape[0]
        ranks, width = dense_ranks(np.concatenate((s, e)))
        off_s, off_e = ranks[:m], ranks[m:]
    w = np.int64(width)
    return p * w + off_s, p * w + off_e


def _by_end_then_start(key_e: np.ndarray, key_s: np.ndarray) -> np.ndarray:
    """The order by (parent, end, start), ties kept in input order.

    A stable sort by the end key alone, then the rare runs of siblings ending at the same time
    re-sorted by start, instead of a sort over a three-part key."""
    order = np.argsort(key_e, kind="stable")
    ke = key_e[order]
    tie = np.flatnonzero(ke[1:] == ke[:-1])
    if tie.size:
        in_run = np.zeros(order.shape[0], dtype=bool)
        in_run[tie] = in_run[tie + 1] = True
        pos = np.flatnonzero(in_run)
        order[pos] = order[pos[np.lexsort((key_s[order[pos]], ke[pos]))]]
    return order
