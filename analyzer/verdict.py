"""The per-service verdict on a Rust rewrite.

Decided on the service's top hot spots by impact (the fewest, by total time, that cover 80% of
the service's time, at most 5), with each hot spot's category shares weighted by its time:

- `not_recommended` when database, network or caching dominates: a rewrite cannot shrink it;
  the reason names the first fix.
- `recommended` when GC pauses and/or CPU work dominate (each alone, or together ahead of the
  largest other cause by the classify margin) AND a GC/CPU rule backed that share with runtime
  metrics over the window. Self time alone never recommends.
- when in-process (self) time dominates without such a cause: `not_recommended` when PF-WAIT001
  shows it is waiting (low CPU, low GC); `insufficient_evidence` when the metrics that would tell
  GC from CPU from waiting are missing, naming what to enable for the runtime.
- a service seen only in metrics: `insufficient_evidence`, saying what the metrics show
  (e.g. CPU saturation) and that without traces no request latency can be related to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from analyzer.classify import ClassifyConfig, pick
from analyzer.model.findings import CATEGORIES, UNKNOWN, Finding
from analyzer.model.signals import ServiceSignals, Signal

RECOMMENDED = "recommended"
NOT_RECOMMENDED = "not_recommended"
INSUFFICIENT = "insufficient_evidence"

RUNTIME_CAUSES = ("gc_pause", "cpu_bound")
OTHER_CAUSES = ("database", "network", "caching")
TOP_COVER = 0.80  # top hot spots: the fewest covering this share of the service's time ...
TOP_MAX = 5  # ... but at most this many
METRICS_ONLY_SATURATION = 0.80  # cores used / available at which a metrics-only service is called saturated
METRICS_ONLY_THROTTLED = 0.10
METRICS_ONLY_GC = 0.10  # GC seconds per second

CAUSE_WORDS = {
    "database": "database time",
    "network": "time waiting on remote calls",
    "caching": "cache time and cache misses",
    "gc_pause": "GC pauses",
    "cpu_bound": "CPU work",
}

# What to enable, per runtime, so GC and CPU time can be measured (used when the collector gave no hint).
ENABLE_RUNTIME_METRICS = {
    "go": "client_golang's default Go collector (go_gc_duration_seconds, process_cpu_seconds_total), "
          "or OTel Go runtime instrumentation",
    "jvm": "Micrometer JvmGcMetrics/ProcessorMetrics (jvm_gc_pause_seconds, process_cpu_usage) "
           "or the OTel Java agent's runtime metrics (jvm.gc.duration, jvm.cpu.time)",
    "node": "prom-client collectDefaultMetrics (nodejs_gc_duration_seconds, nodejs_eventloop_lag_seconds, "
            "process_cpu_seconds_total) or @opentelemetry/instrumentation-runtime-node",
    "dotnet": "OpenTelemetry.Instrumentation.Runtime / .NET 9 System.Runtime meter "
              "(dotnet.gc.pause.time, dotnet.process.cpu.time)",
    "python": "prometheus_client's process collector (process_cpu_seconds_total) or OTel system-metrics "
              "(process.cpu.time); CPython exposes no GC pause duration, time collections with gc.callbacks",
    "native": "process_cpu_seconds_total (node_exporter/cAdvisor container_cpu_usage_seconds_total)",
    "unknown": "process CPU time (process_cpu_seconds_total or cAdvisor container_cpu_usage_seconds_total) "
               "and the runtime's GC pause metric",
}
# Ends the reason of an unmeasured verdict; renderers refer back to it instead of repeating it.
ENABLE_CLAUSE = "are missing: enable "
# Runtimes whose GC time is not separable from CPU time (CPython) or that have no GC.
NO_GC_SIGNAL_NEEDED = ("python", "native")
_CPU_RULES = ("PF-CPU001", "PF-CPU002", "PF-CPU003", "PF-CPU004")


@dataclass
class Verdict:
    rust_rewrite: str
    cause: str
    reason: str
    shares: dict[str, float] = field(default_factory=dict)
    top: list[str] = field(default_factory=list)  # operations the verdict was decided on

    def to_dict(self) -> dict:
        return {"rust_rewrite": self.rust_rewrite, "cause": self.cause, "reason": self.reason}


@dataclass
class HotspotResult:
    """What the verdict needs of one hot spot."""

    operation: str
    total_ms: float
    self_share: float
    category: str
    shares: dict[str, float]
    findings: list[Finding]


def top_hotspots(hotspots: list[HotspotResult]) -> list[HotspotResult]:
    """The fewest hot spots by total time covering TOP_COVER of the service's time (at most TOP_MAX)."""
    ranked = sorted(hotspots, key=lambda h: -h.total_ms)
    total = sum(h.total_ms for h in ranked)
    out, acc = [], 0.0
    for h in ranked[:TOP_MAX]:
        out.append(h)
        acc += h.total_ms
        if acc >= TOP_COVER * total:
            break
    return out


def decide(service: str, runtime: str, hotspots: list[HotspotResult], cfg: ClassifyConfig,
           has_runtime_metrics: bool, signals: ServiceSignals | None = None,
           fix_first: list[dict] | None = None) -> Verdict:
    total = sum(h.total_ms for h in hotspots)
    if total <= 0:
        return metrics_only(service, runtime, signals)
    top = top_hotspots(hotspots)
    top_total = sum(h.total_ms for h in top)
    ops = [h.operation for h in top]
    shares = {c: sum(h.shares.get(c, 0.0) * h.total_ms for h in top) / top_total for c in CATEGORIES}
    self_share = sum(h.self_share * h.total_ms for h in top) / top_total
    cause, share = pick(shares, cfg)
    where = _where(top)

    if cause in OTHER_CAUSES:
        fix = _first_fix(fix_first, cause)
        return Verdict(NOT_RECOMMENDED, cause,
                       f"{share:.0%} of {service}'s request time ({where}) is {CAUSE_WORDS[cause]}, which a rewrite "
                       f"cannot shrink; fix that first{fix}.", shares, ops)

    runtime_share = shares["gc_pause"] + shares["cpu_bound"]
    other = max(shares[c] for c in OTHER_CAUSES)
    runtime_dominates = cause in RUNTIME_CAUSES or (
        runtime_share >= cfg.min_share and runtime_share - other >= cfg.margin)
    if runtime_dominates:
        backing = _backing(top)
        main = cause if cause in RUNTIME_CAUSES else max(RUNTIME_CAUSES, key=lambda c: shares[c])
        if backing:
            both = (f"{shares['gc_pause']:.0%} GC pauses and {shares['cpu_bound']:.0%} CPU work"
                    if min(shares["gc_pause"], shares["cpu_bound"]) > 0 else f"{CAUSE_WORDS[main]}")
            return Verdict(RECOMMENDED, main,
                           f"{runtime_share:.0%} of {service}'s request time ({where}) is {both}, measured by runtime "
                           f"metrics over the window ({backing}); this is the part a rewrite can shrink — see the "
                           f"rewrite ceiling.", shares, ops)

    if self_share >= cfg.min_share:
        wait = [f for h in top for f in h.findings if f.rule == "PF-WAIT001"]
        if wait:
            return Verdict(NOT_RECOMMENDED, UNKNOWN,
                           f"{self_share:.0%} of {service}'s request time ({where}) is in-process, but runtime metrics "
                           f"show neither CPU nor GC accounting for it (PF-WAIT001): it is waiting (locks, sleeps, "
                           f"uninstrumented I/O), which a rewrite would not remove. Find the wait first: add spans or "
                           f"run a wall-clock profiler.", shares, ops)
        missing = _missing_metrics(runtime, signals, has_runtime_metrics)
        if missing:
            return Verdict(INSUFFICIENT, UNKNOWN,
                           f"{self_share:.0%} of {service}'s request time ({where}) is in-process (self time), but the "
                           f"runtime metrics that tell GC from CPU from waiting {ENABLE_CLAUSE}{missing}.",
                           shares, ops)
        return Verdict(NOT_RECOMMENDED, UNKNOWN,
                       f"{self_share:.0%} of {service}'s request time ({where}) is in-process, and runtime metrics "
                       f"explain only {shares['cpu_bound']:.0%} as CPU work and {shares['gc_pause']:.0%} as GC: no "
                       f"measured cause dominates, so a rewrite could save at most that share.", shares, ops)
    return Verdict(NOT_RECOMMENDED, UNKNOWN,
                   f"No single measured cause dominates {service}'s request time ({where}), and in-process time is "
                   f"only {self_share:.0%}: a rewrite could save at most that.", shares, ops)


def _where(top: list[HotspotResult]) -> str:
    names = ", ".join(h.operation for h in top[:3])
    return f"top hot spot{'s' if len(top) > 1 else ''}: {names}" + (f" +{len(top) - 3}" if len(top) > 3 else "")


def _first_fix(fix_first: list[dict] | None, cause: str) -> str:
    if not fix_first:
        return ""
    f = fix_first[0]
    text = f" — {f['rule']} on {f['operation']} saves {f.get('saving_ms_per_request', 0):.1f} ms per {f['operation']} request"
    if cause == "caching" and f["rule"].startswith("PF-DB"):
        text += (". A database rule comes first for a caching cause because every cache miss falls through to "
                 "that query: the miss path is the database call, so a cheaper query makes each miss cheaper")
    return text


def _backing(top: list[HotspotResult]) -> str:
    """Rule codes and queries of the GC/CPU findings that carry the share ('' when none)."""
    backed = [f for h in top for f in h.findings if f.category in RUNTIME_CAUSES and f.share > 0 and f.evidence]
    if not backed:
        return ""
    codes = sorted({f.rule for f in backed})
    names = sorted({n for f in backed for e in f.evidence for n in metric_names(e.source)})
    return ", ".join(codes) + (f" from {', '.join(names[:4])}" if names else "")


_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_METRIC = re.compile(r"(?:\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=[{\[,)])|([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=[{\[]))")


def metric_names(query: str) -> list[str]:
    """Metric names in a PromQL query (selectors, and bare names passed to functions), so a reason
    can name them; the full query stays in the findings' evidence."""
    found = (a or b for a, b in _METRIC.findall(_GROUPING.sub("", query)))
    return list(dict.fromkeys(found))


def _missing_metrics(runtime: str, signals: ServiceSignals | None, has_runtime_metrics: bool) -> str:
    """What to enable so GC, CPU and waiting can be told apart; '' when nothing needed is missing."""
    if signals is None or not has_runtime_metrics:
        return ENABLE_RUNTIME_METRICS.get(runtime, ENABLE_RUNTIME_METRICS["unknown"])
    need = []
    cpu_ok = signals.has(Signal.CPU_CORES_USED) or (
        signals.has(getattr(Signal, "CPU_UTILIZATION", "cpu_utilization")) and signals.has(Signal.CPU_CORES_AVAILABLE))
    if not cpu_ok:
        need.append(Signal.CPU_CORES_USED)
    if runtime not in NO_GC_SIGNAL_NEEDED and not signals.has(Signal.GC_SECONDS_PER_SECOND):
        need.append(Signal.GC_SECONDS_PER_SECOND)
    texts = []
    for sig in need:
        m = signals.missing.get(sig)
        hint = m.enable if m is not None and m.enable else ""
        texts.append(f"{sig}: {hint}" if hint else sig)
    if need and not any(signals.missing.get(s) and signals.missing[s].enable for s in need):
        texts.append(f"(for {runtime}: {ENABLE_RUNTIME_METRICS.get(runtime, ENABLE_RUNTIME_METRICS['unknown'])})")
    return "; ".join(texts)


def _mean(signals: ServiceSignals, name: str) -> tuple[float, str]:
    s = signals.get(name)
    if s is None:
        return float("nan"), ""
    return s.mean(), s.source


def metrics_only(service: str, runtime: str, signals: ServiceSignals | None) -> Verdict:
    """A service with runtime metrics but no traced requests: say what the metrics show, never guess
    the share of request latency (there is no latency to relate them to)."""
    if signals is None or not signals.series:
        return Verdict(INSUFFICIENT, UNKNOWN, f"{service} has no entry spans in the window and no runtime metrics.")
    used, used_src = _mean(signals, Signal.CPU_CORES_USED)
    avail, _ = _mean(signals, Signal.CPU_CORES_AVAILABLE)
    thr, _ = _mean(signals, Signal.CPU_THROTTLED_FRACTION)
    gc, gc_src = _mean(signals, Signal.GC_SECONDS_PER_SECOND)
    go_cpu = "go_cpu_classes" in gc_src
    facts, cause = [], UNKNOWN
    if np.isfinite(used):
        facts.append(f"CPU {used:.2f} cores" + (f" of {avail:.2f} ({used / avail:.0%})" if np.isfinite(avail) and avail > 0 else ""))
    if np.isfinite(thr):
        facts.append(f"{thr:.0%} of CFS periods throttled")
    if np.isfinite(gc):
        facts.append(f"GC {gc:.3f} {'CPU-s/s' if go_cpu else 's/s'}")
    saturated = (np.isfinite(used) and np.isfinite(avail) and avail > 0 and used / avail >= METRICS_ONLY_SATURATION) or (
        np.isfinite(thr) and thr >= METRICS_ONLY_THROTTLED)
    if saturated:
        cause = "cpu_bound"
    elif np.isfinite(gc) and not go_cpu and gc >= METRICS_ONLY_GC:
        cause = "gc_pause"
    shown = "; ".join(facts) if facts else "no CPU or GC series"
    if cause == UNKNOWN:
        return Verdict(INSUFFICIENT, UNKNOWN,
                       f"{service} is seen only in metrics ({shown}): nothing there is saturated, and without traces "
                       f"there is no request latency to attribute. Send its traces for a verdict.")
    what = "CPU is saturated" if cause == "cpu_bound" else "GC takes a large share of wall time"
    return Verdict(INSUFFICIENT, cause,
                   f"{service} is seen only in metrics ({shown}): {what}, which a rewrite could reduce in CPU cost, but "
                   f"with no traces there is no request latency to relate it to, so its share of latency is not "
                   f"measured. Send its traces for a verdict.")
