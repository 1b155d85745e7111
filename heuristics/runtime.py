"""Runtime measurements of one hot spot, shared by the GC, CPU and wait rules and the rewrite ceiling.

Everything here relates a service's runtime `Signals` to the hot spot's entry spans over the
same wall-clock window. No thresholds live here: the rules decide what is material, this
module only measures, so the rules, the verdict and the ceiling see the same numbers.

Model (why the shares are what they are), per request of the service over the window:
- GC: a collection is triggered by allocation, so it lands on the request that allocates or on
  the requests queued behind it, not at random moments. GC time per request is the GC
  seconds over the window divided by the requests over the window (pause seconds for pausing
  collectors; GC CPU for Go, whose collector runs mostly concurrently).
- CPU: the CPU a request burns is `(cores used - background cores) / requests per second`.
  Background CPU (exporters, schedulers, batch threads) is the mean CPU of the intervals in
  which no request of the service was in flight; it is not charged to requests. GC work is
  inside process CPU: the non-GC CPU per request is what is left after the GC CPU (pause
  seconds are a lower bound of it: at least one thread collects during a pause).
- Runtime time per request = GC per request + non-GC CPU per request, against the service's
  self time per request. A process at its CPU ceiling waits behind its own work: with more
  requests in self time at once (`rps x self time`) than the cores the runtime can use (about
  one for CPython's GIL and Node's event loop, else the quota or the runtime's CPU count), the
  coverage is scaled by that queue, so GIL or event-loop queueing counts as CPU cost, while
  time the process did not get a core for (another process on its cores) stays uncounted.
- Outside the spans: a Node request that arrives while the event loop is blocked waits before
  its server span starts. The mean event-loop delay (beyond the monitor's resolution) is that
  wait; GC's part of it, in the runtime cost's GC/CPU proportion, is GC cost the spans miss.
  Queueing measured in CPU-saturated intervals is split the same way.
  Without an event-loop delay (JVM, Go, .NET), a stop-the-world pause holds every thread, the
  acceptor included: a request arriving during a pause of length p waits p/2 on average before
  its span starts. With Poisson arrivals the mean wait per request over a window W is
  sum(p_i^2) / 2W; a pause metric gives only the pause seconds S and pauses n over the window,
  so Cauchy-Schwarz gives the lower bound S^2 / (n 2W) = g^2 / 2c (g pause s/s, c pauses/s), and
  the largest pause M the upper bound M S / 2W. Only for metrics that time pauses (not
  concurrent cycles or GC CPU), with the count of the same metric (counting too many pauses
  only lowers the bound).
- Waiting for a core: when the service exports its own run-queue wait (schedstat), that wait per
  request is taken out of the self time the CPU is compared with (`own_coverage`): a CPU-bound
  service on a busy host still reads as CPU work, while the wait itself is counted as no one's CPU.
- The hot spot's runtime share is its self share times that coverage (at most 1), split between
  GC and CPU work by their per-request times. Every operation gets the service's coverage of its
  own self time: CPU is spread by self time, so a probe with no self time gets none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from analyzer.model.signals import Series, ServiceSignals, Signal
from analyzer.hotspots import Hotspot
from analyzer.model.spans import SpanTable
from heuristics.context import HotspotContext

NS = 1e9
MS = 1e6
TAIL_Q = 0.95  # requests at or above the hot spot's p95 are "tail" requests
MIN_BUCKET_REQUESTS = 2  # a time bucket needs this many requests for its mean latency to count
SATURATED = 0.8  # cores used / available at which a time bucket counts as CPU-saturated
ONE_CORE_RUNTIMES = {"python": "CPython runs Python code on one core at a time (the GIL)",
                     "node": "Node runs JavaScript on one event-loop thread"}
MIN_IDLE_BUCKETS = 3  # intervals without requests needed to measure background CPU
MIN_FIT_BUCKETS = 8  # intervals needed to regress CPU on the request rate ...
MIN_RATE_CV = 0.5  # ... and how much the rate must vary between them (std / mean)
SIGNIFICANT = 3.0  # standard errors the per-request slope must clear to be charged to requests
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
    utilization: float = float("nan")  # cores used / the CPU ceiling
    ceiling_cores: float = float("nan")  # cores the runtime can use: GIL/event loop, quota, CPU count
    ceiling_why: str = ""
    background_cores: float = 0.0  # CPU outside requests (intervals without requests)
    background_source: str = ""
    in_flight: float = float("nan")  # mean requests in self time at once (rps x self time)
    queue_factor: float = 1.0  # in_flight / ceiling when above 1: requests queue behind each other's CPU
    gc_ms_per_request: float = float("nan")  # GC seconds over the window / requests over the window
    runtime_share: float = 0.0  # GC + CPU share of the hot spot
    cpu_latency_r: float = float("nan")  # correlation of bucket latency with CPU use
    cpu_buckets: int = 0
    peak_utilization: float = float("nan")
    queue_share: float = 0.0  # extra self time of saturated buckets over the others, as a share, GC's part excluded
    gc_fraction: float = 0.0  # GC's part of the runtime cost per request (GC / (GC + other CPU work))
    event_loop_lag: Value | None = None
    loop_delay: Value | None = None  # mean wait of an event for the event loop (before any server span starts)
    gc_outside_ms: float = float("nan")  # GC's wait before server spans per request: the spans under-count it
    gc_outside_max_ms: float = float("nan")  # its upper bound, when the largest pause is exposed
    gc_outside_source: str = ""  # how it was measured (metrics and model), for evidence
    processes: Value | None = None  # processes of the service (instances)
    cpu_wait: Value | None = None  # s/s some task waited for a core (PSI): contention when the service is below its ceiling
    run_queue: Value | None = None  # s/s the service's own threads waited for a core other processes held
    core_wait_ms: float = float("nan")  # that wait per request: not its CPU work, not counted as CPU cost
    own_coverage: float = float("nan")  # CPU per request / (self time - core wait): its work when it has a core
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
    """The service's window (first entry start to last entry end over all its hot spots): CPU,
    GC and request rates are the service's, so every hot spot reads them over the same time."""
    _, _, first, last = _service_entries(ctx)
    return first, last


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
    return Value(time_weighted_mean(t, v), s.source, s.unit), t, v


def time_weighted_mean(t: np.ndarray, v: np.ndarray) -> float:
    """The mean of rates over the time they cover: a rate at t covers the interval since the point
    before. SDKs export again at shutdown, a few ms after the last periodic export; a plain mean
    would give that sliver the weight of a whole interval (one GC pause over 1 ms reads as 10 s/s)."""
    if v.size < 2:
        return float(v.mean())
    dt = np.diff(t)
    first = float(np.median(dt))  # the first point's interval starts before the window's points
    w = np.concatenate(([first], dt))
    total = float(w.sum())
    return float((w * v).sum() / total) if total > 0 else float(v.mean())


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 3 or np.std(x) <= 0 or np.std(y) <= 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _bucket_corr(bucket: np.ndarray, latency_ms: np.ndarray, values: np.ndarray,
                 weights: np.ndarray) -> tuple[float, int]:
    """Pearson r between each bucket's (weighted) mean request latency and the signal's value there."""
    n = values.size
    counts = np.bincount(bucket, minlength=n)  # requests seen: enough for a mean
    mass = np.bincount(bucket, weights=weights, minlength=n)
    sums = np.bincount(bucket, weights=latency_ms * weights, minlength=n)
    used = counts >= MIN_BUCKET_REQUESTS
    if used.sum() < 3:
        return float("nan"), int(used.sum())
    return _corr(sums[used] / mass[used], values[used]), int(used.sum())


def _summary(h: Hotspot, t: SpanTable) -> tuple[float, float, int, int]:
    """(requests, self ns, first start, last end) of one hot spot (weighted in a sample), memoized on
    it: every hot spot of a service reads every other one's, so computing each once keeps a run
    linear in the spans."""
    cached = h.__dict__.get("_pf_summary")
    if cached is None:
        e = h.entries
        self_ns = h.parts[:, 0].astype(np.float64)
        cached = h.__dict__["_pf_summary"] = (
            h.estimated_count, float(self_ns.sum() if h.weights is None else self_ns @ h.weights),
            int(t.start[e].min()), int(t.end[e].max()))
    return cached


def _service_entries(ctx: HotspotContext) -> tuple[float, float, int, int]:
    """(entry count, self ns, first start ns, last end ns) of the hot spot's whole service."""
    hs = [h for h in ctx.all_hotspots if h.service == ctx.hotspot.service] or [ctx.hotspot]
    parts = [_summary(h, ctx.table) for h in hs]
    return sum(p[0] for p in parts), sum(p[1] for p in parts), min(p[2] for p in parts), max(p[3] for p in parts)


def measure(ctx: HotspotContext) -> RuntimeMeasure:
    """Memoized on the context: every runtime rule of one hot spot reads the same numbers."""
    return ctx.once("runtime_measure", lambda: _measure(ctx))


def _measure(ctx: HotspotContext) -> RuntimeMeasure:
    h, t = ctx.hotspot, ctx.table
    dur = h.durations.astype(np.float64)
    wt = ctx.req_weight  # a sample's weights: every sum, mean and quantile below is the window's estimate
    total = float(dur @ wt)
    n = ctx.n_requests
    self_ns = h.parts[:, 0].astype(np.float64)
    p95 = h.quantile_ns(TAIL_Q) if dur.size else 0.0
    tail = dur >= p95
    tail_total = float(dur[tail] @ wt[tail])
    m = RuntimeMeasure(
        runtime=runtime_of(ctx), count=h.count, mean_ms=total / n / MS if dur.size else 0.0,
        p99_ms=h.quantile_ms(0.99), self_share=float(self_ns @ wt) / total if total > 0 else 0.0,
        self_ms=float(self_ns @ wt) / n / MS if dur.size else 0.0,
        tail_self_share=float(self_ns[tail] @ wt[tail]) / tail_total if tail_total > 0 else 0.0,
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
    m.loop_delay, _, _ = windowed(ss, Signal.EVENT_LOOP_DELAY_MEAN, t0, t1)
    m.cpu_wait, _, _ = windowed(ss, Signal.CPU_WAIT_SECONDS_PER_SECOND, t0, t1)
    m.processes, _, _ = windowed(ss, Signal.PROCESSES, t0, t1)
    m.run_queue, _, _ = windowed(ss, Signal.CPU_RUN_QUEUE_SECONDS_PER_SECOND, t0, t1)
    n_entries, svc_self_ns, first, last = _service_entries(ctx)
    span_s = (last - first) / NS
    m.rps, _, _ = windowed(ss, Signal.REQUESTS_PER_SECOND, t0, t1)
    if (m.rps is None or m.rps.value <= 0) and span_s > 0:
        m.rps = Value(n_entries / span_s, f"traces: {n_entries:.0f} entry spans of {h.service} over {span_s:.0f} s"
                      + (" (weighted sample)" if ctx.sampled else ""), "1/s")
    m.service_self_ms = svc_self_ns / n_entries / MS if n_entries else float("nan")
    _ceiling(m)
    if m.cores_used is not None and cpu_v.size:
        m.background_cores, m.background_source = _background(ctx, cpu_t, cpu_v)
    have_rate = m.rps is not None and m.rps.value > 0
    one_thread = m.runtime in ONE_CORE_RUNTIMES and m.ceiling_why.startswith(ONE_CORE_RUNTIMES[m.runtime])
    if one_thread and m.cores_used is not None and have_rate and np.isfinite(m.service_self_ms):
        # One thread per request: a request cannot burn more CPU than its own time in process.
        beyond = m.cores_used.value - m.rps.value * m.service_self_ms / 1e3
        if beyond > m.background_cores:
            m.background_cores = beyond
            m.background_source = (f"CPU beyond the requests' own time in process ({m.ceiling_why}: a request "
                                   f"uses at most its self time of CPU)")
    req_cores = max(0.0, m.cores_used.value - m.background_cores) if m.cores_used is not None else float("nan")
    if have_rate and np.isfinite(m.service_self_ms):
        m.in_flight = m.rps.value * m.service_self_ms / 1e3
        if np.isfinite(m.ceiling_cores) and m.ceiling_cores > 0:
            m.queue_factor = max(1.0, m.in_flight / m.ceiling_cores)
    if m.cores_used is not None and have_rate:
        m.cpu_ms_per_request = req_cores / m.rps.value * 1e3
        if m.service_self_ms > 0:
            m.coverage = m.own_coverage = m.cpu_ms_per_request / m.service_self_ms * m.queue_factor
        if m.run_queue is not None and m.service_self_ms > 0:
            # Time its threads waited for a core another process held is in the self time but is not
            # its work: the CPU per request is measured against the time it had a core (or waited on
            # anything else). The shares stay shares of the whole time: the wait is nobody's CPU.
            m.core_wait_ms = min(m.service_self_ms, max(0.0, m.run_queue.value) / m.rps.value * 1e3)
            # The process's wait is its threads' sum: taken as the request threads' (exporter threads
            # mostly sleep). When it covers all the time the CPU does not, the CPU is all it did.
            running = m.service_self_ms - m.core_wait_ms
            m.own_coverage = min(1.0, m.cpu_ms_per_request / running) * m.queue_factor if running > 0 else 1.0
    if m.cores_used is not None and np.isfinite(m.ceiling_cores) and m.ceiling_cores > 0:
        m.utilization = m.cores_used.value / m.ceiling_cores
        if cpu_v.size:
            util = cpu_v / m.ceiling_cores
            m.peak_utilization = float(np.nanmax(util))
            bucket = np.clip(np.searchsorted(cpu_t, ends_s, side="left"), 0, cpu_t.size - 1)
            m.cpu_latency_r, m.cpu_buckets = _bucket_corr(bucket, lat_ms, util, wt)
            m.queue_share = _queue_share(bucket, self_ns, wt, util, total)

    # --- GC ---
    m.gc, gc_t, gc_v = windowed(ss, Signal.GC_SECONDS_PER_SECOND, t0, t1)
    m.gc_cpu_fraction, _, _ = windowed(ss, Signal.GC_CPU_FRACTION, t0, t1)
    for key, sig in (("p50", Signal.GC_PAUSE_P50), ("p99", Signal.GC_PAUSE_P99), ("max", Signal.GC_PAUSE_MAX)):
        v, _, _ = windowed(ss, sig, t0, t1)
        if v is not None:
            m.pause[key] = v
    m.gc_cycles, _, _ = windowed(ss, Signal.GC_CYCLES_PER_SECOND, t0, t1)
    m.alloc, _, _ = windowed(ss, Signal.ALLOC_BYTES_PER_SECOND, t0, t1)
    gc_sps = 0.0  # GC seconds per second: pause wall time, or GC CPU for Go
    if m.gc is not None:
        go_cpu = is_gc_cpu(m.gc.source)
        m.gc_kind = "cpu" if go_cpu else "pause"
        bucket = np.clip(np.searchsorted(gc_t, ends_s, side="left"), 0, gc_t.size - 1)
        m.gc_latency_r, m.gc_buckets = _bucket_corr(bucket, lat_ms, gc_v, wt)
        m.gc_at_tail = float(np.average(gc_v[bucket][tail], weights=wt[tail])) if tail.any() else float("nan")
        mean_g = float(gc_v.mean())
        heavy = (gc_v > mean_g) & (gc_v >= 1.25 * mean_g)  # a flat series has no heavy intervals
        if heavy.any():
            in_heavy = heavy[bucket]
            m.all_in_heavy = float(np.average(in_heavy, weights=wt))
            m.tail_in_heavy = float(np.average(in_heavy[tail], weights=wt[tail])) if tail.any() else float("nan")
        gc_sps = max(0.0, m.gc.value)
        if go_cpu and m.gc_cpu_fraction is not None and m.cores_used is not None and "go_cpu_classes" in m.gc.source:
            gc_sps = min(1.0, max(0.0, m.gc_cpu_fraction.value)) * m.cores_used.value
        if have_rate:
            m.gc_ms_per_request = gc_sps / m.rps.value * 1e3
    if np.isfinite(m.coverage):
        gc_ms = m.gc_ms_per_request if np.isfinite(m.gc_ms_per_request) else 0.0
        m.work_ms_per_request = max(0.0, m.cpu_ms_per_request - gc_ms)  # GC CPU >= its pause time
        runtime_ms = gc_ms + m.work_ms_per_request
        m.work_coverage = m.work_ms_per_request / m.service_self_ms * m.queue_factor
        m.runtime_share = m.self_share * min(1.0, runtime_ms / m.service_self_ms * m.queue_factor)
        gc_frac = m.gc_fraction = gc_ms / runtime_ms if runtime_ms > 0 else 0.0
        m.gc_share = m.runtime_share * gc_frac
        # A saturated core is busy with GC as much as with other work: the queue behind it is
        # split the same way, so a GC storm that fills the core is not read as CPU queueing.
        m.queue_share *= 1.0 - gc_frac
        if m.loop_delay is not None and m.gc is not None:
            # The loop is blocked by GC pauses and by other work in the runtime cost's proportion (a
            # lower bound for GC: a long pause delays more arrivals than the same time in short tasks).
            m.gc_outside_ms = max(0.0, m.loop_delay.value) * 1e3 * gc_frac
            m.gc_outside_source = (f"mean event-loop delay ({m.loop_delay.source}) x GC's part of the runtime "
                                   f"cost ({gc_frac:.0%}): wait before server spans start, which they under-count")
        m.cpu_share = m.runtime_share - m.gc_share
        if m.gc is not None:
            g_tail = m.gc_at_tail if np.isfinite(m.gc_at_tail) else m.gc.value
            scale = g_tail / m.gc.value if m.gc.value > 0 else 1.0
            m.gc_tail_share = min(m.tail_self_share, m.tail_self_share * min(1.0, m.coverage) * gc_frac * scale)
    elif m.gc is not None and m.gc_kind == "pause":
        # No request rate or CPU: the pause rate itself bounds what GC can explain.
        m.gc_share = min(m.self_share, gc_sps)
        m.gc_tail_share = min(m.tail_self_share, max(0.0, m.gc_at_tail if np.isfinite(m.gc_at_tail) else gc_sps))
    if m.loop_delay is None:
        _pause_wait(m, ss, t0, t1)
    return m


# Metrics that time stop-the-world pauses: (pause seconds, its count, stop-the-world pauses per
# counted event, the largest pause or ""). Go records one value per cycle, the sum of its two
# pauses; .NET counts a background gen2 collection once, with two short pauses. Absent on purpose:
# OTel jvm.gc.duration and client_java without a collector filter time concurrent cycles too
# (ZGC, Shenandoah), Go's GC CPU classes are CPU, not pauses, CPython's collections run on the
# request thread, inside its span.
STW_PAUSES = (
    ("jvm_gc_pause_seconds_sum", "jvm_gc_pause_seconds_count", 1, "jvm_gc_pause_seconds_max"),
    ("jvm_gc_collection_seconds_sum", "jvm_gc_collection_seconds_count", 1, ""),  # *Cycles beans filtered out
    ("go_gc_duration_seconds_sum", "go_gc_duration_seconds_count", 2, "go_gc_duration_seconds"),
    ("nodejs_gc_duration_seconds_sum", "nodejs_gc_duration_seconds_count", 1, ""),
    ("v8js_gc_duration_seconds_sum", "v8js_gc_duration_seconds_count", 1, ""),
    ("dotnet_gc_pause_time_seconds_total", "dotnet_gc_collections_total", 2, ""),
    ("process_runtime_dotnet_gc_duration_nanoseconds_total", "process_runtime_dotnet_gc_collections_count_total", 2, ""),
    ("v8js.gc.duration", "v8js.gc.duration", 1, ""),
    ("process.runtime.go.gc.pause_ns", "process.runtime.go.gc.pause_ns", 2, ""),
    ("dotnet.gc.pause.time", "dotnet.gc.collections", 2, ""),
    ("process.runtime.dotnet.gc.duration", "process.runtime.dotnet.gc.collections.count", 2, ""),
)


def _names(source: str, name: str) -> bool:
    """Whether `source` (a PromQL query or an OTLP metric name) reads the metric `name` itself."""
    return re.search(rf"(?<![\w.:]){re.escape(name)}(?![\w.:])", source) is not None


def _pause_wait(m: RuntimeMeasure, ss: ServiceSignals, t0: float, t1: float) -> None:
    """The mean wait before server spans behind stop-the-world pauses, bounded from the pause
    metric's seconds and count over the window (see the module docstring); unset unless both come
    from one pause metric."""
    if m.gc is None or m.gc_kind != "pause" or m.gc_cycles is None:
        return
    pair = next((p for p in STW_PAUSES if _names(m.gc.source, p[0]) and _names(m.gc_cycles.source, p[1])), None)
    g, c = max(0.0, m.gc.value), max(0.0, m.gc_cycles.value)
    if pair is None or c <= 0:
        return
    per_event = pair[2]
    m.gc_outside_ms = g * g / (2 * c * per_event) * 1e3
    counted = f"{per_event} pauses per counted collection, " if per_event > 1 else ""
    m.gc_outside_source = (f"stop-the-world pauses hold requests before their spans start; with Poisson arrivals "
                           f"the mean wait is sum(pause^2) / (2 x window) >= pause seconds^2 / (pauses x 2 x window) "
                           f"= {g:.4f}^2 / (2 x {c * per_event:.4f}/s) ({counted}{metric_names(m.gc.source)}, "
                           f"{metric_names(m.gc_cycles.source)}): a lower bound the server spans under-count")
    mx = ss.get(Signal.GC_PAUSE_MAX)
    if pair[3] and mx is not None and _names(mx.source, pair[3]):
        _, v = in_window(mx, t0, t1)
        if v.size:
            m.gc_outside_max_ms = max(m.gc_outside_ms, float(v.max()) * g / 2 * 1e3)


def is_gc_cpu(source: str) -> bool:
    """Whether a GC series is Go's GC CPU (runtime/metrics classes or the memstats fraction)."""
    return "go_cpu_classes" in source or "go_memstats_gc_cpu_fraction" in source


def _ceiling(m: RuntimeMeasure) -> None:
    """The cores the service's runtime can use: for CPython and Node one per process (processes
    counted from the process collector's series; without that count, one when the service uses
    at most about a core), bounded by a quota; else the quota or the runtime's CPU count."""
    avail = m.cores_available.value if m.cores_available is not None and m.cores_available.value > 0 else float("nan")
    procs = m.processes.value if m.processes is not None and m.processes.value >= 1 else float("nan")
    if not np.isfinite(procs) and m.cores_used is not None and m.cores_used.value <= 1.05:
        procs = 1.0
    if m.runtime in ONE_CORE_RUNTIMES and np.isfinite(procs):
        m.ceiling_cores = min(procs, avail) if np.isfinite(avail) else procs
        m.ceiling_why = ONE_CORE_RUNTIMES[m.runtime] + (f", x {procs:.0f} processes" if procs > 1 else "")
    elif np.isfinite(avail):
        m.ceiling_cores, m.ceiling_why = avail, f"cores available ({m.cores_available.source})"


def _background(ctx: HotspotContext, cpu_t: np.ndarray, cpu_v: np.ndarray) -> tuple[float, str]:
    """Cores the service uses outside requests, and how that was measured; (0, "") when it cannot be.

    CPU per interval of the CPU series against the requests in flight in it (entry spans of every
    operation of the service; each point covers the two steps before it, as rate ranges span at
    least one step). When the request rate varies enough between intervals (quiet services: few
    requests, some intervals with none), a least-squares line through (requests/s, cores) gives
    the per-request part as its slope and the background as the rest of the mean; a busy steady
    service has too little variation for a slope, and the mean of intervals with no request in
    flight is used when there are some."""
    if cpu_t.size < 2:
        return 0.0, ""
    step = float(np.median(np.diff(cpu_t)))
    t, hs = ctx.table, [h for h in ctx.all_hotspots if h.service == ctx.hotspot.service] or [ctx.hotspot]
    e = np.concatenate([h.entries for h in hs])
    wt = np.concatenate([h.weights if h.weights is not None else np.ones(h.count) for h in hs])
    by_start, by_end = np.argsort(t.start[e]), np.argsort(t.end[e])
    starts, ends = t.start[e][by_start] / NS, t.end[e][by_end] / NS
    # Requests (weighted in a sample) started / ended up to each point: cumulative weights.
    started = np.concatenate(([0.0], np.cumsum(wt[by_start])))
    ended = np.concatenate(([0.0], np.cumsum(wt[by_end])))
    lo, hi = cpu_t - 2 * step, cpu_t
    # requests overlapping (lo, hi]: started before hi, minus those that ended by lo
    ended_by_lo = ended[np.searchsorted(ends, lo, side="right")]
    busy = started[np.searchsorted(starts, hi, side="right")] - ended_by_lo
    rate = (ended[np.searchsorted(ends, hi, side="right")] - ended_by_lo) / (2 * step)
    cores = np.clip(cpu_v, 0.0, None)
    mean = float(cores.mean())
    if cores.size >= MIN_FIT_BUCKETS and rate.mean() > 0 and rate.std() >= MIN_RATE_CV * rate.mean():
        (slope, _), cov = np.polyfit(rate, cores, 1, cov=True)
        slope, se = float(slope), float(np.sqrt(max(0.0, cov[0, 0])))
        if slope - SIGNIFICANT * se <= 0:
            # The background's own variation (a busy host, a bursty thread) hides any per-request
            # part: no CPU is charged to requests that the data cannot tell from noise.
            return mean, (f"CPU regressed on the request rate over {cores.size} intervals: "
                          f"{slope * 1e3:.1f} ± {se * 1e3:.1f} ms per request, not distinguishable from the "
                          f"background's variation, so all of it is background")
        per_request = min(mean, slope * float(rate.mean()))
        return mean - per_request, (f"CPU regressed on the request rate over {cores.size} intervals: "
                                    f"{slope * 1e3:.1f} ms per request, the rest is background")
    idle = busy <= 1e-9
    if idle.sum() < MIN_IDLE_BUCKETS:
        return 0.0, ""
    bg = min(float(cores[idle].mean()), mean)
    return bg, f"mean CPU of {int(idle.sum())} of {cpu_t.size} intervals with no request in flight"


def _queue_share(bucket: np.ndarray, self_ns: np.ndarray, wt: np.ndarray, util: np.ndarray, total: float) -> float:
    """Extra self time of requests in CPU-saturated buckets over the mean of the others, as a
    share of the hot spot's time: the measured cost of waiting for a core. Self time, so a
    database that slows at peak load is not counted as CPU queueing."""
    sat = util[bucket] >= SATURATED
    if not sat.any() or sat.all() or total <= 0:
        return 0.0
    excess = float((self_ns[sat] - np.average(self_ns[~sat], weights=wt[~sat])).clip(min=0) @ wt[sat])
    return min(1.0, excess / total)


def metric_names(source: str, sep: str = ", ") -> str:
    """The metric names in a source, for a message: the names a PromQL query selects (followed by
    a label matcher), else the source itself (OTLP sources are metric names already)."""
    names = dict.fromkeys(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", source))
    return sep.join(names) or source


def fmt_ms(x: float) -> str:
    return f"{x:.1f} ms" if x >= 1 or x == 0 else f"{x:.2f} ms"
