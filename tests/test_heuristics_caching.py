"""Caching rules (PF-CACHE001..004) on traces of a real redis-server (opentelemetry-instrumentation-redis)
in front of a real SQLite database.

The redis fixture (tests/conftest.py) skips without redis-server, and fails instead under CI=true.
Each rule has a case that must fire and a near-miss that must not; expected numbers are
recomputed from the recorded spans with plain `json` (tests.workloads.more.raw_spans).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from analyzer.classify import FALL_THROUGH_DATABASE
from analyzer.model.signals import Signal
from heuristics.caching import parameter_free_read
from tests.workloads.more import analyze_hotspots, constant_signal, raw_spans

HIT_RATIO_QUERY = ("rate(redis_keyspace_hits_total[5m]) / "
                   "(rate(redis_keyspace_hits_total[5m]) + rate(redis_keyspace_misses_total[5m]))")


def only(path: Path, service: str, operation: str, **kw):
    return analyze_hotspots([path], **kw)[(service, operation)]


def measured_miss_ratio(path: Path) -> tuple[float, float]:
    """(misses / GETs, mean fall-through SELECT ms per request) read straight from the recording."""
    traces = raw_spans(path)
    gets = sum(s.name == "GET" for spans in traces.values() for s in spans)
    selects = [s.ms for spans in traces.values() for s in spans if s.attrs.get("db.system") == "sqlite"]
    return len(selects) / gets, sum(selects) / len(traces)


# --- PF-CACHE001 cache-aside misses ---------------------------------------------------------


def test_cache_aside_misses_fire_with_miss_ratio_and_fall_through_cost(profile_cache_miss_jsonl: Path) -> None:
    a = only(profile_cache_miss_jsonl, "profile", "GET /profile/{id}")
    (f,) = a.rule("PF-CACHE001")
    ev = {e.signal: e for e in f.evidence}
    ratio, fall_ms = measured_miss_ratio(profile_cache_miss_jsonl)
    assert ratio >= 0.8
    assert ev["cache_miss_ratio"].value == pytest.approx(ratio)
    assert ev["fall_through_time_per_request"].value == pytest.approx(fall_ms, rel=0.01)
    assert ev["fall_through_time_per_request"].source.startswith("SELECT count(*), sum(i.qty * i.price_cents)")
    # The fall-through time is handed to caching by classification.
    assert ev[FALL_THROUGH_DATABASE].value == pytest.approx(a.ctx.hotspot.part_share("database"), rel=0.01)
    assert f.share > 0.9 and f"{ratio:.0%}" in f.message
    # At a 90% hit ratio, 10% of the misses' fetch time would remain.
    assert f.saving_ms == pytest.approx(fall_ms * (1 - 0.1 / ratio), rel=0.01)
    assert "TTL" in f.remedy


def test_cache_aside_near_miss_warm_cache(profile_cache_warm_jsonl: Path) -> None:
    """95% of requests hit pre-warmed keys: the cache works."""
    ratio, _ = measured_miss_ratio(profile_cache_warm_jsonl)
    assert ratio <= 0.15
    a = only(profile_cache_warm_jsonl, "profile", "GET /profile/{id}")
    assert a.rule("PF-CACHE001") == []
    assert a.rule("PF-CACHE003") == []


# --- PF-CACHE002 low hit ratio from metrics (Signals built directly) ------------------------


def test_low_hit_ratio_from_metrics_fires(profile_cache_miss_jsonl: Path) -> None:
    sig = constant_signal("profile", Signal.CACHE_HIT_RATIO, 0.3, HIT_RATIO_QUERY)
    a = only(profile_cache_miss_jsonl, "profile", "GET /profile/{id}", signals=sig)
    (f,) = a.rule("PF-CACHE002")
    ev = {e.signal: e for e in f.evidence}
    assert ev["cache_hit_ratio"].value == pytest.approx(0.3) and ev["cache_hit_ratio"].source == HIT_RATIO_QUERY
    _, fall_ms = measured_miss_ratio(profile_cache_miss_jsonl)
    assert f.saving_ms == pytest.approx(fall_ms * (1 - 0.1 / 0.7), rel=0.01)
    assert "30%" in f.message
    # PF-CACHE001 and -002 measure the same fall-through: classification moves it once.
    assert a.shares["caching"] <= 1.0 and a.shares["database"] == pytest.approx(0.0, abs=1e-9)


def test_low_hit_ratio_near_misses(profile_cache_warm_jsonl: Path, orders_n_plus_one_jsonl: Path) -> None:
    good = constant_signal("profile", Signal.CACHE_HIT_RATIO, 0.97, HIT_RATIO_QUERY)
    assert only(profile_cache_warm_jsonl, "profile", "GET /profile/{id}", signals=good).rule("PF-CACHE002") == []
    # A low ratio does not concern a hot spot that never reads the cache.
    bad = constant_signal("orders", Signal.CACHE_HIT_RATIO, 0.3, HIT_RATIO_QUERY)
    assert only(orders_n_plus_one_jsonl, "orders", "GET /orders", signals=bad).rule("PF-CACHE002") == []


# --- PF-CACHE003 slow cache operations ------------------------------------------------------


def test_slow_cache_operation_fires_on_big_values(big_values_jsonl: Path) -> None:
    a = only(big_values_jsonl, "catalog", "GET /catalog")
    (f,) = a.rule("PF-CACHE003")
    ev = {e.signal: e for e in f.evidence}
    gets = [s.ms for spans in raw_spans(big_values_jsonl).values() for s in spans if s.name == "GET"]
    assert ev["cache_op_p50"].value == pytest.approx(statistics.median(gets), rel=0.01)
    assert ev["cache_op_p95"].value >= 5 and ev["cache_op_p50"].source == "GET ?"
    assert f.share > 0.5 and "SLOWLOG" in f.remedy
    assert a.category == "caching"


# --- PF-CACHE004 repeated identical fetch ---------------------------------------------------


def test_repeated_identical_fetch_fires(bestsellers_jsonl: Path) -> None:
    a = only(bestsellers_jsonl, "shop", "GET /home")
    (f,) = a.rule("PF-CACHE004")
    ev = {e.signal: e for e in f.evidence}
    traces = raw_spans(bestsellers_jsonl)
    assert ev["requests_with_fetch"].value == len(traces)
    assert ev["fetch_p50"].source == "SELECT sku, sum(qty) AS n FROM order_items GROUP BY sku ORDER BY n DESC LIMIT ?"
    best = [s.ms for spans in traces.values() for s in spans if "GROUP BY sku" in str(s.attrs.get("db.statement"))]
    assert f.saving_ms == pytest.approx(sum(best) / len(traces) - 0.5, rel=0.01)
    assert "Cache the result" in f.remedy
    # The per-customer lookup has a filter parameter: not reported.
    assert len(a.rule("PF-CACHE004")) == 1


def test_repeated_identical_fetch_near_miss_per_customer_query(slow_statement_jsonl: Path) -> None:
    """A slow query run by every request, but filtered by the customer id: every request gets different rows."""
    a = only(slow_statement_jsonl, "orders", "GET /customers/{id}/top-skus")
    assert a.rule("PF-CACHE004") == []


def test_parameter_free_read() -> None:
    assert parameter_free_read("SELECT sku FROM t GROUP BY sku ORDER BY ? DESC LIMIT ?")
    assert parameter_free_read("WITH x AS (SELECT 1) SELECT * FROM x")
    assert not parameter_free_read("SELECT * FROM t WHERE id = ?")
    assert not parameter_free_read("UPDATE t SET n = n + ?")
    assert not parameter_free_read("SELECT * FROM t WHERE status = ? LIMIT ?")
