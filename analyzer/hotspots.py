"""Hot spots: entry spans grouped by (service, operation), ranked by impact.

When the table is a weighted sample (`SpanTable.trace_weight`), each entry counts as many
requests as its trace's weight: totals, the estimated request count, mean parts, shares and
quantiles are all weighted, so a sample that keeps the whole tail and thins the rest still
estimates the population's figures without bias. `count` stays the number of entries read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analyzer.breakdown import PARTS, Breakdown
from analyzer.model.arrays import weighted_quantile
from analyzer.model.spans import SpanTable

NS_PER_MS = 1e6


@dataclass
class Hotspot:
    service: str
    operation: str
    entries: np.ndarray  # rows of the entry spans in the SpanTable, by start time
    durations: np.ndarray  # ns, per entry
    parts: np.ndarray  # (count, len(PARTS)) ns, per entry; rows add up to durations
    weights: np.ndarray | None = None  # float64 per entry (its trace's sample weight); None = all 1
    _quantiles: dict[float, float] = field(default_factory=dict, repr=False, compare=False)

    @property
    def count(self) -> int:
        return int(self.entries.shape[0])

    @property
    def estimated_count(self) -> float:
        """Requests the entries stand for: their weights' sum (the count itself when not sampled)."""
        return float(self.weights.sum()) if self.weights is not None else float(self.count)

    @property
    def total_ms(self) -> float:
        return self._weighted_sum(self.durations) / NS_PER_MS

    def quantile_ns(self, q: float) -> float:
        """A quantile of the durations, memoized: the ranking, the report and the rules ask for the same few."""
        if q not in self._quantiles:
            self._quantiles[q] = weighted_quantile(self.durations, q, self.weights)
        return self._quantiles[q]

    def quantile_ms(self, q: float) -> float:
        return self.quantile_ns(q) / NS_PER_MS if self.count else 0.0

    def mean_parts_ms(self) -> dict[str, float]:
        if not self.count:
            return dict(zip(PARTS, (0.0,) * len(PARTS)))
        means = np.average(self.parts, axis=0, weights=self.weights) / NS_PER_MS
        return dict(zip(PARTS, (float(x) for x in means)))

    def part_share(self, *names: str) -> float:
        """Fraction of the hot spot's total time in the named parts."""
        total = self._weighted_sum(self.durations)
        if total <= 0:
            return 0.0
        idx = [PARTS.index(n) for n in names]
        return self._weighted_sum(self.parts[:, idx].sum(axis=1)) / total

    def _weighted_sum(self, values: np.ndarray) -> float:
        if self.weights is None:
            return float(values.sum())
        return float(values.astype(np.float64) @ self.weights)



def find_hotspots(t: SpanTable, b: Breakdown, start_ns: int | None = None, end_ns: int | None = None,
                  services: list[str] | None = None) -> list[Hotspot]:
    """Group entry spans that start inside [start_ns, end_ns) by (service, name); most impact first.

    Impact is the total time spent in the operation, with p99 latency as the tie-break."""
    entries = b.entries  # by operation, then start
    keep = np.ones(entries.shape[0], dtype=bool)
    if start_ns is not None or end_ns is not None:
        st = t.start[entries]
        if start_ns is not None:
            keep &= st >= start_ns
        if end_ns is not None:
            keep &= st < end_ns
    if services:
        codes = [t.services.index(s) for s in services if s in t.services]
        keep &= np.isin(t.service[entries], codes)
    # Each hot spot is a slice of the breakdown's entries and parts (views, when nothing is left out).
    rows, parts = (entries, b.parts) if keep.all() else (entries[keep], np.compress(keep, b.parts, axis=0))
    if not rows.size:
        return []
    key = t.service[rows].astype(np.int64) * max(len(t.names), 1) + t.name[rows]
    durations = t.end[rows] - t.start[rows]
    weights = t.row_weights(rows)
    bounds = (np.flatnonzero(np.diff(key)) + 1).tolist()
    out = []
    for lo, hi in zip([0, *bounds], [*bounds, rows.shape[0]]):
        out.append(Hotspot(
            service=t.services[t.service[rows[lo]]],
            operation=t.names[t.name[rows[lo]]],
            entries=rows[lo:hi],
            durations=durations[lo:hi],
            parts=parts[lo:hi],
            weights=None if weights is None else weights[lo:hi],
        ))
    out.sort(key=lambda h: (-h.total_ms, -h.quantile_ms(0.99), h.service, h.operation))
    return out
