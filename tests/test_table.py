"""TableBuilder.finish on hand-built batches, checked against a plain dict-based reference.

Each span is (trace id, span id, parent id, start, end); its `name` column holds its read
index, so the rows of the table say which copy of a span was kept and in which order."""

from __future__ import annotations

import numpy as np
import pytest

from analyzer.model import table as table_module
from analyzer.model.arrays import mix
from analyzer.model.table import Batch, TableBuilder, _stable_argsort

U64 = (1 << 64) - 1
A, B, C = (7 << 64) | 1, (7 << 64) | 2, 3 << 64  # A and B share their high 8 bytes; C < A < B


def build(batches: list[list[tuple]]) -> tuple:
    builder = TableBuilder()
    read = 0
    for spans in batches:
        n = len(spans)
        tid, sid, pid, start, end = (list(c) for c in zip(*spans)) if n else ([],) * 5
        i32 = np.zeros(n, dtype=np.int32)
        i8 = np.zeros(n, dtype=np.int8)
        builder.add(Batch(
            service=i32, trace_hi=np.array([t >> 64 for t in tid], dtype=np.uint64),
            trace_lo=np.array([t & U64 for t in tid], dtype=np.uint64), span_id=np.array(sid, dtype=np.uint64),
            parent_id=np.array(pid, dtype=np.uint64), name=np.arange(read, read + n, dtype=np.int32), kind=i8,
            start=np.array(start, dtype=np.int64), end=np.array(end, dtype=np.int64), status=i8, span_class=i8,
            db_system=i32, statement=i32, peer=i32, code_location=i32, cache_key=i32))
        read += n
    table = builder.finish()
    return table, builder.repairs.to_dict()


def reference(batches: list[list[tuple]]) -> tuple[list[int], list[int], dict]:
    """Read index of each row, each row's parent row before cycles are cut, and the repairs."""
    spans = [s for b in batches for s in b]
    first: dict[tuple, int] = {}
    for i, (tid, sid, *_) in enumerate(spans):
        first.setdefault((tid, sid), i)
    rows = sorted(first.values(), key=lambda i: (spans[i][0], spans[i][3], i))
    row_of = {(spans[i][0], spans[i][1]): r for r, i in enumerate(rows)}
    parent = [row_of.get((spans[i][0], spans[i][2]), -1) if spans[i][2] else -1 for i in rows]
    repairs = {
        "negative_duration": sum(end < start for *_, start, end in spans),
        "duplicate_spans": len(spans) - len(rows),
        "orphans": sum(spans[i][2] != 0 and p < 0 for i, p in zip(rows, parent)),
        "parent_cycles": len(cycles(parent)),
    }
    return rows, parent, repairs


def cycles(parent: list[int]) -> list[set[int]]:
    """The loops of the parent links, each as its set of rows."""
    state = [0] * len(parent)  # 0 unseen, 1 on the current path, 2 done
    found = []
    for r in range(len(parent)):
        path = []
        while r >= 0 and state[r] == 0:
            state[r] = 1
            path.append(r)
            r = parent[r]
        if r >= 0 and state[r] == 1:
            found.append(set(path[path.index(r):]))
        for p in path:
            state[p] = 2
    return found


def check(batches: list[list[tuple]]) -> tuple:
    """The table equals the reference: rows, trace ids, times, parents; each loop cut at exactly
    one of its spans, which becomes a root."""
    table, repairs = build(batches)
    rows, parent, want = reference(batches)
    spans = [s for b in batches for s in b]
    assert repairs == want
    assert table.name.tolist() == rows
    assert [int(table.trace_id_hex(t), 16) for t in table.trace] == [spans[i][0] for i in rows]
    assert [int(bytes(t).hex(), 16) for t in table.trace_ids] == sorted({s[0] for s in spans})
    assert table.span_id.tolist() == [spans[i][1] for i in rows]
    assert table.start.tolist() == [spans[i][3] for i in rows]
    assert table.end.tolist() == [max(spans[i][3], spans[i][4]) for i in rows]
    got = table.parent.tolist()
    loops = cycles(parent)
    on_loop = set().union(*loops)
    assert [p for r, p in enumerate(got) if r not in on_loop] == [p for r, p in enumerate(parent) if r not in on_loop]
    for loop in loops:
        assert sum(got[r] == -1 for r in loop) == 1
        assert all(got[r] in (-1, parent[r]) for r in loop)
    return table, repairs


def test_empty_input():
    table, repairs = check([])
    assert len(table) == 0 and table.n_traces == 0
    assert repairs == {"negative_duration": 0, "duplicate_spans": 0, "orphans": 0, "parent_cycles": 0}


def test_duplicate_delivered_twice_keeps_the_first_copy_read():
    # Span 2 of trace A arrives in both batches with different starts: the first copy (start 5) is kept.
    table, repairs = check([[(A, 1, 0, 0, 10), (A, 2, 1, 5, 8)], [(A, 2, 1, 1, 8), (A, 3, 2, 6, 7)]])
    assert repairs["duplicate_spans"] == 1
    assert table.name.tolist() == [0, 1, 3]
    assert table.parent.tolist() == [-1, 0, 1]


def test_orphans_become_roots():
    # A's span 2 names parent 9, in no trace; C's span 3 names parent 1, which only A and B have.
    table, repairs = check([[(A, 1, 0, 0, 9), (A, 2, 9, 1, 2), (B, 1, 0, 0, 9), (A, 3, 1, 2, 3), (C, 3, 1, 0, 1)]])
    assert repairs["orphans"] == 2
    assert table.parent.tolist() == [-1, -1, -1, 1, -1]  # rows: C3, A1, A2, A3, B1


def test_parent_cycles_are_cut_once_per_loop():
    # Trace A: 1 is its own parent. Trace B: 1 <-> 2, and 3 -> 4 -> 5 -> 3 with 6 hanging below 5.
    table, repairs = check([[(A, 1, 1, 0, 1), (B, 1, 2, 0, 1), (B, 2, 1, 1, 2), (B, 3, 4, 2, 3),
                             (B, 4, 5, 3, 4), (B, 5, 3, 4, 5), (B, 6, 5, 5, 6)]])
    assert repairs["parent_cycles"] == 3
    assert table.parent.tolist()[0] == -1
    assert table.parent.tolist()[6] == 5


def test_trace_ids_sharing_their_high_half_stay_apart():
    # A and B differ only in their low 8 bytes; the same span ids in both link within their own trace.
    table, repairs = check([[(B, 1, 0, 0, 9), (A, 1, 0, 0, 9), (B, 2, 1, 1, 2), (A, 2, 1, 1, 2)]])
    assert table.name.tolist() == [1, 3, 0, 2]
    assert table.trace.tolist() == [0, 0, 1, 1]
    assert table.parent.tolist() == [-1, 0, -1, 2]
    assert repairs["duplicate_spans"] == 0


def test_negative_durations_end_at_the_start():
    table, repairs = check([[(A, 1, 0, 10, 4), (A, 2, 1, 11, 12)]])
    assert repairs["negative_duration"] == 1
    assert table.end.tolist() == [10, 12]


def test_equal_starts_keep_read_order():
    table, _ = check([[(A, 3, 0, 5, 9), (A, 1, 0, 5, 9)], [(A, 2, 0, 5, 9), (A, 0, 0, 4, 9)]])
    assert table.name.tolist() == [3, 0, 1, 2]


def test_spans_of_different_traces_sharing_a_lookup_key():
    # Spans are looked up by span id xor mix(trace code); codes follow trace-id order (C=0, A=1, B=2).
    # Span x of trace A has the key of span 5 of trace C, and A's span 8 names x as its parent.
    x = 5 ^ int(mix(np.array([1], dtype=np.uint64))[0])
    table, repairs = check([[(C, 5, 0, 0, 9), (A, x, 0, 0, 9), (A, 8, x, 1, 2), (C, 6, 5, 1, 2), (A, x, 0, 3, 4),
                             (B, 5, x, 0, 1)]])
    assert repairs == {"negative_duration": 0, "duplicate_spans": 1, "orphans": 1, "parent_cycles": 0}
    assert table.parent.tolist() == [-1, 0, -1, 2, -1]


def test_absent_parent_whose_key_is_a_span_of_another_trace():
    # A's span 8 names parent y, which A lacks; y xor mix(code of A) is the key of C's span 5.
    y = 5 ^ int(mix(np.array([1], dtype=np.uint64))[0])
    table, repairs = check([[(C, 5, 0, 0, 9), (A, 8, y, 0, 9)]])
    assert repairs["orphans"] == 1
    assert table.parent.tolist() == [-1, -1]


def test_starts_spanning_the_whole_int64_range():
    # Trace codes and start offsets no longer fit one int64 key together.
    lo, hi = -(1 << 62), (1 << 62) - 1
    table, _ = check([[(B, 1, 0, lo, hi), (A, 2, 0, hi, hi), (A, 1, 0, lo, lo), (B, 2, 1, hi, hi), (A, 3, 0, lo, hi)]])
    assert table.name.tolist() == [2, 4, 1, 0, 3]


@pytest.mark.parametrize("seed", [0, 1])
def test_random_spans_match_the_reference(seed):
    # 60k spans (past searchsorted_many's sorted-query threshold) over few traces, ids and times,
    # so duplicates, orphans, loops, shared ids and equal starts all occur many times.
    rng = np.random.default_rng(seed)
    traces = [(int(h) << 64) | int(l) for h, l in zip(rng.integers(0, 20, 300), rng.integers(0, 3, 300))]
    batches = []
    for _ in range(6):
        n = 10_000
        tid = rng.choice(traces, n)
        sid = rng.integers(1, 400, n)
        pid = np.where(rng.random(n) < 0.1, 0, rng.integers(1, 400, n))
        start = rng.integers(0, 50, n)
        end = start + rng.integers(-3, 20, n)
        batches.append([tuple(int(v) for v in s) for s in zip(tid, sid, pid, start, end)])
    _, repairs = check(batches)
    assert all(repairs.values())


@pytest.mark.parametrize("width,blocks", [(128, False), (64, False), (128, True)])
def test_a_table_finished_per_range_of_traces_matches_the_reference(width, blocks, monkeypatch):
    # Past RANGE_ROWS rows, finish works per range of trace ids (a radix sort on an id prefix, then each
    # range on its own): with a small RANGE_ROWS, 20k spans of 500 traces make ~80 ranges, dealt out to
    # 8 parts, and every row, parent and repair must be what finishing them as a whole gives. 64-bit
    # ids (the high half zero, as from Zipkin or Jaeger) are ranged by their low half. With small
    # blocks of records, the batches fill 7 blocks (some batches split across two) and each range
    # gathers from several.
    monkeypatch.setattr(table_module, "RANGE_ROWS", 256)
    monkeypatch.setattr(table_module, "PART_ROWS", 3_000)
    if blocks:
        monkeypatch.setattr(table_module, "FIRST_BLOCK_ROWS", 1_000)
        monkeypatch.setattr(table_module, "BLOCK_ROWS", 4_096)
    rng = np.random.default_rng(width)
    hi = rng.integers(0, 1 << 64, 500, dtype=np.uint64) if width == 128 else np.zeros(500, dtype=np.uint64)
    traces = [(int(h) << 64) | int(l) for h, l in zip(hi, rng.integers(1, 1 << 64, 500, dtype=np.uint64))]
    batches = []
    for _ in range(4):
        n = 5_000
        tid = [traces[i] for i in rng.integers(0, 500, n)]
        sid = rng.integers(1, 60, n)
        pid = np.where(rng.random(n) < 0.1, 0, rng.integers(1, 60, n))
        start = rng.integers(0, 50, n)
        batches.append([tuple(int(v) for v in s) for s in zip(tid, sid, pid, start, start + rng.integers(-3, 20, n))])
    table, repairs = check(batches)
    assert all(repairs.values())
    assert table.n_traces == len({s[0] for b in batches for s in b}) == 500


@pytest.mark.parametrize("case", ["empty", "one", "random with copies", "small ints", "shared high bits"])
def test_stable_argsort_is_numpys_stable_argsort(case):
    # Small ints and keys differing only in their low bits tie on the high bits the value sort uses.
    rng = np.random.default_rng(3)
    key = {
        "empty": np.zeros(0, dtype=np.uint64),
        "one": np.array([5], dtype=np.uint64),
        "random with copies": rng.integers(0, 1 << 64, 5000, dtype=np.uint64)[rng.integers(0, 5000, 20000)],
        "small ints": rng.integers(0, 50, 20000).astype(np.uint64),
        "shared high bits": (rng.integers(0, 30, 20000).astype(np.uint64) << np.uint64(40))
        | rng.integers(0, 1 << 20, 20000).astype(np.uint64),
    }[case]
    order, k = _stable_argsort(key)
    assert order.tolist() == np.argsort(key, kind="stable").tolist()
    assert k.tolist() == np.sort(key).tolist()
