"""Unattributed wait (PF-WAIT*): self time that is neither CPU nor GC, so it is waiting on something
the traces do not show. Never `cpu_bound`: a rewrite does not make a sleep shorter.
"""

from __future__ import annotations

from collections.abc import Mapping

from analyzer.model.findings import Evidence, Finding
from heuristics.context import HotspotContext
from heuristics.cpu import cpu_evidence
from heuristics.gc import gc_evidence
from heuristics.registry import rule
from heuristics.runtime import fmt_ms, measure, metric_names


@rule("PF-WAIT001", "unattributed-wait", "unknown",
      "Self time dominates but CPU and GC are low: waiting on locks, sleeps or uninstrumented I/O",
      min_self_share=0.5, max_cpu_coverage=0.3, max_gc_share=0.10, min_cpu_wait=0.05)
def unattributed_wait(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    Most of the hot spot's time is self time (no database, cache or remote span covers it), yet
    the service burns little CPU per request and spends little time in GC. The request is
    waiting: on a lock or a pool, a `sleep`/retry back-off, or I/O that no instrumentation
    records (a file, a socket, a client library without OpenTelemetry support).

    ## How it measures
    - Self share of the hot spot (critical-path breakdown) ≥ `min_self_share`.
    - CPU coverage (CPU per request ÷ self time per request, see PF-CPU001) ≤ `max_cpu_coverage`.
    - GC share (PF-GC001) ≤ `max_gc_share`. When the runtime exports no GC time, GC is still
      bounded: GC is CPU work, so GC seconds per second cannot exceed the cores used; the rule
      accepts that bound when the cores used are ≤ `max_gc_share`. Otherwise GC is unknown and
      the verdict asks for the GC metric instead.

    - With CPU pressure exported (Linux PSI: cAdvisor `container_pressure_cpu_waiting_seconds_total`,
      node_exporter `node_pressure_cpu_waiting_seconds_total`) of at least `min_cpu_wait` s/s,
      the wait is named: contention for a core with other work, not the service's CPU work. So it is
      when the service's own run-queue wait (see PF-CPU001) is at least half of the waiting time.

    Category `unknown`: it explains nothing a rewrite could shrink. Its share is the self time
    left once CPU and GC are taken out.

    ## False positives
    Sampled traces without a request-rate metric overcount CPU per request (fewer requests seen),
    which hides this finding rather than creating it. CPU per request is a service-wide mean: an
    operation that waits beside one that computes can be missed.

    ## How to fix
    Find out what it waits on: add spans around suspected blocking calls (locks, pools, file and
    socket I/O, sleeps, retries), or run a wall-clock profiler that shows off-CPU time
    (py-spy `--idle`, async-profiler `-e wall`, Go pprof block/mutex/goroutine profiles,
    `perf sched`/offcputime). Then fix that wait; a rewrite would not shorten it.
    """
    m = measure(ctx)
    if not m.cpu_measured or m.self_share < th["min_self_share"] or m.coverage > th["max_cpu_coverage"]:
        return []
    if m.gc_measured:
        if m.gc_share > th["max_gc_share"]:
            return []
        gc_note = f"GC {m.gc_share:.0%}"
    elif m.cores_used is not None and m.cores_used.value <= th["max_gc_share"]:
        gc_note = (f"GC not exported, but GC is CPU work and the process uses only {m.cores_used.value:.2f} cores, "
                   f"so GC is at most {m.cores_used.value:.0%} of wall time")
    else:
        return []
    wait = max(0.0, m.self_share - m.cpu_share - m.gc_share)
    on_what = "on something the traces do not show (locks, sleeps, uninstrumented I/O or calls)"
    if m.run_queue is not None and m.core_wait_ms >= 0.5 * max(0.0, m.service_self_ms - m.cpu_ms_per_request):
        on_what = (f"for a CPU core: its threads waited {fmt_ms(m.core_wait_ms)} per request for one other "
                   f"processes held ({metric_names(m.run_queue.source)}), while its own CPU covered "
                   f"{m.coverage:.0%} of its self time: contention from other work on its cores, not its own CPU work")
    elif m.cpu_wait is not None and m.cpu_wait.value >= th["min_cpu_wait"]:
        on_what = (f"for a CPU core: its tasks waited {m.cpu_wait.value:.2f} s per second for one (CPU pressure, "
                   f"Linux PSI) while its own CPU covered {m.coverage:.0%} of its self time: contention from other "
                   f"work on its cores, not its own CPU work")
    msg = (f"{m.self_share:.0%} of this hot spot is self time ({fmt_ms(m.self_ms)} per request), but the service burns "
           f"only {fmt_ms(m.cpu_ms_per_request)} of CPU per request ({m.coverage:.0%} of its self time; {gc_note}): "
           f"~{wait:.0%} of the time is waiting {on_what}. Not CPU-bound; a rewrite would not shorten it.")
    ev = [Evidence("self_share", m.self_share, "ratio", "traces: critical-path breakdown of the entry spans"),
          *cpu_evidence(m), *gc_evidence(m)]
    return [Finding(rule="PF-WAIT001", category="unknown", message=msg,
                    remedy="Find what it waits on: add spans around locks, pools, file/socket I/O, sleeps and retries, "
                           "or run a wall-clock (off-CPU) profiler: py-spy --idle, async-profiler -e wall, "
                           "Go pprof block/mutex profiles.",
                    share=min(1.0, wait), evidence=ev)]
