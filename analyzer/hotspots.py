"""Hot spots: entry spans grouped by (service, operation), ranked by impact."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analyzer.breakdown import PARTS, Breakdown
from analyzer.model import SpanTable

NS_PER_MS = 1e6


@dataclass
class Hotspot:
    service: str
    operation: str
    entries: np.ndarray  # rows of the entry spans in the SpanTable, by start time
    durations: np.ndarray  # ns, per entry
    parts: np.ndarray  # (count, len(PARTS)) ns, per entry; rows add up to durations
    _quantiles: dict[float, float] = field(default_factory=dict, repr=False, compare=False)

    @property
    def count(self) -> int:
        return int(self.entries.shape[0])

    @property
    def total_ms(self) -> float:
        return float(self.durations.sum()) / NS_PER_MS

    def quantile_ns(self, q: float) -> float:
        """A quantile of the durations, memoized: the ranking, the report and the rules ask for the same few."""
        if q not in self._quantiles:
            self._quantiles[q] = float(np.quantile(self.durations, q))
        return self._quantiles[q]

    def quantile_ms(self, q: float) -> float:
        return self.quantile_ns(q) / NS_PER_MS if self.count else 0.0

    def mean_parts_ms(self) -> dict[str, float]:
        means = self.parts.mean(axis=0) / NS_PER_MS if self.count else np.zeros(len(PARTS))
        return dict(zip(PARTS, (float(x) for x in means)))

    def part_share(self, *names: str) -> float:
        """Fraction of the hot spot's total time in the named parts."""
        total = float(self.durations.sum())
        if total <= 0:
            return 0.0
        idx = [PARTS.index(n) for n in names]
        return float(self.parts[:, idx].sum()) / total


def find_hotspots(t: SpanTable, b: Breakdown, start_ns: int | None = None, end_ns: int | None = None,
                  services: list[str] | None = None) -> list[Hotspot]:
    """Group entry spans that start inside [start_ns, end_ns) by (service, name); most impact first.

    Impact is the total time spent in the operation, with p99 latency as the tie-break."""
    entries = b.entries
    keep = np.ones(entries.shape[0], dtype=bool)
    st = t.start[entries]
    if start_ns is not None:
        keep &= st >= start_ns
    if end_ns is not None:
        keep &= st < end_ns
    if services:
        codes = [t.services.index(s) for s in services if s in t.services]
        keep &= np.isin(t.service[entries], codes)
    idx = np.flatnonzero(keep)
    if not idx.size:
        return []
    rows = entries[idx]
    key = t.service[rows].astype(np.int64) * max(len(t.names), 1) + t.name[rows]
    order = np.lexsort((t.start[rows], key))
    # Gathered once in group order; each hot spot gets its slice.
    rows, parts = rows[order], b.parts[idx[order]]
    durations = t.end[rows] - t.start[rows]
    bounds = (np.flatnonzero(np.diff(key[order])) + 1).tolist()
    out = []
    for lo, hi in zip([0, *bounds], [*bounds, rows.shape[0]]):
        out.append(Hotspot(
            service=t.services[t.service[rows[lo]]],
            operation=t.names[t.name[rows[lo]]],
            entries=rows[lo:hi],
            durations=durations[lo:hi],
            parts=parts[lo:hi],
        ))
    out.sort(key=lambda h: (-h.total_ms, -h.quantile_ms(0.99), h.service, h.operation))
    return out
