"""GC-pause rules (PF-GC*): how much of a hot spot's time the service's own garbage collector takes.

Only GC measured by runtime metrics counts; self time alone is never read as GC.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from analyzer.model.findings import Evidence, Finding
from analyzer.model.signals import Signal
from heuristics.context import HotspotContext
from heuristics.registry import rule
from heuristics.runtime import RuntimeMeasure, fmt_ms, measure, metric_names

_REMEDY_GC = ("Cut allocation on this path first (reuse buffers, avoid per-request copies and boxing, stream instead "
              "of materializing), then tune the collector (heap size / GOGC / GOMEMLIMIT, a low-pause collector such "
              "as G1 or ZGC on the JVM, --max-semi-space-size on Node). If GC stays dominant after that, a runtime "
              "without a collector (Rust) removes this share.")


def gc_evidence(m: RuntimeMeasure) -> list[Evidence]:
    """Every GC number measured for the hot spot's window, each with its query."""
    ev: list[Evidence] = []
    if m.gc is not None:
        name = "gc_cpu_seconds_per_second" if m.gc_kind == "cpu" else Signal.GC_SECONDS_PER_SECOND
        ev.append(Evidence(name, m.gc.value, "s/s", m.gc.source))
    if m.gc_cpu_fraction is not None:
        ev.append(Evidence(Signal.GC_CPU_FRACTION, m.gc_cpu_fraction.value, "ratio", m.gc_cpu_fraction.source))
    for key, sig in (("p50", Signal.GC_PAUSE_P50), ("p99", Signal.GC_PAUSE_P99), ("max", Signal.GC_PAUSE_MAX)):
        if key in m.pause:
            ev.append(Evidence(sig, m.pause[key].value, "s", m.pause[key].source))
    if m.gc_cycles is not None:
        ev.append(Evidence(Signal.GC_CYCLES_PER_SECOND, m.gc_cycles.value, "1/s", m.gc_cycles.source))
    if m.alloc is not None:
        ev.append(Evidence(Signal.ALLOC_BYTES_PER_SECOND, m.alloc.value, "B/s", m.alloc.source))
    if m.event_loop_lag is not None:
        ev.append(Evidence(Signal.EVENT_LOOP_LAG, m.event_loop_lag.value, "s", m.event_loop_lag.source))
    if np.isfinite(m.gc_outside_ms):
        ev.append(Evidence("gc_ms_before_spans_per_request", m.gc_outside_ms, "ms", m.gc_outside_source))
    if np.isfinite(m.gc_outside_max_ms):
        ev.append(Evidence("gc_ms_before_spans_per_request_upper", m.gc_outside_max_ms, "ms",
                           f"largest pause ({m.pause['max'].source if 'max' in m.pause else Signal.GC_PAUSE_MAX}) "
                           f"x pause seconds / (2 x window)"))
    if np.isfinite(m.gc_ms_per_request):
        ev.append(Evidence("gc_ms_per_request", m.gc_ms_per_request, "ms",
                           f"GC seconds over the window / requests over the window ({Signal.REQUESTS_PER_SECOND})"))
    if np.isfinite(m.work_ms_per_request):
        ev.append(Evidence("cpu_ms_per_request_outside_gc", m.work_ms_per_request, "ms",
                           "(cores used - background - GC CPU) / requests per second"))
    src = m.gc.source if m.gc is not None else ""
    if np.isfinite(m.gc_latency_r):
        ev.append(Evidence("gc_latency_correlation", m.gc_latency_r, "r",
                           f"{m.gc_buckets} time buckets: mean entry-span latency vs {src}"))
    if np.isfinite(m.tail_in_heavy):
        ev.append(Evidence("tail_requests_in_gc_heavy_intervals", m.tail_in_heavy, "ratio",
                           f"entry spans >= p95 ending where {src} >= 1.25x its window mean "
                           f"(all requests: {m.all_in_heavy:.0%})"))
    return ev


def outside_spans(m: RuntimeMeasure) -> str:
    """What the spans miss of a stop-the-world pause: the wait before a request's span starts."""
    if np.isfinite(m.gc_outside_ms) and m.loop_delay is not None and m.gc_outside_ms >= 0.05:
        return (f" Requests also wait for the event loop before their server spans start: "
                f"{m.loop_delay.value * 1e3:.1f} ms on average ({metric_names(m.loop_delay.source, ' less ')}), "
                f"~{fmt_ms(m.gc_outside_ms)} of it behind GC ({m.gc_fraction:.0%} of what blocks the loop): "
                f"server spans under-count GC by that much per request.")
    if np.isfinite(m.gc_outside_ms) and m.loop_delay is None and m.gc_outside_ms >= 0.05:
        upper = f" and at most ~{fmt_ms(m.gc_outside_max_ms)}" if np.isfinite(m.gc_outside_max_ms) else ""
        return (f" A stop-the-world pause holds every thread, the acceptor included: a request arriving during "
                f"one waits for it to end before its server span starts, at least ~{fmt_ms(m.gc_outside_ms)}{upper} "
                f"per request on average (from the pauses' total and count): server spans under-count GC by at "
                f"least that much.")
    if m.event_loop_lag is not None and m.event_loop_lag.value >= 0.005:
        return (f" Requests also wait for the blocked event loop before their server spans start (lag "
                f"{m.event_loop_lag.value * 1e3:.0f} ms, {metric_names(m.event_loop_lag.source)}): "
                f"server spans under-count the pauses.")
    if m.gc_kind == "pause" and m.runtime == "jvm":
        return " A safepoint holds every thread, including requests not yet in a span: spans under-count pauses."
    return ""


@rule("PF-GC001", "gc-time", "gc_pause", "Garbage collection takes a material share of the hot spot's time",
      min_share=0.10, min_ms=1.0)
def gc_time(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    The service's own garbage collector takes a material share of this hot spot's latency.

    ## How it measures
    Over the hot spot's window (first to last entry span), from the service's runtime metrics:

    - **GC seconds per second** `g`: JVM `jvm_gc_pause_seconds` / `jvm_gc_duration_seconds` /
      `jvm_gc_collection_seconds`, Node `nodejs_gc_duration_seconds` / `v8js_gc_duration_seconds`,
      .NET `dotnet_gc_pause_time_seconds_total`, CPython `python_gc_pause_seconds` /
      `cpython.gc.pause.duration` (from `analyzer.instrument.gc_pauses`), Go
      `go_gc_duration_seconds` (stop-the-world pauses only: a lower bound).
    - **Go, concurrent GC**: its cost is CPU taken from the program: GC CPU seconds from the
      runtime/metrics CPU classes (`go_cpu_classes_gc_total_cpu_seconds_total`), or from the
      cumulative `go_memstats_gc_cpu_fraction` of older client_golang turned into a window figure
      (rate of fraction × uptime, times GOMAXPROCS; times the process CPU, a lower bound, when
      GOMAXPROCS is not exported).
    - **GC per request** = GC seconds over the window ÷ requests over the window. A collection is
      triggered by allocation, so it lands on the request that allocates or on those queued behind
      it, not at random moments. It is compared with the non-GC CPU per request (see PF-CPU001):
      the hot spot's runtime share (GC + CPU, see `heuristics/runtime.py`) is split between them
      by their per-request times. The cause is `gc_pause` when GC per request is at least the
      non-GC CPU per request.
    - Stop-the-world time outside spans: a Node request arriving during a pause waits in the event
      loop before its span starts. The mean event-loop delay (prom-client
      `nodejs_eventloop_lag_mean_seconds` less `_min_seconds`, the monitor's resolution; OTel
      `nodejs.eventloop.delay.mean` less `.min`; or the older `nodejs_eventloop_lag_seconds`)
      times GC's part of the runtime cost is GC wait per request the spans miss: quoted as
      `gc_ms_before_spans_per_request` and counted in the rewrite ceiling's basis.
    - Without an event-loop delay (JVM, Go, .NET; Node without the delay monitor), a
      stop-the-world pause holds every thread, the acceptor included: a request arriving during
      a pause of length p waits on average p/2 before its span starts. With Poisson arrivals the
      mean wait per request over the window W is Σp² ÷ 2W; from the pause metric's seconds S and
      count n, Cauchy-Schwarz gives the lower bound S² ÷ (n × 2W), quoted as
      `gc_ms_before_spans_per_request` (and in the ceiling's basis); where the largest pause M is
      exported (Micrometer `jvm_gc_pause_seconds_max`, Go's `quantile="1"`), M × S ÷ 2W is
      quoted as `gc_ms_before_spans_per_request_upper`. The message says server spans
      under-count GC by at least the bound. Only metrics that time pauses, paired with their own
      count: Micrometer `jvm_gc_pause_seconds`, client_java `jvm_gc_collection_seconds` (its
      `*Cycles` beans are left out), Go `go_gc_duration_seconds` (one value per cycle, counted as
      its two pauses), .NET pause time with its collection count (two pauses per collection, for
      background collections), Node's GC durations. Not OTel `jvm.gc.duration` (it times ZGC and
      Shenandoah concurrent cycles too) nor Go's GC CPU. A JVM without a paired count gets the
      sentence that server spans under-count pauses.
    - Pause quantiles (p50, p99, max), GC cycles per second and allocation rate are quoted as
      evidence where exposed; so are the correlation of per-bucket latency with GC time and the
      share of tail requests in GC-heavy intervals (see PF-GC002).

    Python: CPython exposes no GC duration metric; its collections run on the request thread
    and are inside process CPU time, so they show up in PF-CPU001 (see PF-GC003).

    ## False positives
    JVM `jvm_gc_duration_seconds` and client_java `jvm_gc_collection_seconds` include concurrent
    cycles of ZGC/Shenandoah, which do not stop requests; Micrometer's `jvm_gc_pause_seconds` counts
    pauses only. JDK 11-16's single `ZGC` bean times whole cycles under a name the `*Cycles`
    filter does not catch: the wait before spans is then overstated. A sidecar or batch thread in the same process that allocates heavily raises GC time
    without the hot spot causing it (the pauses still delay the hot spot).

    ## How to fix
    Reduce allocation on the hot path, size the heap, pick a low-pause collector; only when GC
    remains the dominant measured cause after that is a rewrite without a GC worth its cost.
    """
    m = measure(ctx)
    per_req = m.gc_share * m.mean_ms
    if m.gc is None or m.gc_share < th["min_share"] - 1e-9 or per_req < th["min_ms"]:  # 1e-9: float means
        return []
    what = "GC CPU" if m.gc_kind == "cpu" else "GC pauses"
    runtime_share = m.gc_share + m.cpu_share
    msg = (f"{what}: {m.gc.value:.2f} s per second over the window, {fmt_ms(m.gc_ms_per_request)} per request at "
           f"{m.rps.value:.1f} req/s" if m.rps is not None and np.isfinite(m.gc_ms_per_request)
           else f"{what}: {m.gc.value:.2f} s per second over the window")
    if np.isfinite(m.work_ms_per_request):
        msg += f", against {fmt_ms(m.work_ms_per_request)} of other CPU work per request"
    msg += (f"; GC is {m.gc_share / runtime_share:.0%} of the runtime cost, {m.gc_share:.0%} of this hot spot's time "
            f"(~{fmt_ms(per_req)} per request)." if runtime_share > 0 else f"; {m.gc_share:.0%} of this hot spot's time.")
    if m.gc_kind == "cpu" and m.cores_used is not None and m.cores_used.value > 0:
        msg = f"Go GC uses {min(1.0, m.gc.value / m.cores_used.value):.0%} of the service's CPU. " + msg
    if m.runtime == "node":
        msg += (" V8 times its atomic pauses only: incremental marking steps between them run on the event loop and "
                "count as other CPU work here, so GC is a lower bound.")
    if "go_gc_duration_seconds_sum" in m.gc.source:
        msg += " Stop-the-world pauses only: a lower bound of Go's GC cost (its concurrent mark is CPU work)."
    if "p99" in m.pause or "max" in m.pause:
        k = "p99" if "p99" in m.pause else "max"
        msg += f" Pause {k}: {m.pause[k].value * 1e3:.1f} ms."
    msg += outside_spans(m)
    return [Finding(rule="PF-GC001", category="gc_pause", message=msg, remedy=_REMEDY_GC,
                    share=min(1.0, m.gc_share), evidence=gc_evidence(m))]


@rule("PF-GC002", "gc-drives-tail", "gc_pause", "Tail latency coincides with GC: slow requests cluster in GC-heavy intervals",
      min_gc_seconds_per_second=0.01, min_tail_share=0.10, min_correlation=0.5, min_buckets=6, min_tail_lift=2.0,
      min_tail_overlap=0.5, pause_vs_p99=0.25)
def gc_drives_tail(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    GC moves with the hot spot's latency over the window: the slowest requests happen when the
    process is collecting, or single pauses are a large part of p99.

    ## How it measures
    The GC series (seconds per second, see PF-GC001) is a time series at the query step; each
    entry span is put in the bucket of the first point at or after its end.

    - **Correlation**: Pearson r between each bucket's mean latency and its GC rate (buckets with
      at least 2 requests).
    - **Tail overlap**: GC-heavy intervals are buckets whose GC rate is at least 1.25× the window
      mean. The share of tail requests (≥ p95) in those intervals is compared with the share of
      all requests there; the ratio is the lift.
    - **Pause size**: pause p99 (or max) from the runtime's histogram or summary against the hot
      spot's p99 latency.

    Fires when GC is at least `min_gc_seconds_per_second`, GC explains at least `min_tail_share`
    of the tail requests' own time (GC rate at their time, bounded by their self share: rare
    long pauses in a database-bound service stay quiet), and any of: r ≥ `min_correlation` over
    ≥ `min_buckets` buckets; tail overlap ≥ `min_tail_overlap` with lift ≥ `min_tail_lift`;
    pause p99/max ≥ `pause_vs_p99` × latency p99.

    The finding's `share` is the mean GC share (as PF-GC001), so a tail effect never inflates the
    hot spot's category; the GC share of the tail requests' own time (GC rate at their time,
    bounded by their self share) is quoted in the message and used by the rewrite ceiling for p99.

    ## False positives
    Load peaks raise both allocation (hence GC) and latency (queueing, downstream slowness): a
    correlation alone does not prove GC causes the slowness. The tail's own breakdown tells: if
    the tail is database or remote time, this finding is not the cause (its share stays small).
    A rate window (5m by default) smooths short GC storms across buckets.

    ## How to fix
    As PF-GC001; for tail pauses specifically, a low-pause collector (ZGC, Shenandoah) or smaller
    young generation, and fewer large short-lived allocations.
    """
    m = measure(ctx)
    if m.gc is None or m.gc.value < th["min_gc_seconds_per_second"] or m.gc_tail_share < th["min_tail_share"]:
        return []
    reasons: list[str] = []
    if np.isfinite(m.gc_latency_r) and m.gc_buckets >= th["min_buckets"] and m.gc_latency_r >= th["min_correlation"]:
        reasons.append(f"latency follows GC over {m.gc_buckets} time buckets (r = {m.gc_latency_r:.2f})")
    lift = m.tail_lift
    if np.isfinite(lift) and m.tail_in_heavy >= th["min_tail_overlap"] and lift >= th["min_tail_lift"]:
        reasons.append(f"{m.tail_in_heavy:.0%} of requests ≥ p95 fall in GC-heavy intervals, which hold "
                       f"{m.all_in_heavy:.0%} of all requests")
    pk = "p99" if "p99" in m.pause else ("max" if "max" in m.pause else "")
    if pk and m.p99_ms > 0 and m.pause[pk].value * 1e3 >= th["pause_vs_p99"] * m.p99_ms:
        reasons.append(f"GC pause {pk} {m.pause[pk].value * 1e3:.1f} ms is {m.pause[pk].value * 1e3 / m.p99_ms:.0%} "
                       f"of the hot spot's p99 ({fmt_ms(m.p99_ms)})")
    if not reasons:
        return []
    msg = ("GC drives this hot spot's tail: " + "; ".join(reasons) +
           f". GC explains ~{m.gc_tail_share:.0%} of the tail requests' time.")
    ev = [*gc_evidence(m), Evidence("gc_share_of_tail", m.gc_tail_share, "ratio",
                                    f"GC rate at the tail requests' times x their self share; {m.gc.source}")]
    return [Finding(rule="PF-GC002", category="gc_pause", message=msg, remedy=_REMEDY_GC,
                    share=min(1.0, m.gc_share), evidence=ev)]


@rule("PF-GC003", "gc-not-measurable", "unknown",
      "GC pause time cannot be measured for this runtime (CPython) or is not exported", min_self_share=0.30)
def gc_not_measurable(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    The hot spot is mostly in-process (self) time, but the service exports no GC time, so GC
    pauses cannot be told apart. It explains nothing by itself (category `unknown`); it says what
    is missing.

    ## How it measures
    Self share ≥ `min_self_share` and no GC-seconds signal for the service. For Python the
    message says why: CPython exposes no GC duration metric in prometheus_client or
    OpenTelemetry (only collection counts, quoted as evidence when present); its collector runs
    on the request thread, so GC time is inside process CPU time and PF-CPU001 covers it.

    ## False positives
    None: it reports an absence. Silence it per service when GC is known to be irrelevant.

    ## How to fix
    Enable the runtime's GC metric (the message names it), or for CPython time collections with
    `gc.callbacks` into a histogram, or profile with py-spy.
    """
    m = measure(ctx)
    if ctx.signals is None or m.gc is not None or m.self_share < th["min_self_share"] or m.runtime == "native":
        return []
    ev = []
    if m.gc_cycles is not None:
        ev.append(Evidence(Signal.GC_CYCLES_PER_SECOND, m.gc_cycles.value, "1/s", m.gc_cycles.source))
    enable = m.missing.get(Signal.GC_SECONDS_PER_SECOND, "")
    if m.runtime == "python":
        msg = (f"{m.self_share:.0%} of this hot spot is self time; CPython exposes no GC duration metric, so GC "
               f"pauses cannot be measured apart (its collections run on the request thread and count as CPU time"
               + (f"; {m.gc_cycles.value:.2f} collections/s" if m.gc_cycles is not None else "") + ").")
    else:
        msg = f"{m.self_share:.0%} of this hot spot is self time, but no GC time is exported for {m.runtime}."
    remedy = f"Enable: {enable}" if enable else "Export the runtime's GC pause metric (docs: shared signals catalog §2)."
    return [Finding(rule="PF-GC003", category="unknown", message=msg, remedy=remedy, share=0.0, evidence=ev)]
