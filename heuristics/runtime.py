"""Runtime measurements of one hot spot, shared by the GC, CPU and wait rules and the rewrite ceiling.

Everything here relates a service's runtime `Signals` to the hot spot's entry spans over the
same wall-clock window. No thresholds live here: the rules decide what is material, this
module only measures, so the rules, the verdict and the ceiling see the same numbers.

Model (why the shares are what they are):
- GC pauses stop the world: a process spending g seconds per second paused delays every
  request in flight by g of its wall time on average, so GC explains `min(g, self share)` of
  the hot spot. Tail requests are weighed with the GC rate at their own time.
- Go's collector runs mostly concurrently: its cost is CPU taken from the program (the GC
  CPU fraction), so for Go with runtime/metrics CPU classes the GC share is that fraction of
  the CPU-accounted share, not a pause.
- CPU: the CPU a request burns is `cores used / requests per second`; when it covers the
  service's self time per request, self time is compute. GC work is inside process CPU, so the
  CPU share counts only the CPU left after GC: `(cores used - GC CPU) / rps` against self time,
  where GC CPU is at least the GC pause seconds per second (one thread collects during a
  pause; parallel collectors use more, which makes this an upper bound on non-GC CPU) and, for
  Go, the measured GC CPU. The hot spot's CPU share is its self share times that coverage
  (at most 1), bounded by the self share left after GC.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analyzer.signals import Series, ServiceSignals, Signal
from analyzer.hotspots import Hotspot
from analyzer.model import SpanTable
from heuristics.context import HotspotContext

NS = 1e9
MS = 1e6
TAIL_Q = 0.95  # requests at or above the hot spot's p95 are "tail" requests
MIN_BUCKET_REQUESTS = 2  # a time bucket needs this many requests for its mean latency to count
SATURATED = 0.8  # cores used / available at which a time bucket counts as CPU-saturated
CPU_UTILIZATION = getattr(Signal, "CPU_UTILIZATION", "cpu_utilization")  # OTel *.cpu.utilization, 0..1


@dataclass(frozen=True)
class Value:
    """A windowed measurement (mean over the window) and the query or metric it came from."""

    value: float
    source: str
    unit: str = ""


@dataclass
class RuntimeMeasure:
    runtime: str
    count: int
    mean_ms: float
    p99_ms: float
    self_share: float
    self_ms: float  # mean self time per request of this hot spot
    tail_self_share: float  # self share of the tail requests (>= p95)
    # CPU
    cores_used: Value | None = None
    cores_available: Value | None = None
    throttled: Value | None = None
    rps: Value | None = None
    cpu_ms_per_request: float = float("nan")
    service_self_ms: float = float("nan")  # mean self time per request over the service's entries
    coverage: float = float("nan")  # cpu_ms_per_request / service_self_ms (GC CPU included)
    work_ms_per_request: float = float("nan")  # CPU per request less GC CPU
    work_coverage: float = float("nan")  # work_ms_per_request / service_self_ms
    cpu_share: float = 0.0  # share of the hot spot's time that is CPU work, GC excluded
    utilization: float = float("nan")  # cores used / cores available
    cpu_latency_r: float = float("nan")  # correlation of bucket latency with CPU use
    cpu_buckets: int = 0
    peak_utilization: float = float("nan")
    queue_share: float = 0.0  # extra self time of saturated buckets over the others, as a share
    event_loop_lag: Value | None = None
    # GC
    gc: Value | None = None  # seconds per second
    gc_kind: str = ""  # "pause" (wall-clock pauses) | "cpu" (Go GC CPU) | ""
    gc_cpu_fraction: Value | None = None
    gc_share: float = 0.0
    gc_tail_share: float = 0.0
    gc_at_tail: float = float("nan")  # mean GC s/s at the times of tail requests
    pause: dict[str, Value] = field(default_factory=dict)  # p50/p99/max
    gc_cycles: Value | None = None
    alloc: Value | None = None
    gc_latency_r: float = float("nan")
    gc_buckets: int = 0
    tail_in_heavy: float = float("nan")  # share of tail requests in GC-heavy intervals
    all_in_heavy: float = float("nan")  # share of all requests in GC-heavy intervals
    missing: dict[str, str] = field(default_factory=dict)  # signal -> what to enable

    @property
    def cpu_measured(self) -> bool:
        return self.cores_used is not None and self.rps is not None and bool(np.isfinite(self.coverage))

    @property
    def gc_measured(self) -> bool:
        return self.gc is not None

    @property
    def tail_lift(self) -> float:
        if not (np.isfinite(self.tail_in_heavy) and np.isfinite(self.all_in_heavy)) or self.all_in_heavy <= 0:
            return float("nan")
        return self.tail_in_heavy / self.all_in_heavy


def runtime_of(ctx: HotspotContext) -> str:
    """The trace resource's runtime when it says one, else what the metrics told."""
    rt = ctx.table.runtimes.get(ctx.hotspot.service, "unknown")
    if rt == "unknown" and ctx.signals is not None:
        rt = ctx.signals.runtime
    return rt


def window_ns(ctx: HotspotContext) -> tuple[int, int]:
    t, e = ctx.table, ctx.hotspot.entries
    return int(t.start[e].min()), int(t.end[e].max())


def in_window(s: Series, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray]:
    """Points of `s` describing [t0, t1] (unix s): those inside, plus the first one after t1
    (a rate at t covers the time before t); the nearest point when none falls inside."""
    ok = np.isfinite(s.v)
    t, v = s.t[ok], s.v[ok]
    if not t.size:
        return t, v
    lo = int(np.searchsorted(t, t0, side="left"))
    hi = min(int(np.searchsorted(t, t1, side="right")) + 1, t.size)
    if lo >= hi:
        i = min(lo, t.size - 1)
        return t[i:i + 1], v[i:i + 1]
    return t[lo:hi], v[lo:hi]


def windowed(ss: ServiceSignals | None, name: str, t0: float, t1: float) -> tuple[Value | None, np.ndarray, np.ndarray]:
    s = ss.get(name) if ss is not None else None
    if s is None:
        return None, np.empty(0), np.empty(0)
    t, v = in_window(s, t0, t1)
    if not v.size:
        return None, t, v
    return Value(float(v.mean()), s.source, s.unit), t, v


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 3 or np.std(x) <= 0 or np.std(y) <= 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _bucket_corr(bucket: np.ndarray, latency_ms: np.ndarray, values: np.ndarray) -> tuple[float, int]:
    """Pearson r between each bucket's mean request latency and the signal's value there."""
    n = values.size
    counts = np.bincount(bucket, minlength=n)
    sums = np.bincount(bucket, weights=latency_ms, minlength=n)
    used = counts >= MIN_BUCKET_REQUESTS
    if used.sum() < 3:
        return float("nan"), int(used.sum())
    return _corr(sums[used] / counts[used], values[used]), int(used.sum())


def _summary(h: Hotspot, t: SpanTable) -> tuple[int, float, int, int]:
    """(count, self ns, first start, last end) of one hot spot, memoized on it: every hot spot of a
    service reads every other one's, so computing each once keeps a run linear in the spans."""
    cached = h.__dict__.get("_pf_summary")
    if cached is None:
        e = h.entries
        cached = h.__dict__["_pf_summary"] = (h.count, float(h.parts[:, 0].sum()), int(t.start[e].min()),
                                              int(t.end[e].max()))
    return cached


def _service_entries(ctx: HotspotContext) -> tuple[int, float, float]:
    """(entry count, self ns, first start to last end in s) of the hot spot's whole service."""
    hs = [h for h in ctx.all_hotspots if h.service == ctx.hotspot.service] or [ctx.hotspot]
    parts = [_summary(h, ctx.table) for h in hs]
    count = sum(p[0] for p in parts)
    self_ns = sum(p[1] for p in parts)
    return count, self_ns, (max(p[3] for p in parts) - min(p[2] for p in parts)) / NS


def measure(ctx: HotspotContext) -> RuntimeMeasure:
    """Memoized on the context: every runtime rule of one hot spot reads the same numbers."""
    return ctx.once("runtime_measure", lambda: _measure(ctx))


def _measure(ctx: HotspotContext) -> RuntimeMeasure:
    h, t = ctx.hotspot, ctx.table
    dur = h.durations.astype(np.float64)
    total = float(dur.sum())
    self_ns = h.parts[:, 0].astype(np.float64)
    p95 = float(np.quantile(dur, TAIL_Q)) if dur.size else 0.0
    tail = dur >= p95
    tail_total = float(dur[tail].sum())
    m = RuntimeMeasure(
        runtime=runtime_of(ctx), count=h.count, mean_ms=float(dur.mean()) / MS if dur.size else 0.0,
        p99_ms=h.quantile_ms(0.99), self_share=float(self_ns.sum()) / total if total > 0 else 0.0,
        self_ms=float(self_ns.mean()) / MS if dur.size else 0.0,
        tail_self_share=float(self_ns[tail].sum()) / tail_total if tail_total > 0 else 0.0,
    )
    ss = ctx.signals
    if ss is not None:
        m.missing = {k: v.enable for k, v in ss.missing.items() if v.enable}
    if ss is None or not h.count:
        return m
    w0, w1 = window_ns(ctx)
    t0, t1 = w0 / NS, w1 / NS
    ends_s = t.end[h.entries] / NS
    lat_ms = dur / MS

    # --- CPU ---
    m.cores_used, cpu_t, cpu_v = windowed(ss, Signal.CPU_CORES_USED, t0, t1)
    m.cores_available, _, avail_v = windowed(ss, Signal.CPU_CORES_AVAILABLE, t0, t1)
    if m.cores_used is None and m.cores_available is not None:
        u, cpu_t, u_v = windowed(ss, CPU_UTILIZATION, t0, t1)
        if u is not None:
            # Cores used = utilization x cores available, so CPU per request can still be computed.
            m.cores_used = Value(u.value * m.cores_available.value, f"({u.source}) * ({m.cores_available.source})",
                                 "cores")
            cpu_v = u_v * m.cores_available.value
    m.throttled, _, _ = windowed(ss, Signal.CPU_THROTTLED_FRACTION, t0, t1)
    m.event_loop_lag, _, _ = windowed(ss, Signal.EVENT_LOOP_LAG, t0, t1)
    n_entries, svc_self_ns, span_s = _service_entries(ctx)
    m.rps, _, _ = windowed(ss, Signal.REQUESTS_PER_SECOND, t0, t1)
    if (m.rps is None or m.rps.value <= 0) and span_s > 0:
        m.rps = Value(n_entries / span_s, f"traces: {n_entries} entry spans of {h.service} over {span_s:.0f} s", "1/s")
    m.service_self_ms = svc_self_ns / n_entries / MS if n_entries else float("nan")
    if m.cores_used is not None and m.rps is not None and m.rps.value > 0:
        m.cpu_ms_per_request = m.cores_used.value / m.rps.value * 1e3
        if m.service_self_ms > 0:
            m.coverage = m.cpu_ms_per_request / m.service_self_ms
    if m.cores_used is not None and m.cores_available is not None and m.cores_available.value > 0:
        m.utilization = m.cores_used.value / m.cores_available.value
        if avail_v.size and cpu_v.size:
            util = cpu_v / float(avail_v.mean())
            m.peak_utilization = float(np.nanmax(util))
            bucket = np.clip(np.searchsorted(cpu_t, ends_s, side="left"), 0, cpu_t.size - 1)
            m.cpu_latency_r, m.cpu_buckets = _bucket_corr(bucket, lat_ms, util)
            m.queue_share = _queue_share(bucket, self_ns, util, total)
    cpu_accounted = m.self_share * min(1.0, m.coverage) if np.isfinite(m.coverage) else 0.0

    # --- GC ---
    m.gc, gc_t, gc_v = windowed(ss, Signal.GC_SECONDS_PER_SECOND, t0, t1)
    m.gc_cpu_fraction, _, _ = windowed(ss, Signal.GC_CPU_FRACTION, t0, t1)
    for key, sig in (("p50", Signal.GC_PAUSE_P50), ("p99", Signal.GC_PAUSE_P99), ("max", Signal.GC_PAUSE_MAX)):
        v, _, _ = windowed(ss, sig, t0, t1)
        if v is not None:
            m.pause[key] = v
    m.gc_cycles, _, _ = windowed(ss, Signal.GC_CYCLES_PER_SECOND, t0, t1)
    m.alloc, _, _ = windowed(ss, Signal.ALLOC_BYTES_PER_SECOND, t0, t1)
    gc_cpu_sps = 0.0
    if m.gc is not None:
        go_cpu = "go_cpu_classes" in m.gc.source
        m.gc_kind = "cpu" if go_cpu else "pause"
        bucket = np.clip(np.searchsorted(gc_t, ends_s, side="left"), 0, gc_t.size - 1)
        m.gc_latency_r, m.gc_buckets = _bucket_corr(bucket, lat_ms, gc_v)
        m.gc_at_tail = float(gc_v[bucket][tail].mean()) if tail.any() else float("nan")
        mean_g = float(gc_v.mean())
        heavy = (gc_v > mean_g) & (gc_v >= 1.25 * mean_g)  # a flat series has no heavy intervals
        if heavy.any():
            in_heavy = heavy[bucket]
            m.all_in_heavy = float(in_heavy.mean())
            m.tail_in_heavy = float(in_heavy[tail].mean()) if tail.any() else float("nan")
        gc_cpu_sps = max(0.0, m.gc.value)  # pause s/s is a lower bound of GC CPU; Go's series is GC CPU
        if go_cpu:
            frac = m.gc_cpu_fraction.value if m.gc_cpu_fraction is not None else (
                m.gc.value / m.cores_used.value if m.cores_used is not None and m.cores_used.value > 0 else float("nan"))
            if np.isfinite(frac):
                frac = min(1.0, max(0.0, frac))
                m.gc_share = cpu_accounted * frac
                if np.isfinite(m.coverage):
                    m.gc_tail_share = m.tail_self_share * min(1.0, m.coverage) * frac
                if m.cores_used is not None:
                    gc_cpu_sps = frac * m.cores_used.value
        else:
            m.gc_share = min(m.self_share, gc_cpu_sps)
            g_tail = m.gc_at_tail if np.isfinite(m.gc_at_tail) else m.gc.value
            m.gc_tail_share = min(m.tail_self_share, max(0.0, g_tail))
    if np.isfinite(m.coverage):
        m.work_ms_per_request = max(0.0, m.cores_used.value - gc_cpu_sps) / m.rps.value * 1e3
        m.work_coverage = m.work_ms_per_request / m.service_self_ms
        m.cpu_share = min(max(0.0, m.self_share - m.gc_share), m.self_share * min(1.0, m.work_coverage))
    return m


def _queue_share(bucket: np.ndarray, self_ns: np.ndarray, util: np.ndarray, total: float) -> float:
    """Extra self time of requests in CPU-saturated buckets over the mean of the others, as a
    share of the hot spot's time: the measured cost of waiting for a core. Self time, so a
    database that slows at peak load is not counted as CPU queueing."""
    sat = util[bucket] >= SATURATED
    if not sat.any() or sat.all() or total <= 0:
        return 0.0
    excess = float((self_ns[sat] - self_ns[~sat].mean()).clip(min=0).sum())
    return min(1.0, excess / total)


def fmt_ms(x: float) -> str:
    return f"{x:.1f} ms" if x >= 1 or x == 0 else f"{x:.2f} ms"
