"""The Prometheus collector against a real Prometheus.

Exact scenarios are backfilled with promtool, so each expected value is computed here from the
numbers written (a counter's slope is the rate the collector must return). One live test has
Prometheus scrape a real process burning CPU. Faults that cannot be caused for real on demand
(5xx, slow answers, refused credentials) come from a loopback proxy in front of the real server.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from analyzer.model.signals import Signal, Signals
from collectors.prometheus import PromConfig, PrometheusRejected, PrometheusUnreachable, collect
from tests.prom import FaultProxy, OpenMetrics, Window, free_port, prometheus_with, running

pytestmark = pytest.mark.prometheus

CART_SELECTOR = '{namespace="shop", pod=~"cart-.*"}'
FLEET = [f"fleet-{i:02d}" for i in range(50)]

# Node prom-client buckets and the share of observations at or below each bound, per kind.
NODE_BUCKETS = {"minor": {0.001: 0.5, 0.01: 1.0, 0.1: 1.0, 1: 1.0, 2: 1.0, 5: 1.0},
                "major": {0.001: 0.0, 0.01: 0.5, 0.1: 1.0, 1: 1.0, 2: 1.0, 5: 1.0}}
NODE_RATES = {"minor": (10.0, 0.02), "major": (0.2, 0.01)}  # (count/s, seconds/s)
JVM_BUCKETS = {0.01: 0.0, 0.05: 0.0, 0.1: 1.0, 0.5: 1.0}
OTEL_JVM_BUCKETS = {0.01: 0.2, 0.1: 1.0, 1: 1.0, 10: 1.0}


def build(om: OpenMetrics) -> None:
    """Every scenario in one TSDB: one Prometheus start for all tests."""
    # GC-heavy Go service, two instances, with runtime/metrics CPU classes turned on.
    for inst, cpu, gc_cpu, all_cpu, p50, pmax in (("a:9100", 1.0, 0.5, 1.1, 0.004, 0.03),
                                                  ("b:9100", 0.8, 0.4, 0.9, 0.006, 0.05)):
        L = {"job": "checkout-go", "instance": inst}
        om.summary("go_gc_duration_seconds", L, 0.02, 5.0, {"0": 0.0005, "0.5": p50, "1": pmax})
        om.counter("go_cpu_classes_gc_total_cpu_seconds_total", L, gc_cpu)
        om.counter("go_cpu_classes_total_cpu_seconds_total", L, all_cpu)
        om.counter("process_cpu_seconds_total", L, cpu)
        om.gauge("go_sched_gomaxprocs_threads", L, 2)
        om.counter("go_memstats_alloc_bytes_total", L, 150e6)
        om.counter("http_server_request_duration_seconds_count", {**L, "http_route": "/pay"}, 75.0)
        om.gauge("go_goroutines", L, 120)

    # GC-heavy JVM (Micrometer): two collectors, percentile histogram on.
    L = {"job": "orders-jvm", "instance": "o:8080"}
    for gc, action, count, total, mx in (("G1 Young Generation", "end of minor GC", 2.0, 0.15, 0.09),
                                         ("G1 Old Generation", "end of major GC", 0.4, 0.03, 0.098)):
        G = {**L, "gc": gc, "action": action, "cause": "G1 Evacuation Pause"}
        om.histogram("jvm_gc_pause_seconds", G, count, total, JVM_BUCKETS)
        om.gauge("jvm_gc_pause_seconds_max", G, mx)
    om.gauge("process_cpu_usage", L, 0.5)
    om.gauge("system_cpu_count", L, 4)
    om.counter("jvm_gc_memory_allocated_bytes_total", L, 1e9)
    om.counter("http_server_requests_seconds_count", {**L, "uri": "/orders"}, 50.0)
    om.counter("http_server_requests_seconds_count", {**L, "uri": "/orders/{id}"}, 30.0)

    # Node.js with prom-client.
    L = {"job": "web-node", "instance": "n:3000"}
    for kind, (count, total) in NODE_RATES.items():
        om.histogram("nodejs_gc_duration_seconds", {**L, "kind": kind}, count, total, NODE_BUCKETS[kind])
    om.gauge("nodejs_eventloop_lag_p99_seconds", L, 0.045)
    om.gauge("nodejs_eventloop_lag_seconds", L, 0.01)
    om.counter("process_cpu_seconds_total", L, 0.7)
    om.counter("http_request_duration_seconds_count", L, 120.0)

    # CPU-saturated Go batch process, default client_golang metrics only.
    L = {"job": "batch-cpu", "instance": "c:9100"}
    om.counter("process_cpu_seconds_total", L, 3.92)
    om.gauge("go_sched_gomaxprocs_threads", L, 4)
    om.summary("go_gc_duration_seconds", L, 0.002, 0.5, {"0.5": 0.0008, "1": 0.002})

    # Throttled container seen only through cAdvisor and kube-state-metrics (mapped by selector).
    K = {"job": "kubelet", "namespace": "shop", "pod": "cart-7d9"}
    om.counter("container_cpu_usage_seconds_total", {**K, "container": "cart", "cpu": "total"}, 0.98)
    om.counter("container_cpu_usage_seconds_total", {**K, "container": "cart", "cpu": "cpu00"}, 0.5)  # per-CPU
    om.counter("container_cpu_usage_seconds_total", {**K, "container": "POD", "cpu": "total"}, 0.001)  # sandbox
    om.counter("container_cpu_usage_seconds_total", {**K, "container": "", "cpu": "total"}, 0.99)  # pod cgroup
    om.gauge("container_spec_cpu_quota", {**K, "container": "cart"}, 100000)
    om.gauge("container_spec_cpu_period", {**K, "container": "cart"}, 100000)
    om.counter("container_cpu_cfs_periods_total", {**K, "container": "cart"}, 10.0)
    om.counter("container_cpu_cfs_throttled_periods_total", {**K, "container": "cart"}, 4.0)
    om.gauge("kube_pod_container_resource_limits", {"job": "kube-state-metrics", "namespace": "shop",
                                                    "pod": "cart-7d9", "container": "cart", "resource": "cpu",
                                                    "unit": "core"}, 1)
    # Another namespace's cart must not leak in.
    om.counter("container_cpu_usage_seconds_total", {**K, "namespace": "other", "container": "cart", "cpu": "total"},
               5.0)

    # Idle native process.
    om.counter("process_cpu_seconds_total", {"job": "idle-daemon", "instance": "i:9"}, 0.002)

    # DB-dominated JVM with small GC noise.
    L = {"job": "inventory-db", "instance": "d:8080"}
    om.summary("jvm_gc_pause_seconds", {**L, "gc": "G1 Young Generation", "action": "end of minor GC"}, 0.003, 0.5)
    om.gauge("jvm_gc_pause_seconds_max", {**L, "gc": "G1 Young Generation", "action": "end of minor GC"}, 0.012)
    om.summary("hikaricp_connections_acquire_seconds", {**L, "pool": "main"}, 0.5, 10.0)
    om.gauge("hikaricp_connections_pending", {**L, "pool": "main"}, 2)
    om.gauge("hikaricp_connections_pending", {**L, "pool": "reports"}, 1)
    om.counter("http_server_requests_seconds_count", {**L, "uri": "/stock"}, 20.0)
    om.counter("cache_gets_total", {**L, "cache": "items", "result": "hit"}, 3.0)
    om.counter("cache_gets_total", {**L, "cache": "items", "result": "miss"}, 7.0)
    om.gauge("process_cpu_usage", L, 0.05)
    om.gauge("system_cpu_count", L, 8)

    # Python (prometheus_client): GC counts, no durations.
    L = {"job": "reports-py", "instance": "p:8000"}
    for gen, r in (("0", 2.0), ("1", 0.2), ("2", 0.02)):
        om.counter("python_gc_collections_total", {**L, "generation": gen}, r)
    om.gauge("python_info", {**L, "implementation": "CPython", "version": "3.12.1"}, 1)
    om.counter("process_cpu_seconds_total", L, 0.3)

    # OTel JVM through a Collector: job names the collector, service_name the service.
    L = {"job": "otel-collector", "instance": "col:8889", "service_name": "ledger"}
    om.histogram("jvm_gc_duration_seconds", {**L, "jvm_gc_name": "G1 Young Generation"}, 1.0, 0.05, OTEL_JVM_BUCKETS)
    om.counter("jvm_cpu_time_seconds_total", L, 0.6)
    om.gauge("jvm_cpu_count", L, 2)
    om.counter("http_server_request_duration_seconds_count", L, 40.0)

    # A fleet of 50 identical-runtime Go services with distinct numbers.
    for i, name in enumerate(FLEET):
        L = {"job": name, "instance": f"f{i}:9100"}
        om.summary("go_gc_duration_seconds", L, 0.001 * (i + 1), 1.0)
        om.counter("process_cpu_seconds_total", L, 0.01 * (i + 1))


def hist_quantile(q: float, bucket_rates: dict[float, float]) -> float:
    """Prometheus' histogram_quantile on cumulative bucket rates (linear inside a bucket)."""
    bounds = sorted(bucket_rates)
    total = bucket_rates[math.inf]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        if bucket_rates[b] >= rank:
            if b == math.inf:
                return prev_bound
            return prev_bound + (b - prev_bound) * (rank - prev_count) / (bucket_rates[b] - prev_count)
        prev_bound, prev_count = b, bucket_rates[b]
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def window() -> Window:
    return Window.recent(hours=2.0, lead=600.0)


@pytest.fixture(scope="module")
def om_text(window: Window) -> str:
    om = OpenMetrics(window)
    build(om)
    return om.text()


@pytest.fixture(scope="module")
def prom(om_text: str):
    with prometheus_with(om_text) as server:
        yield server


@pytest.fixture(scope="module")
def span(window: Window) -> tuple[float, float]:
    return window.start + 600.0, window.end  # the part where every rate() has a full range


def config(**kw) -> PromConfig:
    base = {"selectors": {"cart": CART_SELECTOR}, "timeout": 10, "retries": 1, "backoff": 0.01}
    return PromConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def everything(prom, span) -> Signals:
    return collect(prom.url, None, *span, config())


def values(signals: Signals, service: str, signal: str) -> np.ndarray:
    ss = signals.services[service]
    assert ss.has(signal), f"{service}: {signal} missing: {ss.missing.get(signal)}"
    s = ss.series[signal]
    assert s.t.shape == s.v.shape and s.t.size > 0
    assert np.all(np.diff(s.t) > 0)
    return s.v


def approx(signals: Signals, service: str, signal: str, expected: float, rel: float = 1e-6) -> None:
    v = values(signals, service, signal)
    assert np.allclose(v, expected, rtol=rel, atol=1e-12), (service, signal, v[:5], expected)


# --- scenarios ----------------------------------------------------------------------------------

def test_discovers_services_and_runtimes(everything: Signals) -> None:
    rt = {name: ss.runtime for name, ss in everything.services.items()}
    expected = {"checkout-go": "go", "orders-jvm": "jvm", "web-node": "node", "batch-cpu": "go",
                "cart": "unknown", "idle-daemon": "native", "inventory-db": "jvm", "reports-py": "python",
                "ledger": "jvm"}
    assert {k: rt[k] for k in expected} == expected
    assert set(rt) == set(expected) | set(FLEET)  # exporters' jobs (kubelet, ksm, otel-collector) are not services
    assert everything.failures == []


def test_gc_heavy_go(everything: Signals) -> None:
    s = "checkout-go"
    approx(everything, s, Signal.GC_SECONDS_PER_SECOND, 0.5 + 0.4)  # GC CPU classes preferred over STW pauses
    assert "go_cpu_classes_gc_total_cpu_seconds_total" in everything.services[s].series[Signal.GC_SECONDS_PER_SECOND].source
    approx(everything, s, Signal.GC_CPU_FRACTION, (0.5 + 0.4) / (1.1 + 0.9))
    approx(everything, s, Signal.GC_PAUSE_P50, 0.006)  # worst instance
    approx(everything, s, Signal.GC_PAUSE_MAX, 0.05)
    approx(everything, s, Signal.GC_CYCLES_PER_SECOND, 10.0)
    approx(everything, s, Signal.ALLOC_BYTES_PER_SECOND, 300e6)
    approx(everything, s, Signal.CPU_CORES_USED, 1.8)
    approx(everything, s, Signal.CPU_CORES_AVAILABLE, 4.0)
    approx(everything, s, Signal.REQUESTS_PER_SECOND, 150.0)
    miss = everything.services[s].missing[Signal.GC_PAUSE_P99]
    assert "go_gc_pauses_seconds" in miss.enable


def test_gc_heavy_jvm_micrometer(everything: Signals) -> None:
    s = "orders-jvm"
    approx(everything, s, Signal.GC_SECONDS_PER_SECOND, 0.15 + 0.03)
    approx(everything, s, Signal.GC_CYCLES_PER_SECOND, 2.4)
    rates = {0.01: 0.0, 0.05: 0.0, 0.1: 2.4, 0.5: 2.4, math.inf: 2.4}
    approx(everything, s, Signal.GC_PAUSE_P99, hist_quantile(0.99, rates))
    approx(everything, s, Signal.GC_PAUSE_P50, hist_quantile(0.5, rates))
    approx(everything, s, Signal.GC_PAUSE_MAX, 0.098)
    approx(everything, s, Signal.CPU_CORES_USED, 0.5 * 4)
    approx(everything, s, Signal.CPU_CORES_AVAILABLE, 4.0)
    approx(everything, s, Signal.ALLOC_BYTES_PER_SECOND, 1e9)
    approx(everything, s, Signal.REQUESTS_PER_SECOND, 80.0)


def test_node_prom_client(everything: Signals) -> None:
    s = "web-node"
    approx(everything, s, Signal.GC_SECONDS_PER_SECOND, 0.02 + 0.01)
    approx(everything, s, Signal.GC_CYCLES_PER_SECOND, 10.2)
    rates: dict[float, float] = {}
    for kind, (count, _) in NODE_RATES.items():
        for le, share in NODE_BUCKETS[kind].items():
            rates[float(le)] = rates.get(float(le), 0.0) + count * share
    rates[math.inf] = sum(c for c, _ in NODE_RATES.values())
    approx(everything, s, Signal.GC_PAUSE_P99, hist_quantile(0.99, rates))
    approx(everything, s, Signal.GC_PAUSE_P50, hist_quantile(0.5, rates))
    approx(everything, s, Signal.EVENT_LOOP_LAG, 0.045)  # p99 gauge preferred over the point sample
    approx(everything, s, Signal.CPU_CORES_USED, 0.7)
    approx(everything, s, Signal.REQUESTS_PER_SECOND, 120.0)


def test_cpu_saturated_process(everything: Signals) -> None:
    s = "batch-cpu"
    approx(everything, s, Signal.CPU_CORES_USED, 3.92)
    approx(everything, s, Signal.CPU_CORES_AVAILABLE, 4.0)
    approx(everything, s, Signal.GC_SECONDS_PER_SECOND, 0.002)  # STW pauses: no CPU classes exposed
    assert "go_gc_duration_seconds_sum" in everything.services[s].series[Signal.GC_SECONDS_PER_SECOND].source
    assert Signal.GC_CPU_FRACTION in everything.services[s].missing


def test_throttled_container_by_selector(everything: Signals) -> None:
    s = "cart"
    approx(everything, s, Signal.CPU_CORES_USED, 0.98)  # not POD, not the pod cgroup, not per-CPU, not ns=other
    approx(everything, s, Signal.CPU_CORES_AVAILABLE, 1.0)
    approx(everything, s, Signal.CPU_THROTTLED_FRACTION, 0.4)
    src = everything.services[s].series[Signal.CPU_THROTTLED_FRACTION].source
    assert 'namespace="shop"' in src and 'pod=~"cart-.*"' in src


def test_idle_process(everything: Signals) -> None:
    ss = everything.services["idle-daemon"]
    approx(everything, "idle-daemon", Signal.CPU_CORES_USED, 0.002)
    assert ss.missing[Signal.CPU_CORES_AVAILABLE].reason.startswith("not exposed")
    assert ss.missing[Signal.GC_SECONDS_PER_SECOND].enable


def test_db_dominated_service(everything: Signals) -> None:
    s = "inventory-db"
    approx(everything, s, Signal.POOL_WAIT_SECONDS, 0.5 / 10.0)
    approx(everything, s, Signal.POOL_PENDING, 3.0)
    approx(everything, s, Signal.CACHE_HIT_RATIO, 3.0 / 10.0)
    approx(everything, s, Signal.GC_SECONDS_PER_SECOND, 0.003)
    approx(everything, s, Signal.GC_PAUSE_MAX, 0.012)
    approx(everything, s, Signal.REQUESTS_PER_SECOND, 20.0)
    approx(everything, s, Signal.CPU_CORES_USED, 0.05 * 8)


def test_python_gc_pause_is_missing_with_reason(everything: Signals) -> None:
    ss = everything.services["reports-py"]
    for sig in (Signal.GC_SECONDS_PER_SECOND, Signal.GC_PAUSE_P99):
        m = ss.missing[sig]
        assert "CPython exposes no GC-duration metric" in m.reason
        assert "gc.callbacks" in m.enable
    approx(everything, "reports-py", Signal.GC_CYCLES_PER_SECOND, 2.22)
    approx(everything, "reports-py", Signal.CPU_CORES_USED, 0.3)


def test_service_name_wins_over_job(everything: Signals) -> None:
    s = "ledger"
    approx(everything, s, Signal.GC_SECONDS_PER_SECOND, 0.05)
    approx(everything, s, Signal.GC_PAUSE_P99,
           hist_quantile(0.99, {0.01: 0.2, 0.1: 1.0, 1: 1.0, 10: 1.0, math.inf: 1.0}))
    approx(everything, s, Signal.CPU_CORES_USED, 0.6)
    approx(everything, s, Signal.CPU_CORES_AVAILABLE, 2.0)
    approx(everything, s, Signal.REQUESTS_PER_SECOND, 40.0)


def test_grid_and_sources(everything: Signals, span) -> None:
    s = everything.services["batch-cpu"].series[Signal.CPU_CORES_USED]
    step = 15.0
    assert s.t[0] == math.ceil(span[0] / step) * step and s.t[-1] == math.floor(span[1] / step) * step
    assert s.t.size == int((s.t[-1] - s.t[0]) / step) + 1
    assert s.source.startswith("(sum by (pf_service)") and s.unit == "cores"


# --- query count, splitting, prefix ----------------------------------------------------------------

def test_query_count_does_not_grow_with_services(prom, span) -> None:
    few = collect(prom.url, FLEET[:5], *span, config())
    many = collect(prom.url, FLEET, *span, config())
    assert few.queries == many.queries
    assert many.queries <= 2 + 6  # discovery, scrape interval + gc s/s, cycles, p50, max, cpu used, cpu available
    for i, name in enumerate(FLEET):
        approx(many, name, Signal.GC_SECONDS_PER_SECOND, 0.001 * (i + 1))
        approx(many, name, Signal.CPU_CORES_USED, 0.01 * (i + 1))


def test_window_split_for_point_limit(prom, span) -> None:
    calls: list[tuple[int, int, str]] = []
    sig = collect(prom.url, ["batch-cpu"], *span, config(step=0.5), progress=lambda d, t, l: calls.append((d, t, l)))
    ss = sig.services["batch-cpu"]
    n = int((span[1] - span[0]) / 0.5) + 1
    assert n > 11_000
    sources = {s.source for s in ss.series.values()}
    assert sig.queries == 2 + 2 * len(sources)  # discovery, scrape interval + two chunks per query
    cpu = ss.series[Signal.CPU_CORES_USED]
    assert cpu.t.size == n and np.allclose(np.diff(cpu.t), 0.5)
    assert np.allclose(cpu.v, 3.92, rtol=1e-6)
    assert calls[-1][0] == calls[-1][1] == sig.queries


def test_seven_day_window_at_fine_step_is_split_and_stitched() -> None:
    week = Window.recent(hours=7 * 24, lead=600.0, interval=60.0)
    om = OpenMetrics(week)
    om.counter("process_cpu_seconds_total", {"job": "weekly"}, 0.75)
    om.gauge("go_sched_gomaxprocs_threads", {"job": "weekly"}, 8)
    with prometheus_with(om.text()) as server:
        t0, t1 = week.start + 600.0, week.end
        sig = collect(server.url, ["weekly"], t0, t1, config(step=15))
    n = int((t1 - t0) / 15) + 1
    per_query = math.ceil(n / 11_000)
    assert (n, per_query) == (40_321, 4)
    assert sig.queries == 2 + 2 * per_query  # discovery, scrape interval + (cpu used, cpu available) x 4 chunks
    for name, value in ((Signal.CPU_CORES_USED, 0.75), (Signal.CPU_CORES_AVAILABLE, 8.0)):
        s = sig.services["weekly"].series[name]
        assert s.t.size == n and np.all(np.diff(s.t) == 15)
        assert np.allclose(s.v, value, rtol=1e-6)


def test_path_prefix(om_text: str, span) -> None:
    with prometheus_with(om_text, route_prefix="/prometheus") as server:
        assert server.url.endswith("/prometheus")
        sig = collect(server.url, ["batch-cpu"], *span, config())
        approx(sig, "batch-cpu", Signal.CPU_CORES_USED, 3.92)
        with pytest.raises(PrometheusRejected, match=r"127\.0\.0\.1"):
            collect(server.url.removesuffix("/prometheus"), ["batch-cpu"], *span, config(retries=0))


def test_tls_custom_ca_and_opt_in_skip_verify(om_text: str, span) -> None:
    with prometheus_with(om_text, tls=True) as server:
        assert server.url.startswith("https://") and server.tls is not None
        sig = collect(server.url, ["batch-cpu"], *span, config(ca_bundle=str(server.tls.ca)))
        approx(sig, "batch-cpu", Signal.CPU_CORES_USED, 3.92)
        with pytest.raises(PrometheusUnreachable, match="TLS error"):
            collect(server.url, ["batch-cpu"], *span, config(retries=0))  # system CAs do not know ours
        with pytest.warns(Warning):  # urllib3 warns on every unverified request; that is the point
            sig = collect(server.url, ["batch-cpu"], *span, config(insecure_skip_verify=True))
        approx(sig, "batch-cpu", Signal.CPU_CORES_USED, 3.92)


# --- faults ----------------------------------------------------------------------------------------

def test_unreachable_raises_one_line_naming_url(span) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PrometheusUnreachable) as err:
        collect(url, ["x"], *span, config(retries=1))
    assert url in str(err.value) and "\n" not in str(err.value)


def test_slow_query_becomes_missing_evidence(prom, span) -> None:
    with FaultProxy(prom.url) as proxy:
        proxy.delay_if, proxy.delay = "rate(process_cpu_seconds_total", 3.0
        t = time.monotonic()
        sig = collect(proxy.url, ["batch-cpu"], *span, config(timeout=1, retries=0))
        assert time.monotonic() - t < 10
    ss = sig.services["batch-cpu"]
    m = ss.missing[Signal.CPU_CORES_USED]
    assert m.reason.startswith("query failed") and "timed out" in m.reason.lower()
    assert "process_cpu_seconds_total" in m.query
    assert [f.signal for f in sig.failures] == [Signal.CPU_CORES_USED]
    approx(sig, "batch-cpu", Signal.GC_SECONDS_PER_SECOND, 0.002)


def test_5xx_is_retried(prom, span) -> None:
    with FaultProxy(prom.url) as proxy:
        proxy.fail_first = 2
        sig = collect(proxy.url, ["batch-cpu"], *span, config(retries=3))
        assert len(proxy.seen) == sig.queries + 2
    assert sig.failures == []
    approx(sig, "batch-cpu", Signal.CPU_CORES_USED, 3.92)


def test_persistent_5xx_on_one_query(prom, span) -> None:
    with FaultProxy(prom.url) as proxy:
        proxy.fail_if = "rate(process_cpu_seconds_total"
        sig = collect(proxy.url, ["batch-cpu"], *span, config(retries=2))
    m = sig.services["batch-cpu"].missing[Signal.CPU_CORES_USED]
    assert "HTTP 503" in m.reason and len(sig.failures) == 1
    approx(sig, "batch-cpu", Signal.CPU_CORES_AVAILABLE, 4.0)


def test_bad_promql_is_reported(prom, span) -> None:
    sig = collect(prom.url, ["checkout-go"], *span, config(rate_window="5 minutes"))
    ss = sig.services["checkout-go"]
    assert sig.failures and all("HTTP 400" in f.reason and "bad_data" in f.reason for f in sig.failures)
    assert all("[5 minutes]" in f.query for f in sig.failures)
    assert ss.missing[Signal.GC_SECONDS_PER_SECOND].reason.startswith("query failed")
    approx(sig, "checkout-go", Signal.CPU_CORES_AVAILABLE, 4.0)  # gauges need no rate(): unaffected
    approx(sig, "checkout-go", Signal.GC_PAUSE_MAX, 0.05)


def test_credentials_and_headers_from_env(prom, span, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROFILE_FIRST_PROM_TOKEN", "s3cret")
    with FaultProxy(prom.url) as proxy:
        collect(proxy.url, ["batch-cpu"], *span, config(headers={"X-Scope-OrgID": "tenant-1"}))
        assert all(h.get("Authorization") == "Bearer s3cret" and h.get("X-Scope-OrgID") == "tenant-1"
                   for _, h in proxy.seen)
    monkeypatch.delenv("PROFILE_FIRST_PROM_TOKEN")
    monkeypatch.setenv("PROFILE_FIRST_PROM_USER", "sre")
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    with FaultProxy(prom.url) as proxy:
        collect(proxy.url, ["batch-cpu"], *span, config(password_file=str(pw)))
        assert all(h.get("Authorization") == "Basic c3JlOmh1bnRlcjI=" for _, h in proxy.seen)


def test_refused_credentials_raise(prom, span) -> None:
    with FaultProxy(prom.url) as proxy:
        proxy.fail_if, proxy.fail_status = "query", 401
        with pytest.raises(PrometheusRejected, match="HTTP 401") as err:
            collect(proxy.url, ["batch-cpu"], *span, config())
    assert proxy.url in str(err.value)


# --- live scrape -----------------------------------------------------------------------------------

BURNER = textwrap.dedent("""
    import json, sys, time
    from prometheus_client import start_http_server
    start_http_server(int(sys.argv[1]), addr="127.0.0.1")
    print("ready", flush=True)
    time.sleep(float(sys.argv[3]))  # let Prometheus take a few idle scrapes first
    t0, c0 = time.time(), time.process_time()
    while time.time() - t0 < float(sys.argv[2]):
        sum(i * i for i in range(1000))
    t1, c1 = time.time(), time.process_time()
    print(json.dumps({"t0": t0, "t1": t1, "cores": (c1 - c0) / (t1 - t0)}), flush=True)
    time.sleep(3)  # keep serving so the last samples get scraped
""")


def test_live_scrape_sees_real_cpu_burn(tmp_path: Path) -> None:
    port = free_port()
    script = tmp_path / "burner.py"
    script.write_text(BURNER)
    scrape = (f"  - job_name: burner\n    scrape_interval: 1s\n"
              f"    static_configs:\n      - targets: ['127.0.0.1:{port}']\n")
    (tmp_path / "data").mkdir()
    with running(tmp_path / "data", scrape_configs=scrape, scrape_interval="1s") as server:
        child = subprocess.Popen([sys.executable, str(script), str(port), "15", "3"], stdout=subprocess.PIPE,
                                 text=True)
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            burn = json.loads(child.stdout.readline())
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
        time.sleep(1.5)
        sig = collect(server.url, None, burn["t0"] + 4, burn["t1"],
                      PromConfig(step=1, min_step=1, rate_window="4s", timeout=10))
    assert list(sig.services) == ["burner"] and sig.services["burner"].runtime == "python"
    cpu = values(sig, "burner", Signal.CPU_CORES_USED)
    assert abs(float(np.median(cpu)) - burn["cores"]) < 0.15, (cpu, burn)
    assert burn["cores"] > 0.2  # the machine may be shared; the comparison above is what matters


# --- small pure parts --------------------------------------------------------------------------------

def test_unknown_service_is_reported_not_found(prom, span) -> None:
    sig = collect(prom.url, ["batch-cpu", "no-such-svc"], *span, config())
    m = sig.services["no-such-svc"].missing[Signal.CPU_CORES_USED]
    assert m.reason.startswith("service not found") and "'no-such-svc'" in m.reason
    approx(sig, "batch-cpu", Signal.CPU_CORES_USED, 3.92)


def test_not_a_prometheus_api(span, tmp_path: Path) -> None:
    import http.server
    import threading

    class Html(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>login</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET  # queries are sent as POST forms

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://sre:hunter2@127.0.0.1:{server.server_address[1]}"
        with pytest.raises(PrometheusRejected, match="does not look like a Prometheus query API") as err:
            collect(url, ["x"], *span, config(retries=0))
        assert "hunter2" not in str(err.value) and "127.0.0.1" in str(err.value)
    finally:
        server.shutdown()
        server.server_close()


def test_promql_quoting() -> None:
    from collectors.promql import label_map, quote, re_escape

    assert re_escape("a.b+c(d)") == r"a\.b\+c\(d\)" and re_escape("cart-v2") == "cart-v2"
    assert quote('say "hi"\\') == '"say \\"hi\\"\\\\"'
    wrapped = label_map(("service_name", "job"), ["a.b"])("up")
    assert wrapped == ('label_replace(label_replace(up, "pf_service", "$1", "job", "(a\\\\.b)"), '
                       '"pf_service", "$1", "service_name", "(a\\\\.b)")')


def test_chunks_and_step() -> None:
    from collectors.prometheus import choose_step, chunks, rate_range

    parts = chunks(0.0, 14_400.0, 0.5, 11_000)
    assert parts == [(0.0, 5_499.5), (5_500.0, 10_999.5), (11_000.0, 14_400.0)]
    assert sum(int((e - s) / 0.5) + 1 for s, e in parts) == 28_801
    assert choose_step(0, 7 * 86400, PromConfig()) == 301.0  # 7 d: a point per ~5 min, one request per query
    assert choose_step(0, 7 * 86400, PromConfig(target_points=11_000)) == 55.0  # finest that fits
    assert choose_step(0, 3600, PromConfig()) == 15.0
    assert rate_range("5m", 708.0) == "708s" and rate_range("5m", 15.0) == "5m"


def test_extra_matchers_scope_every_selector(prom, span) -> None:
    sig = collect(prom.url, ["checkout-go"], *span, config(extra_matchers='instance="a:9100"'))
    approx(sig, "checkout-go", Signal.CPU_CORES_USED, 1.0)
    approx(sig, "checkout-go", Signal.CPU_CORES_AVAILABLE, 2.0)
