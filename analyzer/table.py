"""Building a SpanTable from decoded batches, with every repair counted.

Decoders append one `Batch` per (resource, scope) group; `TableBuilder.finish` concatenates
the columns, factorizes trace ids, sorts rows by (trace, start) and resolves parents.

Repairs, each counted in `Repairs` and shown under the report's `input`:
- `negative_duration`: end before start; the end is set to the start (duration 0).
- `duplicate_spans`: a (trace id, span id) seen again (exporter retries deliver twice);
  the first copy is kept, later ones dropped.
- `orphans`: the parent span id is not in the input; the span is treated as a root.
- `parent_cycles`: following parents loops back; the loop is cut at one span per loop
  reached, which becomes a root.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analyzer.model import SpanTable
from analyzer.semconv import runtime_of


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
        return list(self.codes)


@dataclass
class Batch:
    """Columns of one group of spans sharing a resource. Bytes columns are concatenated ids."""

    service: int
    trace_ids: bytes  # n * 16
    span_ids: bytes  # n * 8
    parent_ids: bytes  # n * 8, zeros for none
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
    runtimes: dict[str, str] = field(default_factory=dict)
    batches: list[Batch] = field(default_factory=list)
    repairs: Repairs = field(default_factory=Repairs)

    def service(self, name: str, process_runtime: str | None, sdk_language: str | None) -> int:
        code = self.services.code(name)
        runtime = runtime_of(process_runtime, sdk_language)
        if runtime != "unknown" or name not in self.runtimes:
            self.runtimes[name] = runtime
        return code

    def add(self, batch: Batch) -> None:
        if batch.kind.shape[0]:
            self.batches.append(batch)

    def finish(self) -> SpanTable:
        b = self.batches
        cat = lambda name, dtype: (  # noqa: E731
            np.concatenate([getattr(x, name) for x in b]).astype(dtype, copy=False) if b else np.zeros(0, dtype)
        )
        n = sum(x.kind.shape[0] for x in b)
        service = np.concatenate([np.full(x.kind.shape[0], x.service, np.int32) for x in b]) if b else np.zeros(0, np.int32)
        raw_trace = np.frombuffer(b"".join(x.trace_ids for x in b), dtype="V16")
        span_id = np.frombuffer(b"".join(x.span_ids for x in b), dtype=">u8").astype(np.uint64)
        parent_id = np.frombuffer(b"".join(x.parent_ids for x in b), dtype=">u8").astype(np.uint64)
        start, end = cat("start", np.int64), cat("end", np.int64)
        cols = {
            "service": service,
            "span_id": span_id,
            "parent_id": parent_id,
            "name": cat("name", np.int32),
            "kind": cat("kind", np.int8),
            "start": start,
            "end": end,
            "status": cat("status", np.int8),
            "span_class": cat("span_class", np.int8),
            "db_system": cat("db_system", np.int32),
            "statement": cat("statement", np.int32),
            "peer": cat("peer", np.int32),
            "code_location": cat("code_location", np.int32),
            "cache_key": cat("cache_key", np.int32),
        }
        self.batches = []  # the columns now own the data

        bad = end < start
        self.repairs.negative_duration += int(bad.sum())
        cols["end"] = np.where(bad, start, end)

        trace_ids, trace = np.unique(raw_trace, return_inverse=True)
        trace = trace.astype(np.int32)

        # Duplicates: keep the first copy read of each (trace, span id).
        read_order = np.arange(n, dtype=np.int64)
        order = np.lexsort((read_order, span_id, trace))
        same_as_prev = np.zeros(n, dtype=bool)
        if n:
            same_as_prev[1:] = (trace[order][1:] == trace[order][:-1]) & (span_id[order][1:] == span_id[order][:-1])
        keep = np.ones(n, dtype=bool)
        keep[order[same_as_prev]] = False
        self.repairs.duplicate_spans += int((~keep).sum())

        # Final row order: by trace, then start time, so each trace is a contiguous range.
        rows = np.flatnonzero(keep)
        rows = rows[np.lexsort((cols["start"][rows], trace[rows]))]
        trace = trace[rows]
        cols = {k: v[rows] for k, v in cols.items()}

        parent = _resolve_parents(trace, cols["span_id"], cols["parent_id"])
        has_parent_id = cols["parent_id"] != 0
        self.repairs.orphans += int((has_parent_id & (parent < 0)).sum())
        cut = _cut_cycles(parent, trace)
        self.repairs.parent_cycles += cut

        return SpanTable(
            trace=trace,
            parent=parent,
            trace_ids=np.frombuffer(trace_ids.tobytes(), dtype=np.uint8).reshape(-1, 16),
            services=self.services.values(),
            names=self.names.values(),
            statements=self.statements.values(),
            peers=self.peers.values(),
            code_locations=self.code_locations.values(),
            strings=self.strings.values(),
            runtimes=dict(self.runtimes),
            **cols,
        )


def _resolve_parents(trace: np.ndarray, span_id: np.ndarray, parent_id: np.ndarray) -> np.ndarray:
    """Row of each span's parent within its trace, -1 when absent, by a sorted search on (trace, id)."""
    n = trace.shape[0]
    key = np.empty(n, dtype=[("t", ">u4"), ("s", ">u8")])
    key["t"], key["s"] = trace, span_id
    key = key.view("V12")
    order = np.argsort(key, kind="stable")
    sorted_keys = key[order]
    want = np.empty(n, dtype=[("t", ">u4"), ("s", ">u8")])
    want["t"], want["s"] = trace, parent_id
    want = want.view("V12")
    pos = np.searchsorted(sorted_keys, want)
    pos_c = np.minimum(pos, max(n - 1, 0))
    found = (pos < n) & (parent_id != 0)
    if n:
        found &= sorted_keys[pos_c] == want
    return np.where(found, order[pos_c], -1).astype(np.int32)


def _cut_cycles(parent: np.ndarray, trace: np.ndarray) -> int:
    """Detach spans so that following parents always ends at a root; returns how many were cut.

    Pointer doubling: after k rounds `jump` is the 2^k-th ancestor. Spans whose chain has not
    ended after log2(n)+1 rounds lead into a loop, and where they land is on the loop. Per
    trace, the lowest such landing row is made a root; repeat until no loop is left."""
    n = parent.shape[0]
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

