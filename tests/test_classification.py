"""Classification of hot spots (analyzer.classify) and the CLI report, on traces of real workloads.

Each test's docstring names the workload and the cause a human would name; the test checks that
the measured category shares say the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.classify import ClassifyConfig, pick, trace_shares
from analyzer.config import Config
from analyzer.model.findings import CATEGORIES
from analyzer.pipeline import Inputs, analyze
from analyzer.report_schema import validate_report
from collectors.otlp_traces import load_traces
from tests.workloads import network
from tests.workloads.more import analyze_hotspots, recorded

MARGIN = ClassifyConfig().margin


def only(path: Path, service: str, operation: str):
    return analyze_hotspots([path])[(service, operation)]


def assert_category(a, category: str) -> None:
    """`category` leads with at least the margin, and the shares stay within the critical path."""
    ranked = sorted(a.shares.items(), key=lambda kv: -kv[1])
    assert a.category == category, a.shares
    assert ranked[0][0] == category and ranked[0][1] - ranked[1][1] >= MARGIN
    assert sum(a.shares.values()) <= 1.0 + 1e-9
    assert a.shares["gc_pause"] == 0 and a.shares["cpu_bound"] == 0  # no runtime metrics: never CPU or GC


# --- one cause -------------------------------------------------------------------------------


def test_n_plus_one_is_database(orders_n_plus_one_jsonl: Path) -> None:
    """`orders` GET /orders loads 20 orders' items one query at a time on an unindexed table.
    A human names N+1 queries: database."""
    a = only(orders_n_plus_one_jsonl, "orders", "GET /orders")
    assert_category(a, "database")
    assert a.shares["database"] == pytest.approx(a.ctx.hotspot.part_share("database"))


def test_slow_statement_is_database(slow_statement_jsonl: Path) -> None:
    """`orders` GET /customers/{id}/top-skus runs one join that scans 200k rows (missing index).
    A human names one slow statement: database."""
    assert_category(only(slow_statement_jsonl, "orders", "GET /customers/{id}/top-skus"), "database")


def test_sequential_dashboard_queries_are_database(dashboard_sequential_jsonl: Path) -> None:
    """`reports` GET /dashboard runs three independent aggregate scans one after another.
    A human names sequential queries: database."""
    assert_category(only(dashboard_sequential_jsonl, "reports", "GET /dashboard"), "database")


def test_sequential_gateway_is_network(gateway_sequential_jsonl: Path) -> None:
    """`gateway` GET /checkout calls inventory, pricing and shipping one after another.
    A human names the sequential call chain: network. The downstreams' own time counts as network
    for the caller; each downstream's hot spot is classified on its own."""
    a = only(gateway_sequential_jsonl, "gateway", "GET /checkout")
    assert_category(a, "network")
    assert a.shares["network"] == pytest.approx(a.ctx.hotspot.part_share("remote_server", "remote_gap"))


def test_chatty_calls_are_network(chatty_calls_jsonl: Path) -> None:
    """`catalog` GET /catalog/page makes 30 small calls to inventory. A human names chatty calls: network."""
    assert_category(only(chatty_calls_jsonl, "catalog", "GET /catalog/page"), "network")


def test_slow_downstream_is_network_and_the_downstream_is_not(slow_downstream_jsonl: Path) -> None:
    """`web` GET /recommendations waits ~140 ms on `recommender`, which sleeps (its own time).
    A human names the slow downstream: network for web; recommender's own time is in-process and
    unexplained by traces alone, so it is unknown, never CPU."""
    hs = analyze_hotspots([slow_downstream_jsonl])
    assert_category(hs[("web", "GET /recommendations")], "network")
    down = hs[("recommender", "GET /recs")]
    assert down.category == "unknown" and all(v == 0 for v in down.shares.values())


def test_cache_misses_are_caching_not_database(profile_cache_miss_jsonl: Path) -> None:
    """`profile` GET /profile/{id}: redis GET misses ~90% of the time, then a ~36 ms SQLite query and a SET.
    A human names the cache that never hits: caching. The fall-through query time moves from
    database to caching, so database does not compete with it."""
    a = only(profile_cache_miss_jsonl, "profile", "GET /profile/{id}")
    assert_category(a, "caching")
    h = a.ctx.hotspot
    assert a.shares["caching"] == pytest.approx(h.part_share("cache") + h.part_share("database"), rel=1e-6)
    assert a.shares["database"] == pytest.approx(0.0, abs=1e-9)
    # Without the move the trace alone would call it database.
    assert pick(trace_shares(h), ClassifyConfig())[0] == "database"


def test_big_cache_values_are_caching(big_values_jsonl: Path) -> None:
    """`catalog` GET /catalog reads an 8 MB blob from redis each time (always a hit).
    A human names the slow cache itself: caching."""
    assert_category(only(big_values_jsonl, "catalog", "GET /catalog"), "caching")


def test_repeated_identical_fetch_is_caching(bestsellers_jsonl: Path) -> None:
    """`shop` GET /home recomputes the same bestseller list (no parameters) on every request.
    A human names a missing cache: caching (the query's time is what a cache would remove)."""
    a = only(bestsellers_jsonl, "shop", "GET /home")
    assert_category(a, "caching")
    assert a.shares["database"] < 0.05


def test_cpu_work_without_metrics_is_unknown(cpu_render_jsonl: Path) -> None:
    """`render` GET /render/{id}: ~50 ms of pure-Python work, no child spans.
    A human names CPU-bound code, but traces show only self time: with no runtime metrics the
    category is unknown and no share goes to cpu_bound or gc_pause."""
    a = only(cpu_render_jsonl, "render", "GET /render/{id}")
    assert a.category == "unknown"
    assert all(v == 0 for v in a.shares.values())
    assert not [f for f in a.findings if f.category in ("database", "network", "caching")]


# --- two causes -------------------------------------------------------------------------------


def test_mixed_database_and_network_shares_add_up_and_database_wins(mixed_jsonl: Path) -> None:
    """`orders` GET /orders/report: the N+1 item loading (~110 ms) plus one `pricing` call (~25 ms).
    A human names database first (N+1 queries), then the slower downstream call."""
    a = only(mixed_jsonl, "orders", "GET /orders/report")
    h = a.ctx.hotspot
    assert_category(a, "database")
    assert a.shares["database"] == pytest.approx(h.part_share("database"))
    assert a.shares["network"] == pytest.approx(h.part_share("remote_server", "remote_gap"))
    assert a.shares["network"] < a.shares["database"]
    # The network share holds at least the downstream's own 20 ms sleep per request. (A bound on
    # the share itself would not be: the N+1 is CPU work that a busy machine stretches several
    # times over while the sleep stays 20-30 ms.)
    assert a.shares["network"] * h.total_ms / h.count >= 20.0
    # Shares plus self time account for the whole critical path.
    assert sum(a.shares.values()) + h.part_share("self") == pytest.approx(1.0, abs=1e-6)
    assert a.rule("PF-DB001")
    # The margin and the minimum share are configuration: a demanding margin makes it unknown.
    assert pick(a.shares, ClassifyConfig(margin=0.9))[0] == "unknown"
    assert pick(a.shares, ClassifyConfig(min_share=0.99))[0] == "unknown"


def test_verdicts_name_the_measured_cause(mixed_jsonl: Path, profile_cache_miss_jsonl: Path,
                                          gateway_sequential_jsonl: Path) -> None:
    """Database, caching and network causes never recommend a rewrite; the reason names the cause."""
    loaded = load_traces([str(mixed_jsonl), str(profile_cache_miss_jsonl), str(gateway_sequential_jsonl)])
    report = analyze(Inputs(loaded.table, loaded.sources, loaded.repairs), Config())
    validate_report(report)
    verdicts = {s["service"]: s["verdict"] for s in report["services"]}
    for service, cause, words in (("orders", "database", "database"), ("profile", "caching", "cache"),
                                  ("gateway", "network", "remote")):
        v = verdicts[service]
        assert v["rust_rewrite"] == "not_recommended" and v["cause"] == cause, v
        assert words in v["reason"]


# --- the CLI ----------------------------------------------------------------------------------

CLI_CASES = {
    # fixture: (service, operation, category, rule, words in its remedy)
    "orders_n_plus_one_jsonl": ("orders", "GET /orders", "database", "PF-DB001", "IN (?)"),
    "slow_statement_jsonl": ("orders", "GET /customers/{id}/top-skus", "database", "PF-DB002", "index"),
    "gateway_sequential_jsonl": ("gateway", "GET /checkout", "network", "PF-NET002", "concurrently"),
    "chatty_calls_jsonl": ("catalog", "GET /catalog/page", "network", "PF-NET003", "batch"),
    "profile_cache_miss_jsonl": ("profile", "GET /profile/{id}", "caching", "PF-CACHE001", "TTL"),
    "mixed_jsonl": ("orders", "GET /orders/report", "database", "PF-DB001", "IN (?)"),
    "dashboard_sequential_jsonl": ("reports", "GET /dashboard", "database", "PF-DB003", "concurrently"),
    "wire_delay_jsonl": ("web", "GET /recommendations", "network", "PF-NET001", "gap dominates"),
    "big_values_jsonl": ("catalog", "GET /catalog", "caching", "PF-CACHE003", "SLOWLOG"),
    "bestsellers_jsonl": ("shop", "GET /home", "caching", "PF-CACHE004", "Cache the result"),
}


@pytest.mark.parametrize("fixture", sorted(CLI_CASES))
def test_cli_names_category_rule_and_remedy(fixture: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    path: Path = request.getfixturevalue(fixture)
    service, operation, category, code, words = CLI_CASES[fixture]
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--traces", str(path), "--format", "json",
                           "--output", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    validate_report(report)
    hot = {(s["service"], h["operation"]): h for s in report["services"] for h in s["hotspots"]}
    h = hot[(service, operation)]
    assert h["category"] == category and h["share"] >= 0.3
    assert set(h["category_shares"]) == set(CATEGORIES)
    (f, *_) = [f for f in h["findings"] if f["rule"] == code]
    assert words in f["remedy"] and f["evidence"] and f["saving_ms"] > 0
    svc = next(s for s in report["services"] if s["service"] == service)
    assert svc["verdict"]["rust_rewrite"] == "not_recommended" and svc["verdict"]["cause"] == category
    assert any(i["rule"] == code for i in svc["fix_first"])
    # Downstream services only sleep: in-process time, no database/network/caching finding, never a category.
    for (other, op), oh in hot.items():
        if other != service:
            assert oh["category"] == "unknown"
            assert not [f for f in oh["findings"] if f["category"] in ("database", "network", "caching")]


def test_chatty_near_miss_has_no_network_pattern(recordings_dir: Path) -> None:
    """`catalog` with 4 calls per request: network time, but neither chatty nor a fan-out."""
    path = recorded("chatty-four", recordings_dir, network.chatty_calls, calls=4)
    a = only(path, "catalog", "GET /catalog/page")
    assert not a.rule("PF-NET002") and not a.rule("PF-NET003")
