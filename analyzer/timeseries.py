"""Small time series for the report's charts, and sample trace ids per hot spot.

Per service, the window is cut into at most MAX_POINTS bins of a round step (1 s ... 1 d):
per bin the request count and latency percentiles of the service's entry spans, and the mean
of each runtime signal (GC time, CPU use) whose samples fall in it. Every series has one
value per bin (null where a bin has no data), so a chart needs no alignment of its own and
the JSON stays a few kilobytes per service whatever the window's length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from analyzer.hotspots import NS_PER_MS, Hotspot
from analyzer.model.spans import SpanTable
from analyzer.model.signals import ServiceSignals, Signal

MAX_POINTS = 300
STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
QUANTILES = {"p50_ms": 0.50, "p95_ms": 0.95, "p99_ms": 0.99}
#: Runtime signals charted beside latency, by their report key (the Signal name itself).
CHARTED_SIGNALS = (Signal.GC_SECONDS_PER_SECOND, Signal.CPU_CORES_USED, Signal.CPU_CORES_AVAILABLE)


def bin_step(span_s: float, max_points: int = MAX_POINTS) -> int:
    """The smallest round step that cuts `span_s` seconds into at most `max_points` bins, counting
    the one that bins aligned to multiples of the step can add."""
    for step in STEPS_S:
        if span_s / step <= max_points - 1:
            return step
    return int(math.ceil(span_s / (max_points - 1) / 86400)) * 86400


def service_timeseries(t: SpanTable, hotspots: Sequence[Hotspot], signals: ServiceSignals | None,
                       start_s: float | None = None, end_s: float | None = None) -> dict | None:
    """The `timeseries` of one service over [start_s, end_s), or None when nothing falls in it.

    Without an explicit window, the service's own span of time: its first entry span to its
    last, or its runtime signals' first to last sample when it has no traces."""
    if start_s is None or end_s is None:
        lo, hi = _own_range(t, hotspots, signals)
        start_s = lo if start_s is None else start_s
        end_s = hi if end_s is None else end_s
    if start_s is None or end_s is None or not end_s > start_s:
        return None
    step = bin_step(end_s - start_s)
    start = int(math.floor(start_s / step)) * step
    n = max(1, int(math.ceil((end_s - start) / step)))
    out: dict = {"step_s": step, "t": [int(start + i * step) for i in range(n)]}
    has_data = False
    if hotspots:
        rows = np.concatenate([h.entries for h in hotspots])
        durations = np.concatenate([h.durations for h in hotspots]).astype(np.float64) / NS_PER_MS
        weights = np.concatenate([h.weights if h.weights is not None else np.ones(h.count) for h in hotspots])
        bins = ((t.start[rows] / 1e9 - start) // step).astype(np.int64)
        keep = (bins >= 0) & (bins < n)
        counts, quantiles = _binned_quantiles(bins[keep], durations[keep], weights[keep], n)
        out["requests"] = [int(round(c)) for c in counts]
        for key, values in zip(QUANTILES, quantiles):
            out[key] = _nullable(values)
        has_data = bool(counts.any())
    sources = {}
    for name in CHARTED_SIGNALS:
        series = signals.get(name) if signals is not None else None
        if series is None:
            continue
        bins = ((series.t - start) // step).astype(np.int64)
        keep = (bins >= 0) & (bins < n) & np.isfinite(series.v)
        if not keep.any():
            continue
        totals = np.bincount(bins[keep], weights=series.v[keep], minlength=n)
        counts = np.bincount(bins[keep], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = _nullable(np.where(counts > 0, totals / np.maximum(counts, 1), np.nan))
        sources[name] = series.source
        has_data = True
    if sources:
        out["sources"] = sources
    return out if has_data else None


def sample_traces(t: SpanTable, h: Hotspot) -> list[dict]:
    """Trace ids of the hot spot's median, p99 and slowest request (fewer when they coincide)."""
    if not h.count:
        return []
    picks = [("p50", int(np.abs(h.durations - h.quantile_ns(0.50)).argmin())),
             ("p99", int(np.abs(h.durations - h.quantile_ns(0.99)).argmin())),
             ("slowest", int(h.durations.argmax()))]
    out, seen = [], set()
    for label, i in picks:
        trace = int(t.trace[h.entries[i]])
        if trace in seen:
            continue
        seen.add(trace)
        out.append({"label": label, "trace_id": t.trace_id_hex(trace),
                    "duration_ms": round(float(h.durations[i]) / NS_PER_MS, 3)})
    return out


def _own_range(t: SpanTable, hotspots: Sequence[Hotspot],
               signals: ServiceSignals | None) -> tuple[float | None, float | None]:
    if hotspots:
        starts = [t.start[h.entries].min() for h in hotspots if h.count]
        ends = [t.end[h.entries].max() for h in hotspots if h.count]
        return float(min(starts)) / 1e9, float(max(ends)) / 1e9
    times = [s.t for name in CHARTED_SIGNALS if signals is not None and (s := signals.get(name)) is not None and s.t.size]
    if not times:
        return None, None
    return float(min(x.min() for x in times)), float(max(x.max() for x in times)) + 1.0


def _binned_quantiles(bins: np.ndarray, values: np.ndarray, weights: np.ndarray,
                      n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per bin: the (weighted) request count, and each of QUANTILES (NaN where the bin is empty).

    The hot spots' rule (`weighted_quantile`: value i of a bin holds the positions from S(i-1) to
    S(i) - 1 of the bin's S cumulative weights, and q is interpolated over S - 1), for all bins in
    one sort and one interpolation: each bin's positions are offset by bin x (largest S + 2), so
    the bins line up on one increasing axis without overlapping."""
    counts = np.bincount(bins, weights=weights, minlength=n)
    out = [np.full(n, np.nan) for _ in QUANTILES]
    if not bins.size:
        return counts, out
    # By bin, then value: a stable radix sort of the small bin numbers over a value sort is ~8x
    # faster than np.lexsort here.
    order = np.argsort(values)
    order = order[np.argsort(bins[order].astype(np.int16), kind="stable")]
    b, v, w = bins[order], values[order].astype(np.float64), weights[order].astype(np.float64)
    before = np.concatenate(([0.0], np.cumsum(counts)[:-1]))[b]  # weight of the earlier bins
    cum = np.cumsum(w) - before
    lo = cum - w
    hi = np.maximum(lo, cum - 1.0)
    offset = b * (float(counts.max()) + 2.0)
    xp = np.column_stack((offset + lo, offset + hi)).ravel()
    fp = np.repeat(v, 2)
    spread = counts > 1.0
    single = (counts > 0) & ~spread  # total weight <= 1: the weighted mean, as weighted_quantile does
    means = np.bincount(b, weights=w * v, minlength=n)
    bin_offset = np.arange(n) * (float(counts.max()) + 2.0)
    for res, q in zip(out, QUANTILES.values()):
        res[spread] = np.interp(bin_offset[spread] + q * (counts[spread] - 1.0), xp, fp)
        res[single] = means[single] / counts[single]
    return counts, out


def _nullable(values: np.ndarray) -> list[float | None]:
    """JSON-ready values: 4 decimals (0.1 µs in ms, 0.01% of a core) keep a week's chart data small."""
    return [round(float(v), 4) if np.isfinite(v) else None for v in values]
