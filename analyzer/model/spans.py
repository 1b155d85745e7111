"""The columnar span model every analysis step reads.

A `SpanTable` holds one row per span in numpy arrays. Strings (services, span
names, statements, peers, code locations) are stored once in a lookup list and
referenced by an int32 code, with -1 meaning "absent". Rows are sorted by
(trace, start), so each trace is one contiguous index range.

Each span also carries its resource's `deployment.environment` (`environment`, a code into
`environments`, -1 when the resource names none): a code per resource, so filtering a run to
production costs one comparison per span and no string per span.

A table pulled as a sample (`collectors/sampling.py`) carries a weight per trace: how many
traces of the store each sampled one stands for. Totals, shares and quantiles of hot spots
use it, so a stratified sample that keeps the whole tail still gives unbiased figures.
Without a sample every trace weighs 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


class Kind(IntEnum):
    """OTLP `Span.SpanKind` values."""

    UNSPECIFIED = 0
    INTERNAL = 1
    SERVER = 2
    CLIENT = 3
    PRODUCER = 4
    CONSUMER = 5


class Status(IntEnum):
    """OTLP `Status.StatusCode` values."""

    UNSET = 0
    OK = 1
    ERROR = 2


class SpanClass(IntEnum):
    """What a span waits on, derived from its kind and semantic-convention attributes."""

    INTERNAL = 0
    DATABASE = 1
    CACHE = 2
    REMOTE = 3  # rpc or http client call to another service
    MESSAGING = 4


NO_CODE = -1


@dataclass
class SpanTable:
    """One row per span; see the module docstring for the encoding."""

    trace: np.ndarray  # int32 code of the 16-byte trace id (index into trace_ids)
    span_id: np.ndarray  # uint64, the 8-byte span id read big-endian
    parent_id: np.ndarray  # uint64, 0 when the span has no parent
    parent: np.ndarray  # int32 row of the parent in this table, -1 for roots and orphans
    service: np.ndarray  # int32 code into services
    name: np.ndarray  # int32 code into names
    kind: np.ndarray  # int8 Kind
    start: np.ndarray  # int64 unix ns
    end: np.ndarray  # int64 unix ns
    status: np.ndarray  # int8 Status
    span_class: np.ndarray  # int8 SpanClass
    db_system: np.ndarray  # int32 code into strings, -1 absent
    statement: np.ndarray  # int32 code into statements (normalized, literals stripped), -1 absent
    peer: np.ndarray  # int32 code into peers ("host:port" or peer.service), -1 absent
    code_location: np.ndarray  # int32 code into code_locations ("path:line (function)"), -1 absent
    cache_key: np.ndarray  # int32 code into strings: the key of a cache operation when visible, -1 absent
    trace_ids: np.ndarray  # (n_traces, 16) uint8, the raw trace id of each trace code
    services: list[str]
    names: list[str]
    statements: list[str]
    peers: list[str]
    code_locations: list[str]
    strings: list[str]  # db systems and cache keys
    runtimes: dict[str, str] = field(default_factory=dict)  # service -> runtime name
    # float64 per trace code: traces of the population each sampled trace stands for; None = all 1
    trace_weight: np.ndarray | None = None
    environment: np.ndarray | None = None  # int32 code into environments, -1 absent; None: all absent
    environments: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.environment is None:
            self.environment = np.full(self.start.shape[0], NO_CODE, dtype=np.int32)

    def __len__(self) -> int:
        return int(self.start.shape[0])

    @property
    def duration(self) -> np.ndarray:
        return self.end - self.start

    @property
    def n_traces(self) -> int:
        return int(self.trace_ids.shape[0])

    def trace_id_hex(self, code: int) -> str:
        return bytes(self.trace_ids[code]).hex()

    def span_id_hex(self, row: int) -> str:
        return f"{int(self.span_id[row]):016x}"

    @property
    def sampled(self) -> bool:
        return self.trace_weight is not None

    def row_weights(self, rows: np.ndarray) -> np.ndarray | None:
        """The weight of each of `rows` (its trace's), or None when the table is not a sample."""
        return None if self.trace_weight is None else self.trace_weight[self.trace[rows]]

    def service_code(self, name: str) -> int:
        try:
            return self.services.index(name)
        except ValueError:
            return NO_CODE

    def environment_mask(self, wanted: tuple[str, ...]) -> np.ndarray:
        """Rows whose resource names one of `wanted` environments, or none at all (as the
        Prometheus filter keeps series without the label)."""
        keep = np.zeros(len(self.environments) + 1, dtype=bool)  # the last entry: code -1, absent
        keep[-1] = True
        for code, name in enumerate(self.environments):
            keep[code] = name in wanted
        return keep[self.environment]

    def take(self, rows: np.ndarray) -> "SpanTable":
        """A table with only `rows` (a boolean mask or sorted indices); parent links re-pointed."""
        idx = np.flatnonzero(rows) if rows.dtype == bool else np.asarray(rows, dtype=np.int64)
        remap = np.full(len(self) + 1, -1, dtype=np.int32)
        remap[idx] = np.arange(idx.shape[0], dtype=np.int32)
        parent = self.parent[idx]
        new_parent = np.where(parent >= 0, remap[parent], -1).astype(np.int32)
        cols = {
            name: getattr(self, name)[idx]
            for name in (
                "trace", "span_id", "parent_id", "service", "name", "kind", "start", "end",
                "status", "span_class", "db_system", "statement", "peer", "code_location", "cache_key",
                "environment",
            )
        }
        return SpanTable(
            parent=new_parent,
            trace_ids=self.trace_ids,
            services=self.services,
            names=self.names,
            statements=self.statements,
            peers=self.peers,
            code_locations=self.code_locations,
            strings=self.strings,
            runtimes=self.runtimes,
            trace_weight=self.trace_weight,
            environments=self.environments,
            **cols,
        )
