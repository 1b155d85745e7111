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
    def total_ns(self) -> int:
        return int(self.hotspot.durations.sum())

    def sample_trace(self, rows: np.ndarray) -> str:
        """A trace id to quote as evidence: the trace of the slowest entry among `rows`' owners."""
        if not rows.size:
            return ""
        owners = self.breakdown.owner[rows]
        dur = self.table.end[owners] - self.table.start[owners]
        return self.table.trace_id_hex(int(self.table.trace[owners[int(np.argmax(dur))]]))
