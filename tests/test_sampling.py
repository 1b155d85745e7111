"""Stratified trace sampling (collectors/sampling.py) and the weighted hot-spot figures it feeds.

The population is recorded with the real OpenTelemetry SDK: 3,000 requests to one checkout
operation, each a SERVER span with a SQLite-style CLIENT span under it; 4 % of the requests hit a
slow query (the tail, where the database dominates). Timestamps are given to the SDK explicitly so
the population is large and fixed without sleeping. A sample that keeps the tail whole and thins
the body over-represents slow requests; weighted, its figures must estimate the population's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.trace import SpanKind

from analyzer.breakdown import compute
from analyzer.config import Config
from analyzer.hotspots import Hotspot, find_hotspots
from analyzer.model.arrays import weighted_quantile
from analyzer.model.spans import SpanTable
from analyzer.pipeline import Inputs, analyze
from analyzer.report_schema import validate_report
from collectors.otlp_traces import load_traces
from collectors.sampling import Candidate, SamplingPlan, draw, weigh
from tests.workloads.recording import Recorder, write_jsonl

MS = 1_000_000
REQUESTS = 3000


def _checkout(rec: Recorder) -> None:
    rng = np.random.default_rng(7)
    tracer = rec.provider("checkout").get_tracer("tests.sampling")
    t0 = 1_764_000_000 * 10**9
    for i in range(REQUESTS):
        start = t0 + i * 50 * MS
        slow = rng.random() < 0.04
        db = int((rng.uniform(300, 600) if slow else rng.uniform(1, 3)) * MS)
        own = int(rng.lognormal(np.log(8), 0.3) * MS)
        server = tracer.start_span("POST /checkout", kind=SpanKind.SERVER, start_time=start)
        ctx = otel_trace.set_span_in_context(server)
        child = tracer.start_span("SELECT orders", kind=SpanKind.CLIENT, context=ctx, start_time=start + own // 2,
                                  attributes={"db.system": "sqlite", "db.statement": "SELECT * FROM orders WHERE id = ?"})
        child.end(end_time=start + own // 2 + db)
        server.end(end_time=start + own + db)


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> SpanTable:
    rec = Recorder(id_seed=7)  # the draw depends on trace ids: the same sample every run
    try:
        _checkout(rec)
        spans = rec.spans()
    finally:
        rec.shutdown()
    path = write_jsonl(spans, Path(tmp_path_factory.mktemp("sampling")) / "checkout.jsonl")
    return load_traces([str(path)]).table


def _hotspot(t: SpanTable) -> Hotspot:
    (h,) = find_hotspots(t, compute(t))
    return h


def _candidates(t: SpanTable) -> list[Candidate]:
    roots = np.flatnonzero(t.parent < 0)
    return [Candidate(t.trace_id_hex(int(t.trace[r])), t.services[t.service[r]], t.names[t.name[r]],
                      int(t.end[r] - t.start[r])) for r in roots]


def draw_sample(t: SpanTable, plan: SamplingPlan) -> tuple[SpanTable, dict]:
    sample = draw(_candidates(t), plan)
    keep = {bytes.fromhex(tid) for tid in sample.weights}
    in_sample = np.array([bytes(t.trace_ids[c]) in keep for c in range(t.n_traces)])
    sub = t.take(in_sample[t.trace])
    return weigh(sub, sample.weights), sample.report(pulled=len(sample.weights))


def test_weighted_sample_estimates_the_population(population: SpanTable) -> None:
    full = _hotspot(population)
    assert full.count == REQUESTS
    sub, report = draw_sample(population, SamplingPlan(tail_cap=200, body_size=150))
    h = _hotspot(sub)
    # 5 % of 3,000 above p95 (150 traces, under the cap: all kept) and 150 of the other 2,850.
    assert report["considered"] == REQUESTS and report["selected"] == 300 and h.count == 300
    assert report["strata"][0]["tail"] == 150 and report["strata"][0]["tail_pulled"] == 150
    # Horvitz-Thompson: the weights of a stratified draw add up to the population exactly.
    assert h.estimated_count == pytest.approx(REQUESTS)
    assert h.total_ms == pytest.approx(full.total_ms, rel=0.05)
    assert h.part_share("database") == pytest.approx(full.part_share("database"), abs=0.03)
    assert h.quantile_ms(0.5) == pytest.approx(full.quantile_ms(0.5), rel=0.08)
    assert h.quantile_ms(0.99) == pytest.approx(full.quantile_ms(0.99), rel=0.05)
    assert h.mean_parts_ms()["database"] == pytest.approx(full.mean_parts_ms()["database"], rel=0.08)

    # The same sample unweighted is badly biased: half of it is the slow tail.
    sub.trace_weight = None
    raw = _hotspot(sub)
    assert raw.part_share("database") > full.part_share("database") + 0.15
    assert raw.quantile_ms(0.5) > 1.5 * full.quantile_ms(0.5)


def test_the_report_carries_weights_and_how_the_sample_was_drawn(population: SpanTable) -> None:
    sub, sampling = draw_sample(population, SamplingPlan(tail_cap=50, body_size=100))
    report = analyze(Inputs(table=sub), Config())
    report["input"]["sources"] = [{"path": "tempo", "format": "tempo-api", "messages": 0, "spans": len(sub),
                                   "skipped": {}, "sampling": sampling}]
    validate_report(report)
    (hot,) = report["services"][0]["hotspots"]
    assert hot["count"] == 150
    assert hot["estimated_count"] == pytest.approx(REQUESTS)
    # 150 tail traces, 50 pulled: each stands for 3.
    assert sampling["strata"][0]["tail"] == 150 and sampling["strata"][0]["tail_pulled"] == 50
    assert "p95" in sampling["method"]


def test_without_a_sample_nothing_changes(population: SpanTable) -> None:
    h = _hotspot(population)
    assert h.weights is None and h.estimated_count == h.count
    assert h.quantile_ns(0.99) == float(np.quantile(h.durations, 0.99))
    report = analyze(Inputs(table=population), Config())
    assert "estimated_count" not in report["services"][0]["hotspots"][0]


def test_weighted_quantile_is_the_quantile_of_repeated_values() -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        v = rng.integers(0, 10_000, n)
        w = rng.integers(1, 6, n)
        q = float(rng.random())
        assert weighted_quantile(v, q, w.astype(float)) == pytest.approx(float(np.quantile(np.repeat(v, w), q)))
    # One value of weight 99 against one of weight 1: the median is the heavy one.
    assert weighted_quantile(np.array([1, 2]), 0.5, np.array([1.0, 99.0])) == 2.0


def test_draw_is_reproducible_and_scales_to_the_stores_count() -> None:
    cands = [Candidate(f"{i:032x}", "svc", "op", (i % 100) * MS) for i in range(1000)]
    plan = SamplingPlan(tail_cap=10, body_size=20, seed=5)
    a, b = draw(cands, plan), draw(cands, plan)
    assert a.weights == b.weights and len(a.weights) == 30
    # 50 above p95 (durations 95..99 ms), 10 kept: weight 5; 950 below, 20 kept: weight 47.5.
    assert sorted(set(a.weights.values())) == [5.0, 47.5]
    # The store counted 4,000 such traces but listed 1,000: every weight is scaled by 4.
    c = draw(cands, plan, population={("svc", "op"): 4000})
    assert sum(c.weights.values()) == pytest.approx(4000)
    assert c.report(pulled=30)["population"] == 4000
    # A trace listed twice (under two operations) is drawn once.
    twice = cands[:5] + [Candidate(cands[0].trace_id, "svc", "other", MS)]
    assert draw(twice, plan).considered == 5
