"""Database rules (PF-DB001..004) on traces recorded from real SQLite workloads.

Each rule has a case that must fire and a near-miss that must not. Expected numbers are
recomputed from the recorded spans with plain `json` (tests.workloads.more.raw_spans), not
taken from the detector.
"""

from __future__ import annotations

import inspect
import statistics
from pathlib import Path

import pytest

from analyzer.config import Config, Override, load_config
from analyzer.pipeline import Inputs, analyze
from analyzer.model.signals import Signal, Signals
from collectors.otlp_traces import load_traces
from heuristics.registry import all_rules
from tests.workloads import cpu, more, orders
from tests.workloads.more import analyze_hotspots, constant_signal, raw_spans, recorded, sequential_runs, sum_minus_max_ms

ITEMS = orders.ITEMS_BY_ORDER  # normalizes to itself: it already uses `?`


@pytest.fixture(scope="module")
def located_jsonl(orders_db: Path, recordings_dir: Path) -> Path:
    return recorded("n-plus-one-located", recordings_dir, more.orders_n_plus_one_located, db_path=orders_db)


@pytest.fixture(scope="module")
def split_jsonl(orders_db: Path, recordings_dir: Path) -> Path:
    return recorded("split-loops", recordings_dir, more.orders_split_loops, db_path=orders_db)


@pytest.fixture(scope="module")
def dashboard_parallel_jsonl(orders_db: Path, recordings_dir: Path) -> Path:
    return recorded("dashboard-parallel", recordings_dir, more.dashboard_parallel, db_path=orders_db)


def f_threshold(code: str, name: str) -> float:
    return all_rules()[code].defaults[name]


def only(path: Path, service: str, operation: str, **kw):
    return analyze_hotspots([path], **kw)[(service, operation)]


# --- PF-DB001 N+1 ---------------------------------------------------------------------------


def test_n_plus_one_fires_with_repetitions_time_and_batched_shape(orders_n_plus_one_jsonl: Path) -> None:
    a = only(orders_n_plus_one_jsonl, "orders", "GET /orders")
    (f,) = a.rule("PF-DB001")
    ev = {e.signal: e for e in f.evidence}
    # The loop runs 20 item queries per request; `SELECT 1` every 5th order and a `format_order`
    # span every 7th sit between them and must not cut the run.
    traces = raw_spans(orders_n_plus_one_jsonl)
    per_request = [sum(s.attrs.get("db.statement") == ITEMS for s in spans) for spans in traces.values()]
    assert set(per_request) == {20}
    assert any(s.attrs.get("db.statement") == "SELECT 1" for spans in traces.values() for s in spans)
    assert ev["repetitions_per_request"].value == 20
    assert ev["repetitions_per_request"].source == ITEMS
    item_ms = [s.ms for spans in traces.values() for s in spans if s.attrs.get("db.statement") == ITEMS]
    assert ev["repeated_query_time_per_request"].value == pytest.approx(sum(item_ms) / len(traces), rel=0.01)
    assert ev["repetitions_in_sample"].source.startswith("trace ") and len(ev["repetitions_in_sample"].source) == 38
    assert "WHERE order_id IN (?)" in f.remedy and "order_id" in f.remedy
    assert f.category == "database" and 0.5 < f.share <= 1.0
    # Batched: one repetition's cost remains, so the saving is 19/20 of the repeated time at most.
    assert 0 < f.saving_ms <= ev["repeated_query_time_per_request"].value * 19 / 20 + 1e-6
    assert "20× per request" in f.message


def test_n_plus_one_points_at_the_line_that_issues_the_query(located_jsonl: Path) -> None:
    a = only(located_jsonl, "orders", "GET /orders")
    (f,) = a.rule("PF-DB001")
    lines, first = inspect.getsourcelines(orders.load_orders_one_by_one)
    line = first + next(i for i, text in enumerate(lines) if "query(conn, ITEMS_BY_ORDER" in text)
    assert f.location == f"{orders.__file__}:{line} (load_orders_one_by_one)"


def test_nested_database_spans_count_once(orders_db: Path, recordings_dir: Path) -> None:
    """An ORM span around the driver span: 40 database spans per request, 20 queries."""
    path = recorded("n-plus-one-orm", recordings_dir, more.orders_n_plus_one_orm, db_path=orders_db)
    traces = raw_spans(path)
    assert {sum(s.attrs.get("db.statement") == ITEMS for s in spans) for spans in traces.values()} == {40}
    a = only(path, "orders", "GET /orders/orm")
    (f,) = a.rule("PF-DB001")
    ev = {e.signal: e for e in f.evidence}
    assert ev["repetitions_per_request"].value == 20
    outer = [s.ms for spans in traces.values() for s in spans if s.name == "SELECT order_items"]
    assert ev["repeated_query_time_per_request"].value == pytest.approx(sum(outer) / len(traces), rel=0.01)
    assert f.share <= a.ctx.hotspot.part_share("database") + 1e-9


def test_n_plus_one_near_miss_four_batched_queries(orders_batched_jsonl: Path) -> None:
    """4 identical `IN (...)` queries per request: below the 5 repetitions of an N+1."""
    a = only(orders_batched_jsonl, "orders", "GET /orders")
    traces = raw_spans(orders_batched_jsonl)
    counts = {sum("IN (" in str(s.attrs.get("db.statement", "")) for s in spans) for spans in traces.values()}
    assert counts == {4}
    assert a.rule("PF-DB001") == []


def test_n_plus_one_near_miss_loop_cut_by_a_long_statement(split_jsonl: Path) -> None:
    """8 item queries per request, but a ~36 ms statement in the middle: two runs of 4, not an N+1."""
    a = only(split_jsonl, "orders", "GET /orders/split")
    assert a.rule("PF-DB001") == []


def test_n_plus_one_near_miss_concurrent_queries(orders_db: Path, recordings_dir: Path) -> None:
    """20 item queries per request from 4 connections at once: they overlap, so no sequential loop."""
    path = recorded("items-concurrent", recordings_dir, more.orders_items_concurrent, db_path=orders_db)
    traces = raw_spans(path)
    assert {sum(s.attrs.get("db.statement") == ITEMS for s in spans) for spans in traces.values()} == {20}
    a = only(path, "orders", "GET /orders/concurrent")
    assert a.rule("PF-DB001") == []


def test_override_silences_n_plus_one_for_one_operation_only(orders_n_plus_one_jsonl: Path, mixed_jsonl: Path,
                                                            tmp_path: Path) -> None:
    cfg_file = tmp_path / "pf.toml"
    cfg_file.write_text('[[override]]\nservice = "orders"\noperation = "GET /orders"\n'
                        '[override.rules."PF-DB001"]\nmin_repetitions = 50\n')
    config = load_config(str(cfg_file))
    both = analyze_hotspots([orders_n_plus_one_jsonl, mixed_jsonl], config=config)
    assert both[("orders", "GET /orders")].rule("PF-DB001") == []
    assert len(both[("orders", "GET /orders/report")].rule("PF-DB001")) == 1
    # The same override as a global threshold silences both.
    glob = Config(rules={"PF-DB001": {"min_repetitions": 50}})
    both = analyze_hotspots([orders_n_plus_one_jsonl, mixed_jsonl], config=glob)
    assert all(not a.rule("PF-DB001") for a in both.values())
    # Ignoring the rule for one service's operation works too.
    ignore = Config(overrides=(Override("orders", "GET /orders/report", frozenset({"PF-DB001"}), {}),))
    both = analyze_hotspots([orders_n_plus_one_jsonl, mixed_jsonl], config=ignore)
    assert both[("orders", "GET /orders")].rule("PF-DB001")
    assert not both[("orders", "GET /orders/report")].rule("PF-DB001")


def test_fix_first_orders_by_saving_and_carries_the_remedy(mixed_jsonl: Path) -> None:
    loaded = load_traces([str(mixed_jsonl)])
    report = analyze(Inputs(loaded.table, loaded.sources, loaded.repairs), Config())
    (svc,) = [s for s in report["services"] if s["service"] == "orders"]
    fix = svc["fix_first"]
    assert fix[0]["rule"] == "PF-DB001" and "IN (?)" in fix[0]["remedy"]
    totals = [i["saving_total_ms"] for i in fix]
    assert totals == sorted(totals, reverse=True)
    (h,) = svc["hotspots"]
    (f,) = [f for f in h["findings"] if f["rule"] == "PF-DB001"]
    assert fix[0]["saving_ms_per_request"] == pytest.approx(f["saving_ms"], rel=1e-3)
    assert fix[0]["saving_total_ms"] == pytest.approx(f["saving_ms"] * h["count"], rel=1e-3)


# --- PF-DB002 slow statement ----------------------------------------------------------------


def test_slow_statement_fires_and_names_index_columns(slow_statement_jsonl: Path) -> None:
    a = only(slow_statement_jsonl, "orders", "GET /customers/{id}/top-skus")
    (f,) = a.rule("PF-DB002")
    ev = {e.signal: e for e in f.evidence}
    assert ev["statement_p95"].source.startswith("SELECT i.sku, sum(i.qty) FROM order_items i JOIN orders o")
    slow = [s.ms for spans in raw_spans(slow_statement_jsonl).values() for s in spans
            if "JOIN orders" in str(s.attrs.get("db.statement", ""))]
    assert ev["statement_p50"].value == pytest.approx(statistics.median(slow), rel=0.01)
    assert ev["statement_p95"].value >= 10
    assert f.share > 0.8 and "index" in f.remedy and "o.customer_id" in f.remedy and "i.order_id" in f.remedy
    assert f"{f.share:.0%}" in f.message
    # Only the join is slow; the primary-key lookup before it is not reported.
    assert len(a.rule("PF-DB002")) == 1


def test_slow_statement_near_miss_with_the_index(slow_statement_indexed_jsonl: Path) -> None:
    """The same requests with indexes: the join takes well under a millisecond; database time is
    still most of this tiny request, but nothing is slow."""
    a = only(slow_statement_indexed_jsonl, "orders", "GET /customers/{id}/top-skus")
    assert a.rule("PF-DB002") == []


# --- PF-DB003 sequential queries ------------------------------------------------------------


def test_sequential_queries_fire_with_sum_minus_max_saving(dashboard_sequential_jsonl: Path) -> None:
    a = only(dashboard_sequential_jsonl, "reports", "GET /dashboard")
    (f,) = a.rule("PF-DB003")
    max_gap = f_threshold("PF-DB003", "max_gap_ms")
    savings, whole = [], 0
    for spans in raw_spans(dashboard_sequential_jsonl).values():
        q = [s for s in spans if s.kind == 3]
        assert len(q) == 3 and all(s.ms >= f_threshold("PF-DB003", "min_query_ms") for s in q)
        assert all(a.end <= b.start for a, b in zip(q, q[1:])), "the queries run one after another"
        # Per sequence (a stall between two queries longer than max_gap_ms splits one).
        savings.append(sum_minus_max_ms(q, lambda s: s.attrs["db.statement"], max_gap))
        whole += len(sequential_runs(q, max_gap)) == 1
    assert whole >= 1  # the three queries form one sequence in at least one request
    assert f.saving_ms == pytest.approx(statistics.fmean(savings), rel=0.02)
    assert "3 different statements" in f.message
    sources = {e.source for e in f.evidence if e.signal == "sequential_statement_time_per_request"}
    assert len(sources) == 3 and all(s.startswith("SELECT") for s in sources)


def test_sequential_queries_near_miss_concurrent(dashboard_parallel_jsonl: Path) -> None:
    """The same three queries issued concurrently on three connections: nothing to gain."""
    traces = raw_spans(dashboard_parallel_jsonl)
    overlapping = 0
    for spans in traces.values():
        q = sorted((s for s in spans if s.kind == 3), key=lambda s: s.start)
        overlapping += any(b.start < a.end for a, b in zip(q, q[1:]))
    assert overlapping >= len(traces) * 0.75  # the spans really overlap
    a = only(dashboard_parallel_jsonl, "reports", "GET /dashboard")
    assert a.rule("PF-DB003") == []


# --- PF-DB004 pool wait (Signals built directly) --------------------------------------------


POOL_QUERY = ("sum(rate(hikaricp_connections_acquire_seconds_sum[5m])) / "
              "sum(rate(hikaricp_connections_acquire_seconds_count[5m]))")


def test_pool_wait_fires_from_metrics(orders_n_plus_one_jsonl: Path) -> None:
    sig = constant_signal("orders", Signal.POOL_WAIT_SECONDS, 0.030, POOL_QUERY)
    pending = constant_signal("orders", Signal.POOL_PENDING, 4.0, "hikaricp_connections_pending")
    sig.service("orders").series.update(pending.service("orders").series)
    a = only(orders_n_plus_one_jsonl, "orders", "GET /orders", signals=sig)
    (f,) = a.rule("PF-DB004")
    ev = {e.signal: e for e in f.evidence}
    assert ev["pool_wait_mean"].value == pytest.approx(30.0) and ev["pool_wait_mean"].source == POOL_QUERY
    assert ev["pool_pending_mean"].value == pytest.approx(4.0)
    mean_ms = a.ctx.hotspot.total_ms / a.ctx.hotspot.count
    assert f.share == pytest.approx(30.0 / mean_ms, rel=1e-6)
    assert f.saving_ms == pytest.approx(29.0)


def test_pool_wait_near_misses(orders_n_plus_one_jsonl: Path, cpu_render_jsonl: Path) -> None:
    small = constant_signal("orders", Signal.POOL_WAIT_SECONDS, 0.0005, POOL_QUERY)
    assert only(orders_n_plus_one_jsonl, "orders", "GET /orders", signals=small).rule("PF-DB004") == []
    # A hot spot with no database spans does not use the pool, whatever the service's pool does.
    busy = constant_signal("render", Signal.POOL_WAIT_SECONDS, 0.5, POOL_QUERY)
    assert only(cpu_render_jsonl, "render", "GET /render/{id}", signals=busy).rule("PF-DB004") == []
    # No pool metrics at all: silence.
    assert only(orders_n_plus_one_jsonl, "orders", "GET /orders", signals=Signals()).rule("PF-DB004") == []


def test_pool_pending_without_wait_time_claims_no_share(orders_n_plus_one_jsonl: Path) -> None:
    sig = constant_signal("orders", Signal.POOL_PENDING, 3.0, "db_client_connection_pending_requests")
    (f,) = only(orders_n_plus_one_jsonl, "orders", "GET /orders", signals=sig).rule("PF-DB004")
    assert f.share == 0 and f.saving_ms == 0 and "not measured" in f.message
    calm = constant_signal("orders", Signal.POOL_PENDING, 0.2, "db_client_connection_pending_requests")
    assert only(orders_n_plus_one_jsonl, "orders", "GET /orders", signals=calm).rule("PF-DB004") == []


def test_cpu_workload_has_no_database_findings(cpu_render_jsonl: Path) -> None:
    a = only(cpu_render_jsonl, "render", "GET /render/{id}")
    assert not [f for f in a.findings if f.category == "database"]
    assert cpu.cpu_render  # the workload the fixture recorded
