"""CPU rules (PF-CPU*): whether the CPU the service burns accounts for a hot spot's self time.

A hot spot is `cpu_bound` only when its self time dominates AND CPU measurements account for
it; self time alone is never read as CPU work (it may be waiting: see PF-WAIT001).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from analyzer.model.findings import Evidence, Finding
from analyzer.model.signals import Signal
from heuristics.context import HotspotContext
from heuristics.registry import rule
from heuristics.runtime import SATURATED, RuntimeMeasure, fmt_ms, measure, metric_names

_REMEDY_CPU = ("Profile the hot path on CPU (py-spy, async-profiler, pprof, perf) and fix the algorithm first "
               "(repeated parsing/serialization, quadratic loops, regexes, logging); then consider caching results. "
               "If the work itself is irreducible and the service's time is dominated by it, a compiled rewrite of "
               "that path (Rust) is where the speed-up is.")


def cpu_evidence(m: RuntimeMeasure) -> list[Evidence]:
    ev: list[Evidence] = []
    if m.cores_used is not None:
        ev.append(Evidence(Signal.CPU_CORES_USED, m.cores_used.value, "cores", m.cores_used.source))
    if m.rps is not None:
        ev.append(Evidence(Signal.REQUESTS_PER_SECOND, m.rps.value, "1/s", m.rps.source))
    if np.isfinite(m.cpu_ms_per_request):
        ev.append(Evidence("cpu_ms_per_request", m.cpu_ms_per_request, "ms",
                           f"{Signal.CPU_CORES_USED} / {Signal.REQUESTS_PER_SECOND}"))
        if np.isfinite(m.work_ms_per_request) and m.gc is not None:
            ev.append(Evidence("cpu_ms_per_request_outside_gc", m.work_ms_per_request, "ms",
                               f"({Signal.CPU_CORES_USED} - GC CPU) / {Signal.REQUESTS_PER_SECOND}; GC: {m.gc.source}"))
        ev.append(Evidence("self_ms_per_request", m.service_self_ms, "ms",
                           "traces: mean self time of the service's entry spans"))
    if m.cores_available is not None:
        ev.append(Evidence(Signal.CPU_CORES_AVAILABLE, m.cores_available.value, "cores", m.cores_available.source))
    if m.run_queue is not None:
        ev.append(Evidence(Signal.CPU_RUN_QUEUE_SECONDS_PER_SECOND, m.run_queue.value, "s/s", m.run_queue.source))
    if m.throttled is not None:
        ev.append(Evidence(Signal.CPU_THROTTLED_FRACTION, m.throttled.value, "ratio", m.throttled.source))
    if m.cpu_wait is not None:
        ev.append(Evidence(Signal.CPU_WAIT_SECONDS_PER_SECOND, m.cpu_wait.value, "s/s", m.cpu_wait.source))
    return ev


def _msg_accounts(m: RuntimeMeasure) -> str:
    cap = " (more CPU than self time: parallel work; capped at self time)" if m.coverage > 1 else ""
    gc = (f", {fmt_ms(m.work_ms_per_request)} of it outside GC"
          if np.isfinite(m.work_ms_per_request) and m.work_ms_per_request < m.cpu_ms_per_request - 1e-9 else "")
    bg = (f", after {m.background_cores:.2f} cores of background CPU ({m.background_source})"
          if m.background_cores > 0 else "")
    queue = (f"; {m.in_flight:.1f} requests are in process at once on a ceiling of {m.ceiling_cores:.2f} cores "
             f"({m.ceiling_why}), so each waits behind the others' CPU work: that wait is CPU cost"
             if m.queue_factor > 1 else "")
    return (f"the service burns {fmt_ms(m.cpu_ms_per_request)} of CPU per request ({m.cores_used.value:.2f} cores "
            f"at {m.rps.value:.1f} req/s{bg}{gc}) against {fmt_ms(m.service_self_ms)} of self time{cap}{queue}")


@rule("PF-CPU001", "cpu-work", "cpu_bound", "The CPU each request burns accounts for the hot spot's self time",
      min_coverage=0.5, min_share=0.2, min_ms=1.0)
def cpu_work(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    The hot spot's self time is compute: the CPU the service burns per request covers it. This
    holds even on an idle machine (a request that computes for 50 ms is compute-bound at 1% load).

    ## How it measures
    - CPU per request = (cores used − background cores) ÷ requests per second; cores used from
      `process_cpu_seconds_total`, OTel `process.cpu.time`, `jvm.cpu.time`, cAdvisor
      `container_cpu_usage_seconds_total`, ...; background cores = the mean CPU of the window's
      intervals with no request of the service in flight (exporters, schedulers, batch threads:
      not request CPU).
      The request rate comes from server metrics (`http_server_request_duration_seconds_count`,
      ...) when exported, else from the traces: the service's entry spans per second over the
      window.
    - GC work is inside process CPU and belongs to PF-GC001, so it is taken out first: non-GC
      CPU per request = (cores used − GC CPU) ÷ requests per second, where GC CPU is Go's
      measured GC CPU, or for pausing collectors the GC pause seconds per second (a lower
      bound of GC CPU: at least one thread collects during a pause).
    - Coverage = CPU per request ÷ the service's mean self time per request (entry spans of every
      operation of the service, since process CPU is not per operation): does CPU account for
      the self time at all? When more requests are in self time at once (rps × self time) than
      the runtime's CPU ceiling (one core for CPython and Node, else the quota or CPU count),
      requests wait behind each other's CPU work: coverage is scaled by that ratio, so the
      queueing counts as CPU cost; time the process got no core for stays uncounted.
    - CPU share of the hot spot = self share × min(1, non-GC CPU per request ÷ self time per
      request), at most the self share left after GC.

    - Waiting for a core another process holds is not the service's work: when its own run-queue
      wait is exported (`analyzer.instrument.core_wait`'s `process_cpu_wait_seconds_total` /
      `process.cpu.wait.time`, cAdvisor `container_cpu_schedstat_runqueue_seconds_total`), the
      coverage compares the CPU per request with the self time less that wait per request. The
      CPU share stays the CPU's share of the whole time: the wait is counted as no one's CPU,
      and the message quotes it.

    Fires when coverage ≥ `min_coverage`, the CPU share ≥ `min_share` and the CPU it attributes
    is at least `min_ms` per request (a probe with no self time gets no CPU finding).

    ## False positives
    - Sampled traces without a request-rate metric undercount requests, which inflates CPU per
      request; export a server request counter or keep sampling at 100% for the window.
    - CPU burned outside requests (background jobs, another process in the same container for
      cAdvisor metrics) is charged to requests. Coverage above 1 is a hint: the message says so.
    - Process CPU is not per operation: an operation with little self time beside a heavy one
      gets the service-wide coverage.

    ## How to fix
    Profile on CPU and fix the algorithm; cache results of pure computations. A rewrite is the
    last step, for irreducible work that dominates the service.
    """
    m = measure(ctx)
    if (not m.cpu_measured or m.own_coverage < th["min_coverage"] or m.cpu_share < th["min_share"]
            or m.cpu_share * m.mean_ms < th["min_ms"]):
        return []
    msg = (f"CPU work: {_msg_accounts(m)}, so {m.cpu_share:.0%} of this hot spot's time "
           f"(~{fmt_ms(m.cpu_share * m.mean_ms)} per request) is CPU"
           + (f" after GC's {m.gc_share:.0%}" if m.gc_share >= 0.005 else "") + ".")
    if np.isfinite(m.core_wait_ms) and m.core_wait_ms >= 0.05 * m.service_self_ms:
        msg += (f" Its threads also waited {fmt_ms(m.core_wait_ms)} per request for a core other processes held "
                f"({metric_names(m.run_queue.source)}): contention on this host, not counted as its CPU work.")
    if m.runtime == "node" and m.gc is not None:
        msg += (" V8's incremental marking steps run on the event loop between the timed GC pauses: they are inside "
                "this CPU figure (profile with --cpu-prof: its '(garbage collector)' samples show them).")
    if m.runtime == "go" and m.gc_kind != "cpu":
        # Without runtime/metrics only stop-the-world pauses are known; the concurrent GC's CPU is in here.
        msg += (" Go's concurrent GC CPU is inside this figure: enable client_golang's runtime/metrics CPU classes "
                "(go_cpu_classes_gc_total_cpu_seconds_total) to split it out.")
    return [Finding(rule="PF-CPU001", category="cpu_bound", message=msg, remedy=_REMEDY_CPU,
                    share=min(1.0, m.cpu_share), evidence=cpu_evidence(m))]


@rule("PF-CPU002", "cpu-saturated", "cpu_bound", "The service uses nearly all the CPU cores it can use",
      min_utilization=0.8)
def cpu_saturated(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    Cores used are close to cores available (CPU limit, CFS quota, GOMAXPROCS, the runtime's CPU
    count, or node cores): requests that need CPU wait for a core.

    ## How it measures
    Mean of cores used ÷ the CPU ceiling over the service's window. The ceiling is one core for
    CPython (the GIL) and Node (one event-loop thread), bounded by a quota; otherwise cores
    available. The finding's share is the
    CPU-accounted share of PF-CPU001 (what the CPU measurements explain); waiting for a core is
    added only when measured, by PF-CPU004.

    ## False positives
    `cores available` from a runtime's CPU count (jvm_cpu_count, system_cpu_count) is the host's,
    not a container limit; node cores overstate what one service may use. Saturation by another
    tenant on the node shows as steal or PSI, not here.

    ## How to fix
    Cut CPU per request (see PF-CPU001) or add capacity (replicas, a higher limit); a rewrite helps
    only for the CPU share of the hot spot.
    """
    m = measure(ctx)
    if not np.isfinite(m.utilization) or m.utilization < th["min_utilization"] or m.cpu_share <= 0:
        return []
    msg = (f"CPU saturated: {m.cores_used.value:.2f} of the {m.ceiling_cores:.2f} cores it can use in use "
           f"({m.utilization:.0%}; {m.ceiling_why}); requests queue for its CPU.")
    if np.isfinite(m.cpu_ms_per_request):
        msg += f" Per request, {_msg_accounts(m)}."
    ev = [*cpu_evidence(m), Evidence("cpu_ceiling_cores", m.ceiling_cores, "cores", m.ceiling_why)]
    return [Finding(rule="PF-CPU002", category="cpu_bound", message=msg, remedy=_saturation_remedy(m),
                    share=min(1.0, m.cpu_share), evidence=ev)]


def _saturation_remedy(m: RuntimeMeasure) -> str:
    """Both ways out of saturation, with numbers: more processes/cores, or less CPU per request."""
    need = m.cores_used.value / SATURATED  # cores that would bring utilization under the threshold
    if m.runtime in ("python", "node"):
        more = (f"Run more processes ({m.runtime} uses about one core each: ~{max(2, int(np.ceil(need)))} processes "
                f"for {m.cores_used.value:.2f} cores of load at {SATURATED:.0%} each), if the host has the cores")
    else:
        more = f"Add capacity: ~{need:.1f} cores (replicas or a higher CPU limit) keep it under {SATURATED:.0%}"
    faster = (f"or cut the {fmt_ms(m.cpu_ms_per_request)} of CPU per request: a 2x faster implementation of "
              f"this work halves the load and the queue" if np.isfinite(m.cpu_ms_per_request) else
              "or cut CPU per request")
    return f"{more}; {faster}. " + _REMEDY_CPU


@rule("PF-CPU003", "cpu-throttled", "cpu_bound", "The container is throttled by its CFS CPU quota",
      min_throttled_fraction=0.10)
def cpu_throttled(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    The container hits its CPU limit: a share of CFS periods end throttled, and every thread of
    the process is stopped until the next period (100 ms by default).

    ## How it measures
    cAdvisor `container_cpu_cfs_throttled_periods_total / container_cpu_cfs_periods_total` over
    the hot spot's window (the series must map to the service, usually through a selector). The
    share is the CPU-accounted share of PF-CPU001; the stall time itself is not claimed, because
    the throttled fraction counts periods, not seconds.

    ## False positives
    Bursty multi-threaded work can be throttled at low average use (the quota is spent in the
    first few ms of a period). That still stalls requests, but the fix is the limit, not the code.

    ## How to fix
    Raise or remove the CPU limit (keep the request), or reduce parallel bursts (thread pools sized
    to the quota, GOMAXPROCS matching the limit). Rewrite only if the CPU share stays dominant.
    """
    m = measure(ctx)
    if m.throttled is None or m.throttled.value < th["min_throttled_fraction"]:
        return []
    msg = f"CPU throttled: {m.throttled.value:.0%} of CFS periods hit the container's quota"
    if m.cores_available is not None:
        msg += f" of {m.cores_available.value:.2f} cores"
    msg += "; every thread stalls until the next period."
    if np.isfinite(m.cpu_ms_per_request):
        msg += f" Per request, {_msg_accounts(m)}."
    return [Finding(rule="PF-CPU003", category="cpu_bound", message=msg,
                    remedy="Raise the CPU limit or size thread pools / GOMAXPROCS to the quota first. " + _REMEDY_CPU,
                    share=min(1.0, m.cpu_share), evidence=cpu_evidence(m))]


@rule("PF-CPU004", "cpu-queueing", "cpu_bound", "Latency rises with CPU use: requests queue for a core under saturation",
      min_correlation=0.5, min_buckets=6, min_peak_utilization=SATURATED)
def cpu_queueing(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    The hot spot gets slower when the service's CPU use goes up and it reaches saturation at
    least part of the window: the extra latency is waiting for a core.

    ## How it measures
    Entry spans are bucketed by the CPU series' points (the first point at or after each span's
    end). Pearson r between each bucket's mean latency and its utilization (cores used ÷ cores
    available). The queueing share is the extra self time of requests in saturated buckets
    (utilization ≥ 0.8) over the mean self time of the other requests, as a share of the hot
    spot's time, less GC's part of the runtime cost (a core filled by a GC storm is GC, not CPU
    queueing); the finding's share is the CPU-accounted share plus that, bounded by the self
    share less GC.

    Fires when r ≥ `min_correlation` over ≥ `min_buckets` buckets and the peak utilization ≥
    `min_peak_utilization`.

    ## False positives
    Load peaks also slow shared locks and connection pools inside the process; those show as self
    time too. Check PF-WAIT001 on the same hot spot and a wall-clock profile at peak.

    ## How to fix
    Add capacity for the peaks (autoscaling on CPU, a higher limit) or cut CPU per request.
    """
    m = measure(ctx)
    if (not np.isfinite(m.cpu_latency_r) or m.cpu_buckets < th["min_buckets"]
            or m.cpu_latency_r < th["min_correlation"] or not np.isfinite(m.peak_utilization)
            or m.peak_utilization < th["min_peak_utilization"]):
        return []
    share = min(max(0.0, m.self_share - m.gc_share), m.cpu_share + m.queue_share)
    msg = (f"Latency rises with CPU use (r = {m.cpu_latency_r:.2f} over {m.cpu_buckets} time buckets, peak "
           f"{m.peak_utilization:.0%} of available cores): requests in saturated intervals spend "
           f"{m.queue_share:.0%} of the hot spot's time waiting for a core.")
    ev = [*cpu_evidence(m),
          Evidence("cpu_latency_correlation", m.cpu_latency_r, "r",
                   f"{m.cpu_buckets} time buckets: mean entry-span latency vs "
                   f"{m.cores_used.source if m.cores_used else ''}"),
          Evidence("cpu_queueing_share", m.queue_share, "ratio", "excess self time in buckets at >= 80% utilization")]
    return [Finding(rule="PF-CPU004", category="cpu_bound", message=msg,
                    remedy="Add capacity for the peaks (scale on CPU, raise the limit) or cut CPU per request. "
                           + _REMEDY_CPU, share=share, evidence=ev)]


@rule("PF-CPU005", "event-loop-blocked", "cpu_bound", "Node.js event loop lag: the loop is blocked by synchronous work",
      min_lag_seconds=0.05)
def event_loop_blocked(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    The Node.js event loop is delayed: synchronous work (JSON of large bodies, crypto, regexes,
    GC) holds the only thread, and every other request waits.

    ## How it measures
    prom-client `nodejs_eventloop_lag_p99_seconds` / `nodejs_eventloop_lag_seconds` or OTel
    `nodejs.eventloop.delay.p99`, mean over the hot spot's window. The wait happens before a
    request's handler runs, mostly outside its server span, so the finding explains no share of
    the span's time (share 0); PF-CPU001 and PF-GC001 say whether the blocking work is CPU or GC.

    ## False positives
    A lag metric measured with timers includes the timer resolution (~1 ms); only large values
    matter.

    ## How to fix
    Move heavy synchronous work to worker threads or out of the process; break it into chunks.
    """
    m = measure(ctx)
    if m.event_loop_lag is None or m.event_loop_lag.value < th["min_lag_seconds"]:
        return []
    msg = (f"Event loop lag {m.event_loop_lag.value * 1e3:.0f} ms: requests wait that long for the loop before "
           f"their handler runs (time mostly outside the server span).")
    if m.gc_share > m.cpu_share > 0 or (m.gc_share > 0 and m.cpu_share == 0):
        msg += " GC is most of what blocks the loop here (see PF-GC001)."
    ev = [Evidence(Signal.EVENT_LOOP_LAG, m.event_loop_lag.value, "s", m.event_loop_lag.source), *cpu_evidence(m)]
    return [Finding(rule="PF-CPU005", category="cpu_bound", message=msg,
                    remedy="Move synchronous CPU work off the event loop (worker_threads) or split it. " + _REMEDY_CPU,
                    share=0.0, evidence=ev)]
