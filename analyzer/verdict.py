"""The per-service verdict on a Rust rewrite.

`recommended` needs the service's time to be dominated by gc_pause or cpu_bound, and that
cause to come from runtime metrics; database, network and caching causes are
`not_recommended` with what to fix first. When traces show mostly in-process (self) time
but no runtime metrics can tell GC from CPU from waiting, the verdict is
`insufficient_evidence`, naming the metrics to enable for the service's runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from analyzer.classify import ClassifyConfig, pick
from analyzer.findings import CATEGORIES, UNKNOWN, Finding

RECOMMENDED = "recommended"
NOT_RECOMMENDED = "not_recommended"
INSUFFICIENT = "insufficient_evidence"

CAUSE_WORDS = {
    "database": "database time",
    "network": "time waiting on remote calls",
    "caching": "cache time and cache misses",
    "gc_pause": "GC pauses",
    "cpu_bound": "CPU work",
}

# What to enable, per runtime, so GC and CPU time can be measured.
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


@dataclass
class Verdict:
    rust_rewrite: str
    cause: str
    reason: str
    shares: dict[str, float] = field(default_factory=dict)

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


def decide(service: str, runtime: str, hotspots: list[HotspotResult], cfg: ClassifyConfig,
           has_runtime_metrics: bool) -> Verdict:
    total = sum(h.total_ms for h in hotspots)
    if total <= 0:
        return Verdict(INSUFFICIENT, UNKNOWN, f"{service} has no entry spans with a duration in the window.")
    # Service-level shares: each hot spot's shares weighted by the time it takes.
    shares = {c: sum(h.shares.get(c, 0.0) * h.total_ms for h in hotspots) / total for c in CATEGORIES}
    self_share = sum(h.self_share * h.total_ms for h in hotspots) / total
    cause, share = pick(shares, cfg)
    top = max(hotspots, key=lambda h: h.total_ms)
    pct = f"{share:.0%}"
    if cause in ("database", "network", "caching"):
        return Verdict(NOT_RECOMMENDED, cause,
                       f"{pct} of {service}'s request time is {CAUSE_WORDS[cause]} (largest: {top.operation}); "
                       f"a rewrite cannot shrink it, fix that first.", shares)
    if cause in ("gc_pause", "cpu_bound"):
        return Verdict(RECOMMENDED, cause,
                       f"{pct} of {service}'s request time is {CAUSE_WORDS[cause]}, measured by runtime metrics; "
                       f"this is the part a rewrite can shrink.", shares)
    if self_share >= cfg.min_share and not has_runtime_metrics:
        return Verdict(INSUFFICIENT, UNKNOWN,
                       f"{self_share:.0%} of {service}'s request time is in-process (self time), but no runtime "
                       f"metrics tell GC from CPU from waiting: enable {ENABLE_RUNTIME_METRICS.get(runtime, ENABLE_RUNTIME_METRICS['unknown'])}.",
                       shares)
    if self_share >= cfg.min_share:
        return Verdict(NOT_RECOMMENDED, UNKNOWN,
                       f"{self_share:.0%} of {service}'s request time is in-process, but runtime metrics show "
                       f"neither GC nor CPU accounting for it: it is waiting (locks, sleeps, uninstrumented I/O), "
                       f"which a rewrite would not remove.", shares)
    return Verdict(NOT_RECOMMENDED, UNKNOWN,
                   f"No single measured cause dominates {service}'s request time, and in-process time is only "
                   f"{self_share:.0%}: a rewrite could save at most that.", shares)
