"""GC, CPU and wait classification and the rewrite verdict, end to end: a REAL Prometheus (series
backfilled with promtool) queried through collectors.prometheus, traces from the REAL OpenTelemetry
SDK placed inside the metric window, analyzed by analyzer.pipeline.

One TSDB holds every service, so Prometheus starts once. Each test's docstring names the
workload and the cause a human would name; the numbers it asserts are worked out from the
series written in `build` and the span timings in `record`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from analyzer.config import Config
from analyzer.pipeline import Inputs, analyze
from analyzer.renderers.markdown import to_markdown
from analyzer.report_schema import validate_report
from analyzer.model.signals import Signal, Signals
from collectors.otlp_traces import load_traces
from collectors.prometheus import collect
from tests.prom import OpenMetrics, Window, prometheus_with
from tests.test_heuristics_runtime import Traces
from tests.workloads.recording import write_proto_single

pytestmark = pytest.mark.prometheus

PHASE = 1200.0  # seconds: Node's GC alternates quiet / heavy phases of this length


@dataclass(frozen=True)
class Span:
    """Where the traced requests sit inside the metric window (unix seconds)."""

    start: float
    end: float


def piecewise_counter(om: OpenMetrics, name: str, labels: dict[str, str], rate: Callable[[float], float]) -> None:
    """A counter whose slope between two samples is `rate` at the earlier one."""
    times, total, points = om.window.times(), 0.0, []
    for i, t in enumerate(times):
        if i:
            total += rate(times[i - 1]) * (t - times[i - 1])
        points.append((t, total))
    om.add(name, labels, points)


def heavy(w: Window, t: float) -> bool:
    """Node's GC-heavy phases: every second PHASE from the window start."""
    return int((t - w.start) // PHASE) % 2 == 1


def build(om: OpenMetrics) -> None:
    w = om.window

    # ledger (JVM, Micrometer): 0.45 s/s of GC pauses, 0.6 cores, 10 req/s.
    L = {"job": "ledger"}
    om.histogram("jvm_gc_pause_seconds", {**L, "gc": "G1 Young Generation", "action": "end of minor GC"},
                 9.0, 0.45, {0.01: 0.0, 0.05: 0.5, 0.1: 1.0, 0.5: 1.0})
    om.gauge("jvm_gc_pause_seconds_max", {**L, "gc": "G1 Young Generation", "action": "end of minor GC"}, 0.12)
    om.counter("process_cpu_seconds_total", L, 0.6)
    om.gauge("system_cpu_count", L, 4)
    om.counter("http_server_requests_seconds_count", {**L, "uri": "/ledger/{id}"}, 10.0)

    # router (Go, runtime/metrics on): GC is 1.2 of 2.0 CPU-s/s, 25 req/s, 800 MB/s allocated.
    L = {"job": "router"}
    om.counter("go_cpu_classes_gc_total_cpu_seconds_total", L, 1.2)
    om.counter("go_cpu_classes_total_cpu_seconds_total", L, 2.0)
    om.summary("go_gc_duration_seconds", L, 0.004, 20.0, {"0": 0.0001, "0.5": 0.0002, "1": 0.0009})
    om.counter("go_memstats_alloc_bytes_total", L, 800e6)
    om.counter("process_cpu_seconds_total", L, 2.0)
    om.gauge("go_sched_gomaxprocs_threads", L, 8)
    om.counter("http_server_request_duration_seconds_count", L, 25.0)

    # feed (Node, prom-client): GC 0.10 s/s in quiet phases, 0.60 in heavy ones; CPU is GC + 0.05.
    L = {"job": "feed"}
    gc = lambda t: 0.60 if heavy(w, t) else 0.10  # noqa: E731
    piecewise_counter(om, "nodejs_gc_duration_seconds_sum", {**L, "kind": "major"}, gc)
    om.counter("nodejs_gc_duration_seconds_count", {**L, "kind": "major"}, 20.0)
    for le, share in ((0.01, 0.5), (0.1, 0.99), (1.0, 1.0)):
        om.counter("nodejs_gc_duration_seconds_bucket", {**L, "kind": "major", "le": repr(le)}, 20.0 * share)
    om.counter("nodejs_gc_duration_seconds_bucket", {**L, "kind": "major", "le": "+Inf"}, 20.0)
    piecewise_counter(om, "process_cpu_seconds_total", L, lambda t: gc(t) + 0.05)
    om.gauge("nodejs_eventloop_lag_p99_seconds", L, 0.09)
    om.counter("http_server_request_duration_seconds_count", L, 10.0)

    # thumbs (Python in a 4-core container): 3.8 cores at 40 req/s.
    L = {"job": "thumbs"}
    om.counter("process_cpu_seconds_total", L, 3.8)
    om.counter("python_gc_collections_total", {**L, "generation": "0"}, 2.0)
    om.gauge("container_spec_cpu_quota", {**L, "container": "thumbs"}, 400000)
    om.gauge("container_spec_cpu_period", {**L, "container": "thumbs"}, 100000)
    om.counter("http_server_request_duration_seconds_count", L, 40.0)

    # resize (Go, 1-core limit): 0.95 cores, 40% of CFS periods throttled, 10 req/s.
    L = {"job": "resize"}
    om.summary("go_gc_duration_seconds", L, 0.003, 5.0, {"0": 0.0001, "0.5": 0.0003, "1": 0.001})
    om.counter("process_cpu_seconds_total", L, 0.95)
    om.gauge("go_sched_gomaxprocs_threads", L, 8)
    om.gauge("container_spec_cpu_quota", {**L, "container": "resize"}, 100000)
    om.gauge("container_spec_cpu_period", {**L, "container": "resize"}, 100000)
    om.counter("container_cpu_cfs_periods_total", {**L, "container": "resize"}, 10.0)
    om.counter("container_cpu_cfs_throttled_periods_total", {**L, "container": "resize"}, 4.0)
    om.counter("http_server_request_duration_seconds_count", L, 10.0)

    # billing (Python): 0.01 cores; request rate only from the traces.
    L = {"job": "billing"}
    om.counter("process_cpu_seconds_total", L, 0.01)
    om.counter("python_gc_collections_total", {**L, "generation": "0"}, 0.5)
    om.gauge("python_info", {**L, "implementation": "CPython", "version": "3.12.3"}, 1)

    # orders (JVM): database-bound; 0.02 s/s of GC noise.
    L = {"job": "orders"}
    om.histogram("jvm_gc_pause_seconds", {**L, "gc": "G1 Young Generation", "action": "end of minor GC"},
                 2.0, 0.02, {0.01: 0.5, 0.05: 1.0, 0.1: 1.0, 0.5: 1.0})
    om.counter("process_cpu_seconds_total", L, 0.1)
    om.gauge("system_cpu_count", L, 4)
    om.counter("http_server_requests_seconds_count", {**L, "uri": "/orders"}, 10.0)

    # legacy (JVM): only memory and request metrics, no GC and no CPU.
    L = {"job": "legacy"}
    om.gauge("jvm_memory_used_bytes", {**L, "area": "heap"}, 2e8)
    om.counter("http_server_requests_seconds_count", {**L, "uri": "/legacy"}, 5.0)

    # batch (Go, no traces): 3.9 of 4 cores.
    L = {"job": "batch"}
    om.counter("process_cpu_seconds_total", L, 3.9)
    om.gauge("go_sched_gomaxprocs_threads", L, 4)
    om.gauge("go_goroutines", L, 12)


def record(traces: Traces, w: Window, s: Span) -> None:
    def steady(service: str, runtime: str, op: str, every: float, self_ms: float | Callable[[float], float],
               db_ms: float = 0.0) -> None:
        t = s.start
        while t < s.end:
            traces.request(service, runtime, op, t, self_ms(t) if callable(self_ms) else self_ms, db_ms)
            t += every

    steady("ledger", "jvm", "GET /ledger/{id}", 10, 60)
    steady("router", "go", "GET /route", 10, 80)
    steady("feed", "node", "GET /feed", 5, lambda t: 120.0 if heavy(w, t) else 40.0)
    steady("thumbs", "python", "GET /thumb/{id}", 10, 100)
    steady("resize", "go", "POST /resize", 10, 100)
    steady("billing", "python", "POST /charge", 2, 300)
    steady("orders", "jvm", "GET /orders", 10, 10, db_ms=90)
    steady("legacy", "jvm", "GET /legacy", 10, 200)


@dataclass
class Env:
    url: str  # the running Prometheus
    traces: Path  # the recorded OTLP file
    start: float  # metric window, unix seconds
    end: float


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A real Prometheus over the series of `build`, running for the whole module, and the traces."""
    w = Window.recent(hours=2.0, lead=600.0)
    om = OpenMetrics(w)
    build(om)
    traced = Span(w.start + 600 + PHASE, w.start + 600 + 5 * PHASE)  # 80 min: 4 phases, after the rate warm-up
    traces = Traces()
    record(traces, w, traced)
    path = write_proto_single(traces.exporter.get_finished_spans(), tmp_path_factory.mktemp("t") / "runtime.pb")
    traces.shutdown()
    with prometheus_with(om.text()) as prom:
        yield Env(prom.url, path, w.start + 600, w.end)


@pytest.fixture(scope="module")
def report(env: Env) -> dict:
    signals = collect(env.url, None, env.start, env.end)
    table = load_traces([str(env.traces)]).table
    rep = analyze(Inputs(table=table, signals=signals), Config())
    validate_report(rep)
    rep["_signals"] = signals
    return rep


def svc(report: dict, name: str) -> dict:
    return next(s for s in report["services"] if s["service"] == name)


def rules(service: dict) -> set[str]:
    return {f["rule"] for h in service["hotspots"] for f in h["findings"]}


def test_collector_found_every_service(report):
    signals: Signals = report["_signals"]
    assert set(signals.services) >= {"ledger", "router", "feed", "thumbs", "resize", "billing", "orders", "legacy", "batch"}
    assert signals.services["router"].runtime == "go" and signals.services["feed"].runtime == "node"


def test_jvm_gc_thrashing_is_gc_pause_and_recommended(report):
    """ledger, JVM: G1 pauses take 0.45 s of every second; requests are 60 ms of in-process time.
    A human would say: GC thrashing. Per request at 10 req/s: GC 45 ms, CPU outside GC
    (0.6-0.45)/10 = 15 ms; together the 60 ms of self time: GC explains 75%, CPU work 25%."""
    s = svc(report, "ledger")
    (h,) = s["hotspots"]
    assert h["category"] == "gc_pause" and h["share"] == pytest.approx(0.75, abs=0.01)
    assert h["category_shares"]["cpu_bound"] == pytest.approx(0.25, abs=0.01)
    assert {"PF-GC001", "PF-GC002"} <= rules(s)  # GC002: the 120 ms max pause is 2x the 60 ms p99
    gc = next(f for f in h["findings"] if f["rule"] == "PF-GC001")
    assert "jvm_gc_pause_seconds_sum" in gc["evidence"][0]["source"]
    assert s["verdict"]["rust_rewrite"] == "recommended" and s["verdict"]["cause"] == "gc_pause"
    c = s["rewrite_ceiling"]
    # Per request: GC 45 ms removed, CPU 15 ms halved: 52.5 ms of 60 = 87.5%.
    assert c["p50_ms"] == pytest.approx(52.5, abs=0.5) and c["p50_pct"] == pytest.approx(87.5, abs=1)


def test_go_allocation_heavy_gc_is_gc_pause(report):
    """router, Go: GC burns 1.2 of 2.0 CPU-s/s (60%) at 25 req/s = 80 ms CPU per 80 ms request.
    A human would say: allocation-heavy Go code, the concurrent GC eats the CPU."""
    s = svc(report, "router")
    (h,) = s["hotspots"]
    assert h["category"] == "gc_pause"
    assert h["category_shares"]["gc_pause"] == pytest.approx(0.6, abs=0.01)
    assert h["category_shares"]["cpu_bound"] == pytest.approx(0.4, abs=0.01)
    gc = next(f for f in h["findings"] if f["rule"] == "PF-GC001")
    ev = {e["signal"]: e for e in gc["evidence"]}
    assert "go_cpu_classes_gc_total_cpu_seconds_total" in ev["gc_cpu_seconds_per_second"]["source"]
    assert ev[Signal.ALLOC_BYTES_PER_SECOND]["value"] == pytest.approx(800e6, rel=0.01)
    assert s["verdict"]["rust_rewrite"] == "recommended"
    assert s["rewrite_ceiling"]["cpu_cost_pct"] == pytest.approx(80.0, abs=0.5)  # 60% GC + 40% x (1 - 1/2)


def test_node_gc_drives_latency_and_the_tail(report):
    """feed, Node: GC 0.10 s/s in quiet 20-minute phases, 0.60 in heavy ones; requests 40 ms then
    120 ms. A human would say: major GCs block the event loop and make the service slow in waves."""
    s = svc(report, "feed")
    (h,) = s["hotspots"]
    assert h["category"] == "gc_pause" and h["share"] >= 0.3
    assert {"PF-GC001", "PF-GC002", "PF-CPU005"} <= rules(s)
    tail = next(f for f in h["findings"] if f["rule"] == "PF-GC002")
    assert "latency follows GC" in tail["message"]
    assert s["verdict"]["rust_rewrite"] == "recommended"
    assert "nodejs_gc_duration_seconds_sum" in s["verdict"]["reason"]
    # The ceiling subtracts GC at each request's own time; rate()'s 5m window spreads each phase
    # change over 5 minutes, so some 120 ms requests see a lower rate and bound the p99 cut.
    c = s["rewrite_ceiling"]
    assert c["basis"]["gc_share"] == pytest.approx(0.445, abs=0.02) and c["p99_pct"] > 10


def test_cpu_saturated_container_is_cpu_bound(report):
    """thumbs, Python in 4 cores: 3.8 cores at 40 req/s = 95 ms CPU per 100 ms request.
    A human would say: thumbnailing is CPU-bound and the container is saturated."""
    s = svc(report, "thumbs")
    (h,) = s["hotspots"]
    assert h["category"] == "cpu_bound" and h["share"] == pytest.approx(0.95, abs=0.01)
    assert {"PF-CPU001", "PF-CPU002"} <= rules(s)
    assert "PF-GC003" in rules(s)  # CPython: GC pauses cannot be measured, said so
    assert s["verdict"]["rust_rewrite"] == "recommended" and s["verdict"]["cause"] == "cpu_bound"


def test_throttled_container_is_cpu_bound(report):
    """resize, Go with a 1-core limit: 0.95 cores, 40% of CFS periods throttled, 95 ms CPU per
    100 ms request. A human would say: CPU-bound, and hitting its CPU limit."""
    s = svc(report, "resize")
    (h,) = s["hotspots"]
    assert h["category"] == "cpu_bound"
    f = next(f for f in h["findings"] if f["rule"] == "PF-CPU003")
    assert "40% of CFS periods" in f["message"]
    assert s["verdict"]["rust_rewrite"] == "recommended"


def test_idle_process_with_long_self_time_is_waiting(report):
    """billing, Python: 300 ms of self time per request every 2 s, but 0.01 cores (20 ms CPU per
    request). A human would say: it sleeps or waits on a lock; a rewrite changes nothing."""
    s = svc(report, "billing")
    (h,) = s["hotspots"]
    assert h["category"] == "unknown"
    assert "PF-WAIT001" in rules(s) and "PF-CPU001" not in rules(s)
    w = next(f for f in h["findings"] if f["rule"] == "PF-WAIT001")
    rps = next(e for e in w["evidence"] if e["signal"] == Signal.REQUESTS_PER_SECOND)
    assert rps["source"].startswith("traces:") and rps["value"] == pytest.approx(0.5, rel=0.01)
    assert s["verdict"]["rust_rewrite"] == "not_recommended" and s["verdict"]["cause"] == "unknown"


def test_database_bound_service_with_gc_noise_is_not_recommended(report):
    """orders, JVM: 90 ms of every 100 ms request is a SQL query; GC is 0.02 s/s.
    A human would say: the query is slow; GC is noise."""
    s = svc(report, "orders")
    (h,) = s["hotspots"]
    assert h["category"] == "database"
    assert not rules(s) & {"PF-GC001", "PF-GC002"}  # 2% GC: noise, even with a 49 ms pause p99
    assert s["verdict"]["rust_rewrite"] == "not_recommended" and s["verdict"]["cause"] == "database"
    assert s["rewrite_ceiling"]["mean_pct"] <= 6.0  # GC 2 ms + CPU (0.1-0.02)/10 = 8 ms halved: <= 6 of 100


def test_missing_runtime_metrics_is_insufficient_evidence(report):
    """legacy, JVM: 200 ms of self time, but only memory and request metrics are exported."""
    s = svc(report, "legacy")
    v = s["verdict"]
    assert v["rust_rewrite"] == "insufficient_evidence"
    assert "gc_seconds_per_second" in v["reason"] and "cpu_cores_used" in v["reason"]
    assert "jvm_gc_pause_seconds" in v["reason"]  # the collector's enable text for the JVM


def test_metrics_only_service_says_what_it_cannot_relate(report):
    """batch, Go, no traces: 3.9 of 4 cores. Saturated, but there is no request latency to relate."""
    s = svc(report, "batch")
    assert s["hotspots"] == []
    assert s["verdict"]["rust_rewrite"] == "insufficient_evidence" and s["verdict"]["cause"] == "cpu_bound"
    assert "seen only in metrics" in s["verdict"]["reason"]
    assert s["rewrite_ceiling"]["cpu_cost_pct"] == pytest.approx(50.0)


def test_markdown_leads_with_verdict_and_ceiling(report):
    md = to_markdown({k: v for k, v in report.items() if not k.startswith("_")})
    ledger = md[md.index("## ledger"):]
    assert ledger.splitlines()[2].startswith("**Rust rewrite: RECOMMENDED**")
    assert "Rewrite ceiling:" in ledger.split("##")[1]


def test_cli_analyze_with_prometheus_reaches_the_same_verdicts(env, report, tmp_path):
    """`profile-first analyze --traces FILE --prometheus URL`: the CLI queries Prometheus over the
    traces' own window and reaches the verdict of every traced service found above."""
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--traces", str(env.traces),
                           "--prometheus", env.url, "--output", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(out.read_text())
    validate_report(cli)
    got = {s["service"]: (s["verdict"]["rust_rewrite"], s["verdict"]["cause"]) for s in cli["services"]}
    want = {s["service"]: (s["verdict"]["rust_rewrite"], s["verdict"]["cause"]) for s in report["services"]
            if s["hotspots"]}
    assert got == want
