"""Ranking a trace store's operations from span-metrics in Prometheus (collectors/span_metrics.py).

A real Prometheus, backfilled with promtool, holds the series the OpenTelemetry Collector's
spanmetrics connector writes (`traces_span_metrics_calls_total`,
`traces_span_metrics_duration_milliseconds_bucket` with its default buckets, labels service_name,
span_name, span_kind, status_code) for the Train Ticket services; the Jaeger and Zipkin stand-ins
hold the Train Ticket traces (tests/store_standins.py), moved into the same recent window. The
connector counted every span before sampling, so it describes a busier window than the store
kept, in another order: the ranking, the searches and the weights must follow span-metrics.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from collectors.jaeger_api import Jaeger
from collectors.prometheus import PromConfig
from collectors.span_metrics import SpanMetricsUnavailable, rank
from collectors.store_pull import StoreSettings, pull
from collectors.tempo import Tempo
from collectors.zipkin_api import Zipkin
from tests import prom
from tests import store_standins as standins
from tests.shared_data import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
TT = SHARED_DATA / "nezha/rca_data/2023-01-30/trace/11_52_trace.csv"
NS = 10**9
# The connector's default histogram buckets (ms).
BUCKETS = (2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10000, 15000)
# Span-metrics' order (count x p50): per (service, span name), calls per second and the bucket
# (lo, hi] every duration falls in. The first is one of the store's least common entry operations.
TOP = [("ts-route-service", "/api/v1/routeservice/routes/byIds/", 2.0, (400, 800)),
       ("ts-gateway-service", "/*", 1.5, (100, 200)),
       ("ts-station-service", "/api/v1/stationservice/stations/idlist", 1.0, (50, 100))]
REST = (0.2, (2, 4))  # every other entry operation, the store's most common among them
WINDOW_S = 3600


@pytest.fixture(scope="module")
def setup():
    prom.require_binaries()
    window = prom.Window.recent(hours=WINDOW_S / 3600, lead=600)
    start, end = window.end - WINDOW_S, window.end
    traces = standins.nezha_spans(TT)
    first = min(standins.root_of(t).start_ns for t in traces.values())
    shift = int((end - 1800) * NS) - first
    traces = {tid: [dataclasses.replace(s, start_ns=s.start_ns + shift, end_ns=s.end_ns + shift) for s in spans]
              for tid, spans in traces.items()}
    entry = sorted({(s.service, s.name) for t in traces.values() for s in t if s.kind == 2})
    om = prom.OpenMetrics(window)
    top = {(svc, op): (rate, bucket) for svc, op, rate, bucket in TOP}
    for svc, op in entry:
        rate, (lo, hi) = top.get((svc, op), REST)
        labels = {"service_name": svc, "span_name": op, "span_kind": "SPAN_KIND_SERVER",
                  "status_code": "STATUS_CODE_UNSET"}
        om.counter("traces_span_metrics_calls_total", labels, rate)
        om.histogram("traces_span_metrics_duration_milliseconds", labels, rate, rate * (lo + hi) / 2,
                     {le: (1.0 if le >= hi else 0.0) for le in BUCKETS})
    # A client span far busier and slower than any entry operation: not an entry, never ranked.
    client = {"service_name": "ts-preserve-service", "span_name": "GET", "span_kind": "SPAN_KIND_CLIENT",
              "status_code": "STATUS_CODE_UNSET"}
    om.counter("traces_span_metrics_calls_total", client, 50.0)
    om.histogram("traces_span_metrics_duration_milliseconds", client, 50.0, 50.0 * 3000, {5000: 1.0})
    with prom.prometheus_with(om.text()) as server:
        yield server.url, traces, start, end


def _expected_p(bucket: tuple[int, int], q: float) -> float:
    lo, hi = bucket
    return lo + (hi - lo) * q  # histogram_quantile interpolates linearly inside the bucket


def test_span_metrics_rank_entry_operations_over_the_window(setup) -> None:
    url, traces, start, end = setup
    ranked = rank(url, PromConfig(), start, end, None)
    assert [(r.service, r.operation) for r in ranked[:3]] == [(s, o) for s, o, _, _ in TOP]
    assert all(r.service != "ts-preserve-service" or r.operation != "GET" for r in ranked)  # client spans are not
    for r, (_, _, rate, bucket) in zip(ranked, TOP):
        assert r.count == round(rate * WINDOW_S)
        assert r.p50_ns / 1e6 == pytest.approx(_expected_p(bucket, 0.5), rel=1e-6)
        assert r.p95_ns / 1e6 == pytest.approx(_expected_p(bucket, 0.95), abs=1e-3)
    # The services' matcher is in the selector: asked for one service, only its operations.
    (only,) = rank(url, PromConfig(), start, end, ["ts-gateway-service"])
    assert (only.service, only.operation) == ("ts-gateway-service", "/*")
    with pytest.raises(SpanMetricsUnavailable):
        rank(url, PromConfig(), start, end, ["no-such-service"])


@pytest.mark.parametrize("kind", ["jaeger", "zipkin"])
def test_store_searches_and_weights_follow_span_metrics(setup, kind) -> None:
    """With span-metrics, the store searches only the top entry operations they rank (not every
    operation it lists), pulls each one's tail with minDuration at span-metrics' p95, and weights the
    sample to span-metrics' counts."""
    url, traces, start, end = setup
    server = standins.jaeger(traces) if kind == "jaeger" else standins.zipkin(traces)
    try:
        ranked = rank(url, PromConfig(), start, end, None)
        s = StoreSettings(url=server.url, top_operations=3, search_limit=5, min_slice_s=10**9, per_operation=5)
        store = Jaeger(s, ranked) if kind == "jaeger" else Zipkin(s, ranked)
        loaded = pull(store, s, start * NS, end * NS, None)
        sampling = loaded.sources[0].sampling
        assert sampling["ranked_by"].startswith("span-metrics in Prometheus")
        assert [(r["service"], r["operation"]) for r in sampling["ranked"][:3]] == [(a, b) for a, b, _, _ in TOP]
        assert [r["targeted"] for r in sampling["ranked"][:4]] == [True, True, True, False]
        path = "/api/traces" if kind == "jaeger" else "/api/v2/traces"
        searches = [r.query for r in server.requests if r.path == path]
        op = "operation" if kind == "jaeger" else "spanName"
        # (Zipkin also searches once without serviceName, for traces whose spans name no service.)
        first = {q[op] for q in searches if "minDuration" not in q and (kind == "jaeger" or "serviceName" in q)}
        want = {o if kind == "jaeger" else o.lower() for _, o, _, _ in TOP}
        assert first == want  # the store's busiest operations (seat, config) are not searched
        assert not any(r.path.endswith("/operations") or r.path == "/api/v2/spans" for r in server.requests)
        # Every trace is rooted at the gateway: its stratum is weighted to span-metrics' count, split
        # at span-metrics' p95, and its tail searched from there.
        (stratum,) = sampling["strata"]
        gateway = "ts-gateway-service"
        assert stratum["service"] == gateway and stratum["threshold_from"] == "store"
        assert stratum["population"] == round(1.5 * WINDOW_S)
        assert stratum["threshold_ms"] == pytest.approx(_expected_p((100, 200), 0.95), abs=1e-3)
        tails = [q for q in searches if "minDuration" in q and q[op] == "/*"]
        assert len(tails) == 1
        min_us = int(tails[0]["minDuration"].removesuffix("us"))
        assert min_us == int(stratum["threshold_ms"] * 1000) + 1
        weights = loaded.table.trace_weight
        assert weights.sum() == pytest.approx(round(1.5 * WINDOW_S), rel=1e-9)
    finally:
        server.close()


def test_tempo_without_traceql_metrics_ranks_by_span_metrics(setup) -> None:
    """A Tempo whose TraceQL metrics answer 404 takes span-metrics' ranking for its targeted searches."""
    url, traces, start, end = setup
    server = standins.tempo(traces, metrics=False)
    try:
        s = StoreSettings(url=server.url, top_operations=3, per_operation=5)
        loaded = pull(Tempo(s, lambda: rank(url, PromConfig(), start, end, None)), s, start * NS, end * NS, None)
        sampling = loaded.sources[0].sampling
        assert sampling["ranked_by"].startswith("span-metrics in Prometheus") and "HTTP 404" in sampling["ranked_by"]
        (stratum,) = sampling["strata"]  # every trace is rooted at the gateway
        assert stratum["population"] == round(1.5 * WINDOW_S) and stratum["threshold_from"] == "store"
        queries = [r.query["q"] for r in server.requests if r.path == "/api/search"]
        assert any('name = "/*"' in q and "duration > 195000us" in q for q in queries)  # span-metrics' p95
    finally:
        server.close()


def test_tempo_with_traceql_metrics_sends_no_span_metrics_query(setup) -> None:
    """A Tempo that ranks by its own TraceQL metrics never asks Prometheus for span-metrics."""
    url, traces, start, end = setup
    server = standins.tempo(traces)
    asked: list[int] = []
    try:
        s = StoreSettings(url=server.url, top_operations=3, per_operation=5)
        tempo = Tempo(s, lambda: asked.append(1) or rank(url, PromConfig(), start, end, None))
        loaded = pull(tempo, s, start * NS, end * NS, None)
        assert loaded.sources[0].sampling["ranked_by"].startswith("TraceQL metrics")
        assert asked == []
    finally:
        server.close()


def test_cli_ranks_a_jaeger_pull_by_span_metrics_and_says_so(setup, tmp_path: Path) -> None:
    url, traces, start, end = setup
    server = standins.jaeger(traces)
    try:
        p = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--jaeger", server.url, "--prometheus", url,
                            "--start", str(start), "--end", str(end), "--format", "json"],
                           capture_output=True, text=True, cwd=ROOT, timeout=180)
        assert p.returncode == 0, p.stderr
        (source,) = json.loads(p.stdout)["input"]["sources"]
        assert source["sampling"]["ranked_by"].startswith("span-metrics in Prometheus")
        assert source["sampling"]["ranked"][0]["operation"] == TOP[0][1]
        # The scheduled report ranks the same way.
        p = subprocess.run([sys.executable, "-m", "analyzer", "report", "--jaeger", server.url, "--prometheus", url,
                            "--start", str(start), "--end", str(end), "--format", "json", "--no-history",
                            "--output-dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=180)
        assert p.returncode == 3, p.stderr  # report's "incomplete": no runtime metrics for a verdict
        (written,) = tmp_path.glob("*/report.json")
        (source,) = json.loads(written.read_text())["input"]["sources"]
        assert source["sampling"]["ranked_by"].startswith("span-metrics in Prometheus")
        # A Prometheus without span-metrics: ranked from the searches, and the report says why
        # (one service, to keep the searches of every operation few).
        empty = prom.OpenMetrics(prom.Window(start, end))
        empty.gauge("up", {"job": "x"}, 1.0)
        with prom.prometheus_with(empty.text()) as bare:
            p = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--jaeger", server.url, "--prometheus",
                                bare.url, "--service", "ts-gateway-service", "--start", str(start), "--end",
                                str(end), "--format", "json"],
                               capture_output=True, text=True, cwd=ROOT, timeout=180)
        assert p.returncode == 0, p.stderr
        (source,) = json.loads(p.stdout)["input"]["sources"]
        assert source["sampling"]["ranked_by"].startswith("search results")
        assert any("no span-metrics ranking" in n for n in source["notices"])
    finally:
        server.close()
