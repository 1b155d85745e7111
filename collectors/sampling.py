"""Stratified trace sampling for long windows, with the weights that keep figures unbiased.

A week in a busy trace store holds far more traces than anyone should pull. Any source that can
list candidates cheaply (a store's search results, ClickHouse's entry spans, TraceQL metrics)
hands them to `draw`, which picks a bounded sample per (service, operation):

- the tail: every candidate slower than the operation's p95, up to `tail_cap` (a uniform draw
  among them beyond that);
- the body: a uniform draw of `body_size` among the rest.

Each picked trace gets the weight 1 / (its chance of being picked), times the ratio of the
store's count to the candidates listed when the store counted more than it listed
(`population`). `weigh` puts those weights on the SpanTable; hot-spot totals, shares and
quantiles (`analyzer/hotspots.py`) then estimate the whole window's figures: the tail is kept
whole (weight 1) and the common case thinned.

Usage:

    sample = draw(candidates, SamplingPlan(tail_cap=200))
    ... fetch sample.trace_ids into a table ...
    table = weigh(table, sample.weights)
    stats.sampling = sample.report(pulled=traces_fetched)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from analyzer.model.arrays import weighted_quantile
from analyzer.model.spans import SpanTable


@dataclass(frozen=True)
class Candidate:
    """A trace a store listed: its id (hex) and the entry span it was listed for."""

    trace_id: str
    service: str
    operation: str
    duration_ns: int


@dataclass(frozen=True)
class Whole:
    """What the store itself says of one (service, operation) over the whole window."""

    count: int  # traces (>= those listed)
    tail_threshold_ns: float | None = None  # its tail quantile over the window (TraceQL metrics, a first pass)
    tail_count: int | None = None  # traces above that threshold, when the store listed or counted them


@dataclass(frozen=True)
class SamplingPlan:
    """How many traces to pull per (service, operation)."""

    tail_cap: int = 100  # most traces kept above the tail quantile
    body_size: int = 100  # uniform draw below it
    tail_quantile: float = 0.95
    seed: int = 0  # the draw is reproducible: the same candidates give the same sample

    def describe(self) -> str:
        return (f"stratified per (service, operation): every trace above p{self.tail_quantile * 100:g} "
                f"up to {self.tail_cap}, a uniform {self.body_size} below; weighted by 1/inclusion probability")


@dataclass(frozen=True)
class Stratum:
    """What was drawn for one (service, operation)."""

    service: str
    operation: str
    considered: int  # candidates listed
    population: int  # traces the store counted (>= considered)
    threshold_ms: float  # the tail quantile of the durations (the store's when it gave one)
    tail: int  # candidates above it
    tail_pulled: int
    body_pulled: int
    threshold_from: str = "candidates"  # "candidates" | "store": where the tail threshold came from

    def to_dict(self) -> dict:
        return {"service": self.service, "operation": self.operation, "considered": self.considered,
                "population": self.population, "threshold_ms": round(self.threshold_ms, 3), "tail": self.tail,
                "tail_pulled": self.tail_pulled, "body_pulled": self.body_pulled,
                "threshold_from": self.threshold_from}


@dataclass
class Sample:
    """The traces to pull, with their weights (trace id hex -> traces of the store it stands for)."""

    plan: SamplingPlan
    weights: dict[str, float] = field(default_factory=dict)
    strata: list[Stratum] = field(default_factory=list)
    considered: int = 0  # distinct traces listed

    @property
    def trace_ids(self) -> list[str]:
        return list(self.weights)

    def report(self, pulled: int) -> dict:
        """The `sampling` object of a source in the report's `input` section."""
        return {
            "method": self.plan.describe(),
            "considered": self.considered,
            "population": sum(s.population for s in self.strata),
            "selected": len(self.weights),
            "pulled": pulled,
            "strata": [s.to_dict() for s in self.strata],
        }


def draw(candidates: Iterable[Candidate], plan: SamplingPlan = SamplingPlan(),
         population: Mapping[tuple[str, str], int | Whole] | None = None) -> Sample:
    """The stratified sample of `candidates` (see the module docstring).

    A trace listed under several (service, operation) pairs is drawn in the first only, so each
    trace has one weight. `population` maps (service, operation) to the store's own count of
    such traces over the window when it is larger than what was listed (a search limit): the
    listed ones are then taken as a uniform sample of it and their weights scaled up. A `Whole`
    with a tail threshold (the store's p95 over the window, or a first pass's) splits tail and
    body at it instead of at the candidates' own quantile; with a tail count, the tail and the
    body are scaled each to its own count (a targeted tail search lists the tail whole while the
    body's search is cut by its limit)."""
    groups: dict[tuple[str, str], list[Candidate]] = {}
    seen: set[str] = set()
    for c in candidates:
        if c.trace_id in seen:
            continue
        seen.add(c.trace_id)
        groups.setdefault((c.service, c.operation), []).append(c)
    rng = np.random.default_rng(plan.seed)
    sample = Sample(plan=plan, considered=len(seen))
    for key in sorted(groups):
        group = groups[key]
        n = len(group)
        whole = (population or {}).get(key)
        if not isinstance(whole, Whole):
            whole = Whole(int(whole) if whole is not None else n)
        known = max(n, int(whole.count))
        dur = np.fromiter((c.duration_ns for c in group), dtype=np.int64, count=n)
        given = whole.tail_threshold_ns is not None
        threshold = float(whole.tail_threshold_ns) if given else weighted_quantile(dur, plan.tail_quantile)
        tail = np.flatnonzero(dur > threshold)
        body = np.flatnonzero(dur <= threshold)
        if whole.tail_count is not None and tail.size and body.size:
            tail_known = min(known, max(int(tail.size), int(whole.tail_count)))
            scales = (tail_known / tail.size, max(known - tail_known, body.size) / body.size)
        else:
            scales = (known / n, known / n)
        tail_pick, tail_w = _uniform(rng, tail, plan.tail_cap)
        body_pick, body_w = _uniform(rng, body, plan.body_size)
        for rows, w, scale in ((tail_pick, tail_w, scales[0]), (body_pick, body_w, scales[1])):
            for i in rows.tolist():
                sample.weights[group[i].trace_id] = w * scale
        sample.strata.append(Stratum(service=key[0], operation=key[1], considered=n, population=known,
                                     threshold_ms=threshold / 1e6, tail=int(tail.shape[0]),
                                     tail_pulled=int(tail_pick.shape[0]), body_pulled=int(body_pick.shape[0]),
                                     threshold_from="store" if given else "candidates"))
    return sample


def _uniform(rng: np.random.Generator, rows: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Up to `k` of `rows` without replacement, and the weight each stands for."""
    if rows.shape[0] <= k:
        return rows, 1.0
    if k <= 0:
        return rows[:0], 0.0
    return np.sort(rng.choice(rows, size=k, replace=False)), rows.shape[0] / k


def weigh(table: SpanTable, weights: Mapping[str, float]) -> SpanTable:
    """Set each trace's weight on `table` from `weights` (trace id hex; 1 for traces not in it); returns it.

    Trace ids are compared as 32 hex digits, so a 64-bit id and its zero-padded form match."""
    w = np.ones(table.n_traces, dtype=np.float64)
    if weights:
        wanted = {tid.lower().rjust(32, "0"): float(v) for tid, v in weights.items()}
        for code, raw in enumerate(table.trace_ids):
            v = wanted.get(bytes(raw).hex())
            if v is not None:
                w[code] = v
    table.trace_weight = w
    return table
