"""GC, CPU and unattributed-wait rules at their threshold edges: each rule fires, and a near miss does not.

Traces come from the real OpenTelemetry SDK with explicit timestamps; `Signals` are built
directly with exact values (the end-to-end tests load the same kinds of series into a real
Prometheus). Every expected number is worked out from the values in the test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from analyzer.breakdown import compute
from analyzer.config import Config, Override
from analyzer.model.findings import Finding
from analyzer.hotspots import find_hotspots
from analyzer.model.spans import SpanTable
from analyzer.model.signals import Missing, Series, Signal, Signals
from collectors.otlp_traces import load_traces
from heuristics.context import HotspotContext
from heuristics.engine import run_rules
from heuristics.registry import all_rules
from tests.workloads.recording import write_proto_single

MS = 1_000_000
NS = 1_000_000_000
T0 = 1_700_000_000  # unix seconds; start of every unit-test window
LANG = {"go": "go", "jvm": "java", "node": "nodejs", "python": "python", "dotnet": "dotnet"}


class Traces:
    """Entry spans (SERVER) with an optional database child, one TracerProvider per service whose
    resource carries `telemetry.sdk.language`, so the table knows each service's runtime."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.providers: dict[str, TracerProvider] = {}

    def tracer(self, service: str, runtime: str) -> trace.Tracer:
        if service not in self.providers:
            tp = TracerProvider(resource=Resource.create({"service.name": service,
                                                          "telemetry.sdk.language": LANG[runtime]}))
            tp.add_span_processor(SimpleSpanProcessor(self.exporter))
            self.providers[service] = tp
        return self.providers[service].get_tracer("profile-first.tests")

    def request(self, service: str, runtime: str, operation: str, start_s: float, self_ms: float,
                db_ms: float = 0.0) -> None:
        """One request starting at `start_s`: `self_ms` of its own time, then `db_ms` in a query."""
        tr = self.tracer(service, runtime)
        t0 = int(round(start_s * NS))
        end = t0 + int(round((self_ms + db_ms) * MS))
        root = tr.start_span(operation, kind=SpanKind.SERVER, start_time=t0)
        if db_ms:
            child = tr.start_span("SELECT orders", context=trace.set_span_in_context(root), kind=SpanKind.CLIENT,
                                  attributes={"db.system": "postgresql",
                                              "db.statement": "SELECT * FROM orders WHERE customer_id = 1"},
                                  start_time=t0 + int(round(self_ms * MS)))
            child.end(end_time=end)
        root.end(end_time=end)

    def table(self, path: Path) -> SpanTable:
        spans = self.exporter.get_finished_spans()
        return load_traces([str(write_proto_single(spans, path))]).table

    def shutdown(self) -> None:
        for tp in self.providers.values():
            tp.shutdown()


def steady(traces: Traces, service: str, runtime: str, n: int, every_s: float, self_ms: float | Callable[[float], float],
           db_ms: float = 0.0, op: str = "GET /work", start: float = T0) -> None:
    for i in range(n):
        t = start + i * every_s
        traces.request(service, runtime, op, t, self_ms(t) if callable(self_ms) else self_ms, db_ms)


def series(value: float | Callable[[np.ndarray], np.ndarray], source: str, t0: float = T0 - 600,
           t1: float = T0 + 4 * 3600, step: float = 15.0) -> Series:
    t = np.arange(t0, t1 + step, step, dtype=np.float64)
    v = value(t) if callable(value) else np.full(t.shape, float(value))
    return Series(t=t, v=np.asarray(v, dtype=np.float64), source=source)


Q = {  # PromQL as the collector writes it, quoted by evidence
    Signal.GC_SECONDS_PER_SECOND: "sum by (pf_service) (rate(jvm_gc_pause_seconds_sum[5m]))",
    Signal.CPU_CORES_USED: "sum by (pf_service) (rate(process_cpu_seconds_total[5m]))",
    Signal.CPU_CORES_AVAILABLE: "sum by (pf_service) (container_spec_cpu_quota / container_spec_cpu_period)",
    Signal.CPU_THROTTLED_FRACTION: "rate(container_cpu_cfs_throttled_periods_total[5m]) / rate(container_cpu_cfs_periods_total[5m])",
    Signal.REQUESTS_PER_SECOND: "sum by (pf_service) (rate(http_server_request_duration_seconds_count[5m]))",
    Signal.GC_PAUSE_MAX: "max by (pf_service) (jvm_gc_pause_seconds_max)",
    Signal.EVENT_LOOP_LAG: "max by (pf_service) (nodejs_eventloop_lag_p99_seconds)",
    Signal.GC_CPU_FRACTION: "rate(go_cpu_classes_gc_total_cpu_seconds_total[5m]) / rate(go_cpu_classes_total_cpu_seconds_total[5m])",
}


def signals_for(service: str, runtime: str, **values: float | Callable | Series) -> Signals:
    sig = Signals()
    ss = sig.service(service)
    ss.runtime = runtime
    for name, v in values.items():
        ss.series[name] = v if isinstance(v, Series) else series(v, Q.get(name, name))
    return sig


def contexts(table: SpanTable, signals: Signals | None) -> dict[str, HotspotContext]:
    b = compute(table)
    hs = find_hotspots(table, b)
    return {f"{h.service} {h.operation}": HotspotContext(table, b, h, signals.for_service(h.service) if signals else None,
                                                        tuple(hs)) for h in hs}


def fire(code: str, ctx: HotspotContext, **th: float) -> list[Finding]:
    r = all_rules()[code]
    return r.detect(ctx, {**r.defaults, **th})


@pytest.fixture
def traces():
    t = Traces()
    yield t
    t.shutdown()


def one(traces: Traces, tmp_path: Path, signals: Signals | None) -> HotspotContext:
    (ctx,) = contexts(traces.table(tmp_path / "t.pb"), signals).values()
    return ctx


# --- GC -------------------------------------------------------------------------------------


@pytest.mark.parametrize("gc, fires", [(0.40, True), (0.09, False)])
def test_gc001_pause_share_is_gc_seconds_per_second(traces, tmp_path, gc, fires):
    """JVM, 50 ms of self time per request, the process paused `gc` s per second: GC explains
    `gc` of the time (0.40 fires; 0.09 is under min_share 0.10)."""
    steady(traces, "ledger", "jvm", 60, 10, 50)
    ctx = one(traces, tmp_path, signals_for("ledger", "jvm", **{Signal.GC_SECONDS_PER_SECOND: gc}))
    found = fire("PF-GC001", ctx)
    assert bool(found) is fires
    if fires:
        (f,) = found
        assert f.category == "gc_pause" and f.share == pytest.approx(0.40)
        assert "0.40 s per second" in f.message and "~20.0 ms per request" in f.message
        assert f.evidence[0].source == Q[Signal.GC_SECONDS_PER_SECOND]


def test_gc001_share_is_bounded_by_self_time(traces, tmp_path):
    """20 ms self + 80 ms database per request and 0.4 s/s of GC: GC can only stretch in-process
    time, so it explains at most the 20% self share."""
    steady(traces, "ledger", "jvm", 60, 10, 20, db_ms=80)
    ctx = one(traces, tmp_path, signals_for("ledger", "jvm", **{Signal.GC_SECONDS_PER_SECOND: 0.4}))
    (f,) = fire("PF-GC001", ctx)
    assert f.share == pytest.approx(0.20)


def test_go_concurrent_gc_is_its_cpu_fraction(traces, tmp_path):
    """Go with runtime/metrics CPU classes: 1 core used at 10 req/s = 100 ms CPU per request, all
    of the 100 ms self time; 60% of the CPU is GC. GC explains 60%, other CPU work 40%."""
    steady(traces, "router", "go", 60, 10, 100)
    gc = series(0.6, "sum by (pf_service) (rate(go_cpu_classes_gc_total_cpu_seconds_total[5m]))")
    ctx = one(traces, tmp_path, signals_for("router", "go", **{
        Signal.GC_SECONDS_PER_SECOND: gc, Signal.GC_CPU_FRACTION: 0.6,
        Signal.CPU_CORES_USED: 1.0, Signal.REQUESTS_PER_SECOND: 10.0}))
    (g,) = fire("PF-GC001", ctx)
    (c,) = fire("PF-CPU001", ctx)
    assert g.share == pytest.approx(0.6) and "Go GC uses 60% of the service's CPU" in g.message
    assert c.share == pytest.approx(0.4)


def test_go_stop_the_world_pauses_alone_are_a_near_miss(traces, tmp_path):
    """Go with only the default summary: 2 ms/s of stop-the-world pauses is 0.2%, no finding."""
    steady(traces, "router", "go", 60, 10, 100)
    gc = series(0.002, "sum by (pf_service) (rate(go_gc_duration_seconds_sum[5m]))")
    ctx = one(traces, tmp_path, signals_for("router", "go", **{Signal.GC_SECONDS_PER_SECOND: gc}))
    assert fire("PF-GC001", ctx) == []


@pytest.mark.parametrize("runtime, source", [
    ("dotnet", "sum by (pf_service) (rate(dotnet_gc_pause_time_seconds_total[5m]))"),
    ("node", "sum by (pf_service) (rate(v8js_gc_duration_seconds_sum[5m]))"),
    ("jvm", "sum by (pf_service) (rate(jvm_gc_duration_seconds_sum[5m]))"),
])
def test_gc001_pausing_runtimes_share_one_model(traces, tmp_path, runtime, source):
    """.NET, Node (OTel) and JVM (OTel) GC time is wall-clock pause time: 0.3 s/s explains 30%."""
    steady(traces, "svc", runtime, 60, 10, 50)
    ctx = one(traces, tmp_path, signals_for("svc", runtime, **{Signal.GC_SECONDS_PER_SECOND: series(0.3, source)}))
    (f,) = fire("PF-GC001", ctx)
    assert f.share == pytest.approx(0.3) and f.evidence[0].source == source


def test_go_without_runtime_metrics_says_gc_cpu_is_inside_cpu(traces, tmp_path):
    """Go with only the default collector: CPU per request covers the self time, but the concurrent
    GC's CPU cannot be split out; the CPU finding says how to split it."""
    steady(traces, "router", "go", 60, 10, 100)
    gc = series(0.002, "sum by (pf_service) (rate(go_gc_duration_seconds_sum[5m]))")
    ctx = one(traces, tmp_path, signals_for("router", "go", **{
        Signal.GC_SECONDS_PER_SECOND: gc, Signal.CPU_CORES_USED: 1.0, Signal.REQUESTS_PER_SECOND: 10.0}))
    (f,) = fire("PF-CPU001", ctx)
    assert "go_cpu_classes_gc_total_cpu_seconds_total" in f.message


def _phases(t: np.ndarray, low: float, high: float) -> np.ndarray:
    """`high` in every second 10-minute phase, `low` otherwise."""
    return np.where(((t - T0) // 600) % 2 == 1, high, low)


def test_gc002_tail_requests_cluster_in_gc_heavy_intervals(traces, tmp_path):
    """Node: GC alternates 0.05 and 0.30 s/s every 10 minutes; requests take 40 ms in quiet phases
    and 120 ms in GC-heavy ones. Latency follows GC and the tail is all in heavy phases."""
    steady(traces, "feed", "node", 720, 10, lambda t: 120.0 if ((t - T0) // 600) % 2 == 1 else 40.0)
    gc = series(lambda t: _phases(t - 1e-6, 0.05, 0.30), "sum by (pf_service) (rate(nodejs_gc_duration_seconds_sum[5m]))")
    ctx = one(traces, tmp_path, signals_for("feed", "node", **{Signal.GC_SECONDS_PER_SECOND: gc}))
    (f,) = fire("PF-GC002", ctx)
    assert "r = 1.00" in f.message or "r = 0.99" in f.message
    assert "100% of requests ≥ p95 fall in GC-heavy intervals" in f.message
    tail = {e.signal: e.value for e in f.evidence}
    assert tail["gc_share_of_tail"] == pytest.approx(0.30)


def test_gc002_near_miss_flat_gc_and_small_pauses(traces, tmp_path):
    """Flat GC (no heavy intervals, no correlation) and a 20 ms max pause against a 100 ms p99."""
    steady(traces, "ledger", "jvm", 120, 10, 100)
    ctx = one(traces, tmp_path, signals_for("ledger", "jvm", **{Signal.GC_SECONDS_PER_SECOND: 0.15,
                                                               Signal.GC_PAUSE_MAX: 0.02}))
    assert fire("PF-GC002", ctx) == []


def test_gc002_single_pause_large_against_p99(traces, tmp_path):
    """A 50 ms max pause against a 100 ms p99 is 50% of it (threshold 25%)."""
    steady(traces, "ledger", "jvm", 120, 10, 100)
    ctx = one(traces, tmp_path, signals_for("ledger", "jvm", **{Signal.GC_SECONDS_PER_SECOND: 0.15,
                                                               Signal.GC_PAUSE_MAX: 0.05}))
    (f,) = fire("PF-GC002", ctx)
    assert "GC pause max 50.0 ms is 50% of the hot spot's p99" in f.message


def test_gc003_python_says_pauses_cannot_be_measured(traces, tmp_path):
    """CPython: self time dominates, no GC time exists in any exporter; the finding says so."""
    steady(traces, "render", "python", 60, 10, 80)
    sig = signals_for("render", "python", **{Signal.CPU_CORES_USED: 0.008})
    sig.service("render").missing[Signal.GC_SECONDS_PER_SECOND] = Missing(
        Signal.GC_SECONDS_PER_SECOND, "CPython exposes no GC-duration metric", enable="record gc.callbacks")
    (f,) = fire("PF-GC003", one(traces, tmp_path, sig))
    assert f.category == "unknown" and f.share == 0
    assert "CPython exposes no GC duration metric" in f.message and "gc.callbacks" in f.remedy


def test_gc003_near_miss_when_time_is_in_the_database(traces, tmp_path):
    steady(traces, "render", "python", 60, 10, 10, db_ms=90)
    assert fire("PF-GC003", one(traces, tmp_path, signals_for("render", "python", cpu_cores_used=0.01))) == []


# --- CPU ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cores, fires", [(0.18, True), (0.09, False)])
def test_cpu001_cpu_per_request_covers_self_time_on_an_idle_machine(traces, tmp_path, cores, fires):
    """2 req/s, 100 ms self time each, 8 cores available. 0.18 cores = 90 ms of CPU per request,
    90% of self time: compute-bound at 2% utilization. 0.09 cores = 45 ms: coverage 0.45 < 0.5."""
    steady(traces, "render", "python", 600, 0.5, 100)
    ctx = one(traces, tmp_path, signals_for("render", "python", **{
        Signal.CPU_CORES_USED: cores, Signal.REQUESTS_PER_SECOND: 2.0, Signal.CPU_CORES_AVAILABLE: 8.0}))
    found = fire("PF-CPU001", ctx)
    assert bool(found) is fires
    assert fire("PF-CPU002", ctx) == []  # 2% of 8 cores: not saturated
    if fires:
        assert found[0].share == pytest.approx(0.9)
        assert "90.0 ms of CPU per request" in found[0].message


def test_cpu001_request_rate_from_traces_when_no_metric(traces, tmp_path):
    """No request-rate metric: 600 entry spans over 300 s (a request every 0.5 s, 100 ms each)
    give ~2 req/s, so 0.18 cores is again ~90 ms per request."""
    steady(traces, "render", "python", 600, 0.5, 100)
    ctx = one(traces, tmp_path, signals_for("render", "python", **{Signal.CPU_CORES_USED: 0.18}))
    (f,) = fire("PF-CPU001", ctx)
    rps = next(e for e in f.evidence if e.signal == Signal.REQUESTS_PER_SECOND)
    assert rps.source.startswith("traces: 600 entry spans") and rps.value == pytest.approx(2.0, rel=0.01)
    assert f.share == pytest.approx(0.9, rel=0.01)


@pytest.mark.parametrize("cores, fires", [(3.4, True), (3.0, False)])
def test_cpu002_saturation(traces, tmp_path, cores, fires):
    """4 cores available: 3.4 used is 85% (fires at 80%); 3.0 is 75%."""
    steady(traces, "api", "jvm", 60, 10, 100)
    ctx = one(traces, tmp_path, signals_for("api", "jvm", **{
        Signal.CPU_CORES_USED: cores, Signal.CPU_CORES_AVAILABLE: 4.0, Signal.REQUESTS_PER_SECOND: 40.0}))
    assert bool(fire("PF-CPU002", ctx)) is fires


@pytest.mark.parametrize("throttled, fires", [(0.12, True), (0.08, False)])
def test_cpu003_throttling(traces, tmp_path, throttled, fires):
    steady(traces, "api", "go", 60, 10, 100)
    ctx = one(traces, tmp_path, signals_for("api", "go", **{
        Signal.CPU_CORES_USED: 0.95, Signal.CPU_CORES_AVAILABLE: 1.0, Signal.CPU_THROTTLED_FRACTION: throttled}))
    found = fire("PF-CPU003", ctx)
    assert bool(found) is fires
    if fires:
        assert "12% of CFS periods" in found[0].message and found[0].evidence[-1].source == Q[Signal.CPU_THROTTLED_FRACTION]


def test_cpu004_latency_rises_with_cpu_use(traces, tmp_path):
    """CPU alternates 1.0 and 3.8 of 4 cores every 10 minutes; self time is 60 ms in quiet phases
    and 150 ms at 95% utilization: requests queue for a core."""
    steady(traces, "api", "jvm", 720, 10, lambda t: 150.0 if ((t - T0) // 600) % 2 == 1 else 60.0)
    cores = series(lambda t: _phases(t - 1e-6, 1.0, 3.8), Q[Signal.CPU_CORES_USED])
    ctx = one(traces, tmp_path, signals_for("api", "jvm", **{
        Signal.CPU_CORES_USED: cores, Signal.CPU_CORES_AVAILABLE: 4.0, Signal.REQUESTS_PER_SECOND: 40.0}))
    (f,) = fire("PF-CPU004", ctx)
    # Half the requests take 90 ms more than the quiet mean of 60: 45 / 105 of the time.
    assert {e.signal: e.value for e in f.evidence}["cpu_queueing_share"] == pytest.approx(45 / 105, rel=0.02)


def test_cpu004_near_miss_flat_cpu(traces, tmp_path):
    steady(traces, "api", "jvm", 720, 10, 100)
    ctx = one(traces, tmp_path, signals_for("api", "jvm", **{
        Signal.CPU_CORES_USED: 3.8, Signal.CPU_CORES_AVAILABLE: 4.0, Signal.REQUESTS_PER_SECOND: 40.0}))
    assert fire("PF-CPU004", ctx) == []


@pytest.mark.parametrize("lag, fires", [(0.08, True), (0.03, False)])
def test_cpu005_event_loop_lag(traces, tmp_path, lag, fires):
    steady(traces, "feed", "node", 60, 10, 50)
    ctx = one(traces, tmp_path, signals_for("feed", "node", **{Signal.EVENT_LOOP_LAG: lag}))
    assert bool(fire("PF-CPU005", ctx)) is fires


# --- unattributed wait ----------------------------------------------------------------------


@pytest.mark.parametrize("cores, fires", [(0.02, True), (0.2, False)])
def test_wait001_long_self_time_with_idle_cpu(traces, tmp_path, cores, fires):
    """2 req/s of 300 ms self time. 0.02 cores = 10 ms CPU per request (3% of self time): waiting.
    0.2 cores = 100 ms (33%): above max_cpu_coverage 0.3, not called waiting."""
    steady(traces, "billing", "python", 600, 0.5, 300)
    sig = signals_for("billing", "python", **{Signal.CPU_CORES_USED: cores, Signal.REQUESTS_PER_SECOND: 2.0})
    ctx = one(traces, tmp_path, sig)
    found = fire("PF-WAIT001", ctx)
    assert bool(found) is fires
    assert fire("PF-CPU001", ctx) == []
    if fires:
        (f,) = found
        assert f.category == "unknown" and "waiting" in f.message and "py-spy --idle" in f.remedy


def test_wait001_needs_cpu_measured(traces, tmp_path):
    steady(traces, "billing", "python", 60, 10, 300)
    assert fire("PF-WAIT001", one(traces, tmp_path, signals_for("billing", "python"))) == []


@pytest.mark.parametrize("cores, fires", [(0.05, True), (0.15, False)])
def test_wait001_bounds_gc_by_cpu_when_gc_is_not_exported(traces, tmp_path, cores, fires):
    """JVM with CPU but no GC metric, 10 req/s of 300 ms self time. GC is CPU work: at 0.05 cores
    GC is at most 5% of wall time, so the wait is real; at 0.15 cores GC could be 15% (> 10%)."""
    steady(traces, "billing", "jvm", 300, 1, 300)
    ctx = one(traces, tmp_path, signals_for("billing", "jvm", **{
        Signal.CPU_CORES_USED: cores, Signal.REQUESTS_PER_SECOND: 10.0}))
    found = fire("PF-WAIT001", ctx)
    assert bool(found) is fires
    if fires:
        assert "GC not exported" in found[0].message


# --- configuration and docs -----------------------------------------------------------------


def test_thresholds_are_configurable_per_service(traces, tmp_path):
    """75% utilization does not fire PF-CPU002 by default; an override for `api` lowers it to 70%."""
    steady(traces, "api", "jvm", 60, 10, 100)
    ctx = one(traces, tmp_path, signals_for("api", "jvm", **{
        Signal.CPU_CORES_USED: 3.0, Signal.CPU_CORES_AVAILABLE: 4.0, Signal.REQUESTS_PER_SECOND: 40.0}))
    assert "PF-CPU002" not in {f.rule for f in run_rules(ctx, Config())}
    cfg = Config(overrides=(Override("api", None, frozenset(), {"PF-CPU002": {"min_utilization": 0.7}}),))
    assert "PF-CPU002" in {f.rule for f in run_rules(ctx, cfg)}


def test_rule_docs_are_generated_and_current():
    from heuristics.docs import expected

    mine = {p: text for p, text in expected().items() if p.name.startswith(("PF-GC", "PF-CPU", "PF-WAIT"))}
    assert {p.stem for p in mine} == {"PF-GC001", "PF-GC002", "PF-GC003", "PF-CPU001", "PF-CPU002", "PF-CPU003",
                                      "PF-CPU004", "PF-CPU005", "PF-WAIT001"}
    for p, text in mine.items():
        assert p.exists() and p.read_text() == text, f"{p.name} stale: run python -m heuristics.docs"
        assert "## How it measures" in text and "## False positives" in text
