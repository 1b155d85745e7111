"""Runtime facts per service, named by meaning rather than by the metric that carried them.

Collectors (Prometheus, OTLP metrics) fill `Signals`; detectors read it. A signal is an
aligned time series (unix seconds, value) plus where it came from, so every finding can
quote the query or metric behind its number. A signal that was looked for and not found
is recorded in `missing` with the reason, which the report turns into missing evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class Signal:
    """Signal names. Units are fixed per name so detectors never convert."""

    GC_SECONDS_PER_SECOND = "gc_seconds_per_second"  # s/s: wall time in GC pauses (or GC CPU for Go)
    GC_CPU_FRACTION = "gc_cpu_fraction"  # 0..1 of the process CPU spent on GC (Go runtime/metrics)
    GC_PAUSE_P50 = "gc_pause_p50_seconds"  # s
    GC_PAUSE_P99 = "gc_pause_p99_seconds"  # s
    GC_PAUSE_MAX = "gc_pause_max_seconds"  # s
    GC_CYCLES_PER_SECOND = "gc_cycles_per_second"  # 1/s
    ALLOC_BYTES_PER_SECOND = "alloc_bytes_per_second"  # B/s
    CPU_CORES_USED = "cpu_cores_used"  # cores
    CPU_CORES_AVAILABLE = "cpu_cores_available"  # cores (limit, quota, GOMAXPROCS or node cores)
    CPU_UTILIZATION = "cpu_utilization"  # 0..1 of the cores available to the process (OTel *.cpu.utilization)
    CPU_THROTTLED_FRACTION = "cpu_throttled_fraction"  # 0..1 of CFS periods throttled
    CPU_WAIT_SECONDS_PER_SECOND = "cpu_wait_seconds_per_second"  # s/s some task waited for a core (PSI)
    # s/s the service's own threads were runnable but waited for a core (schedstat run-queue wait)
    CPU_RUN_QUEUE_SECONDS_PER_SECOND = "cpu_run_queue_seconds_per_second"
    PROCESSES = "processes"  # processes (instances) of the service: each has its own GIL / event loop
    EVENT_LOOP_LAG = "event_loop_lag_seconds"  # s
    # s: mean wait of an event for the Node event loop, beyond the delay monitor's own resolution
    EVENT_LOOP_DELAY_MEAN = "event_loop_delay_mean_seconds"
    REQUESTS_PER_SECOND = "requests_per_second"  # 1/s, from server metrics
    CACHE_HIT_RATIO = "cache_hit_ratio"  # 0..1
    POOL_WAIT_SECONDS = "pool_wait_seconds"  # s, mean wait to get a DB connection
    POOL_PENDING = "pool_pending"  # requests waiting for a DB connection


@dataclass
class Series:
    """An aligned time series: `t` in unix seconds (float64), `v` float64, same length."""

    t: np.ndarray
    v: np.ndarray
    source: str  # the PromQL query or OTLP metric name it came from
    unit: str = ""

    def mean(self) -> float:
        finite = self.v[np.isfinite(self.v)]
        return float(finite.mean()) if finite.size else float("nan")

    def max(self) -> float:
        finite = self.v[np.isfinite(self.v)]
        return float(finite.max()) if finite.size else float("nan")


@dataclass
class Missing:
    """A signal that was looked for and not obtained."""

    signal: str
    reason: str  # "not exposed" | "query failed: ..." | ...
    enable: str = ""  # what the user should turn on to get it
    query: str = ""


@dataclass
class ServiceSignals:
    service: str
    runtime: str = "unknown"  # python|node|go|jvm|dotnet|native|unknown
    series: dict[str, Series] = field(default_factory=dict)
    missing: dict[str, Missing] = field(default_factory=dict)

    def get(self, name: str) -> Series | None:
        return self.series.get(name)

    def has(self, name: str) -> bool:
        s = self.series.get(name)
        return s is not None and bool(np.isfinite(s.v).any())


@dataclass
class Signals:
    """All services' signals from every metric source, plus what failed on the way."""

    services: dict[str, ServiceSignals] = field(default_factory=dict)
    failures: list[Missing] = field(default_factory=list)  # failed queries, for report.input
    queries: int = 0  # requests sent to metric backends, for the report and benchmarks

    def for_service(self, service: str) -> ServiceSignals | None:
        return self.services.get(service)

    def service(self, name: str) -> ServiceSignals:
        """The signals of `name`, created empty on first use."""
        return self.services.setdefault(name, ServiceSignals(service=name))

    def within(self, t0: float | None, t1: float | None) -> "Signals":
        """These signals cut to the window [t0, t1] (unix seconds, None = open), as the traces are:
        a service whose every point lies outside it is left out, so a window is one window."""
        out = Signals(failures=list(self.failures), queries=self.queries)
        lo, hi = -np.inf if t0 is None else t0, np.inf if t1 is None else t1
        for name, ss in self.services.items():
            cut = {k: Series(sr.t[m], sr.v[m], sr.source, sr.unit)
                   for k, sr in ss.series.items() if (m := (sr.t >= lo) & (sr.t <= hi)).any()}
            if cut or not ss.series:
                out.services[name] = ServiceSignals(name, ss.runtime, cut, dict(ss.missing))
        return out

