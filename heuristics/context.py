"""What a detector sees: one hot spot, the spans it owns, and its service's signals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

import numpy as np

from analyzer.breakdown import Breakdown
from analyzer.classify import ClassifyConfig
from analyzer.hotspots import Hotspot
from analyzer.model.spans import SpanTable
from analyzer.model.arrays import sorted_unique, weighted_quantile
from analyzer.profile_summary import ProfileView
from analyzer.model.signals import ServiceSignals
from analyzer.model.store_figures import StoreFigures

T = TypeVar("T")


@dataclass
class HotspotContext:
    table: SpanTable
    breakdown: Breakdown
    hotspot: Hotspot
    signals: ServiceSignals | None = None
    # Every hot spot of the run, so a finding can point at a downstream's own hot spot.
    all_hotspots: tuple[Hotspot, ...] = ()
    classify: ClassifyConfig = ClassifyConfig()  # the user's margins, for naming another hot spot's category
    # Whole-window figures from the trace store when the table is a sample of it (ClickHouse).
    store: StoreFigures | None = None
    profile: ProfileView | None = None  # the service's CPU profiles, when given (--profile, --pyroscope)
    _derived: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    def once(self, key: str, compute: Callable[[], T]) -> T:
        """A value several rules derive from this hot spot, computed the first time it is asked for."""
        if key not in self._derived:
            self._derived[key] = compute()
        return self._derived[key]  # type: ignore[return-value]

    @cached_property
    def sampled(self) -> bool:
        """Whether the table is a weighted sample: every count, sum and quantile below is weighted."""
        return self.hotspot.weights is not None

    @cached_property
    def req_weight(self) -> np.ndarray:
        """Per request of the hot spot (entry order): the traces of the window it stands for (1 unsampled)."""
        h = self.hotspot
        return h.weights.astype(np.float64) if h.weights is not None else np.ones(h.count)

    @cached_property
    def n_requests(self) -> float:
        """The requests the hot spot stands for: its entry count, or their weights' sum in a sample."""
        return self.hotspot.estimated_count

    @cached_property
    def total_ns(self) -> float:
        """The hot spot's time (weighted in a sample): the denominator of every share."""
        d = self.hotspot.durations
        return float(d.sum()) if not self.sampled else float(d.astype(np.float64) @ self.req_weight)

    def requests(self, req: np.ndarray) -> float:
        """How many requests the distinct request indices in `req` stand for."""
        return float(self.req_weight[sorted_unique(req)].sum())

    def quantile(self, values: np.ndarray, q: float, weights: np.ndarray) -> float:
        """The q-quantile of span `values`, each counted as its request's `weights` in a sample."""
        return weighted_quantile(values, q, weights if self.sampled else None)

    def sample_trace(self, rows: np.ndarray) -> str:
        """A trace id to quote as evidence: the trace of the slowest entry among `rows`' owners."""
        if not rows.size:
            return ""
        owners = self.breakdown.owner[rows]
        dur = self.table.end[owners] - self.table.start[owners]
        return self.table.trace_id_hex(int(self.table.trace[owners[int(np.argmax(dur))]]))
