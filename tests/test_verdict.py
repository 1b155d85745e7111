"""The rewrite verdict (analyzer/verdict.py) and the Amdahl ceiling (analyzer/ceiling.py).

`decide` is tested on hot-spot results built directly (it is a pure function of them); the
ceiling on hot spots from real OTel SDK spans with exact signals, numbers worked out by hand.
"""

from __future__ import annotations

import pytest

from analyzer.ceiling import rewrite_ceiling
from analyzer.classify import ClassifyConfig, category_shares, pick
from analyzer.model.findings import CATEGORIES, Evidence, Finding
from analyzer.model.signals import Missing, ServiceSignals, Signal
from analyzer.verdict import INSUFFICIENT, NOT_RECOMMENDED, RECOMMENDED, HotspotResult, decide, top_hotspots
from heuristics.engine import run_rules
from analyzer.config import Config
from tests.test_heuristics_runtime import Q, Traces, contexts, series, signals_for, steady

CFG = ClassifyConfig()
GC_Q = Q[Signal.GC_SECONDS_PER_SECOND]


def finding(rule: str, category: str, share: float, saving_ms: float = 0.0, source: str = GC_Q) -> Finding:
    return Finding(rule=rule, category=category, message="m", remedy="r", share=share, saving_ms=saving_ms,
                   evidence=[Evidence("x", 1.0, "", source)])


def result(op: str, total_ms: float, self_share: float, findings: list[Finding] = (), **shares: float) -> HotspotResult:
    s = dict.fromkeys(CATEGORIES, 0.0)
    s.update(shares)
    for f in findings:
        if f.category in s:
            s[f.category] = max(s[f.category], f.share)
    cat, _ = pick(s, CFG)
    return HotspotResult(op, total_ms, self_share, cat, s, list(findings))


def signals(runtime: str, *present: str, missing: dict[str, str] | None = None) -> ServiceSignals:
    ss = ServiceSignals("svc", runtime)
    for name in present:
        ss.series[name] = series(1.0, name)
    for name, enable in (missing or {}).items():
        ss.missing[name] = Missing(name, "not exposed", enable=enable)
    return ss


def test_database_dominated_is_not_recommended_with_the_first_fix():
    """70% database time with 10% GC noise: fix the queries; the reason names the first fix."""
    hs = [result("GET /orders", 1000, 0.2, [finding("PF-GC001", "gc_pause", 0.1)], database=0.7)]
    fix = [{"rule": "PF-DB001", "operation": "GET /orders", "saving_ms_per_request": 42.0}]
    v = decide("orders", "jvm", hs, CFG, True, signals("jvm", Signal.GC_SECONDS_PER_SECOND), fix)
    assert (v.rust_rewrite, v.cause) == (NOT_RECOMMENDED, "database")
    assert "PF-DB001 on GET /orders saves 42.0 ms per GET /orders request" in v.reason


def test_gc_dominated_and_backed_is_recommended():
    hs = [result("GET /feed", 1000, 0.9, [finding("PF-GC001", "gc_pause", 0.55)])]
    v = decide("feed", "node", hs, CFG, True, signals("node", Signal.GC_SECONDS_PER_SECOND))
    assert (v.rust_rewrite, v.cause) == (RECOMMENDED, "gc_pause")
    assert "PF-GC001 from jvm_gc_pause_seconds_sum" in v.reason


def test_gc_and_cpu_together_dominate():
    """35% GC and 30% CPU: neither leads the other by the margin, together they dominate (65%)."""
    hs = [result("GET /x", 1000, 0.8, [finding("PF-GC001", "gc_pause", 0.35), finding("PF-CPU001", "cpu_bound", 0.30)])]
    assert hs[0].category == "unknown"
    v = decide("x", "go", hs, CFG, True, signals("go", Signal.GC_SECONDS_PER_SECOND, Signal.CPU_CORES_USED))
    assert (v.rust_rewrite, v.cause) == (RECOMMENDED, "gc_pause")
    assert "35% GC pauses and 30% CPU work" in v.reason


def test_runtime_share_without_metric_backing_is_never_recommended():
    """A cpu_bound share with no finding carrying evidence (e.g. hand-set) does not recommend."""
    hs = [result("GET /x", 1000, 0.9, [], cpu_bound=0.8)]
    v = decide("x", "python", hs, CFG, True, signals("python", Signal.CPU_CORES_USED))
    assert v.rust_rewrite != RECOMMENDED


def test_verdict_uses_top_hotspots_by_impact():
    """A small CPU-bound endpoint beside a big database one: the verdict follows the big one."""
    big = result("GET /report", 9000, 0.1, [], database=0.85)
    small = result("GET /thumb", 500, 0.9, [finding("PF-CPU001", "cpu_bound", 0.9)])
    assert [h.operation for h in top_hotspots([small, big])] == ["GET /report"]
    v = decide("r", "jvm", [small, big], CFG, True, signals("jvm", Signal.CPU_CORES_USED))
    assert (v.rust_rewrite, v.cause) == (NOT_RECOMMENDED, "database")


def test_self_time_without_runtime_metrics_is_insufficient_evidence():
    hs = [result("GET /x", 1000, 0.9)]
    v = decide("x", "go", hs, CFG, False, None)
    assert (v.rust_rewrite, v.cause) == (INSUFFICIENT, "unknown")
    assert "go_gc_duration_seconds" in v.reason


def test_missing_gc_metric_names_the_collectors_enable_text():
    """JVM with CPU but no GC time: GC cannot be told from waiting; the reason quotes what to enable."""
    hs = [result("GET /x", 1000, 0.9)]
    ss = signals("jvm", Signal.CPU_CORES_USED, missing={Signal.GC_SECONDS_PER_SECOND: "Micrometer JvmGcMetrics"})
    v = decide("x", "jvm", hs, CFG, True, ss)
    assert v.rust_rewrite == INSUFFICIENT
    assert "gc_seconds_per_second: Micrometer JvmGcMetrics" in v.reason and "cpu_cores_used" not in v.reason


def test_python_needs_only_cpu():
    """CPython GC runs inside CPU time: with CPU present and no cause, the verdict is decided."""
    hs = [result("GET /x", 1000, 0.9)]
    v = decide("x", "python", hs, CFG, True, signals("python", Signal.CPU_CORES_USED))
    assert v.rust_rewrite == NOT_RECOMMENDED


def test_waiting_is_not_recommended():
    hs = [result("GET /x", 1000, 0.9, [finding("PF-WAIT001", "unknown", 0.85)])]
    v = decide("x", "python", hs, CFG, True, signals("python", Signal.CPU_CORES_USED))
    assert (v.rust_rewrite, v.cause) == (NOT_RECOMMENDED, "unknown")
    assert "waiting" in v.reason and "PF-WAIT001" in v.reason


def test_metrics_only_saturation_is_reported_but_not_related_to_latency():
    ss = ServiceSignals("batch", "go")
    ss.series[Signal.CPU_CORES_USED] = series(3.9, Q[Signal.CPU_CORES_USED])
    ss.series[Signal.CPU_CORES_AVAILABLE] = series(4.0, Q[Signal.CPU_CORES_AVAILABLE])
    v = decide("batch", "go", [], CFG, True, ss)
    assert (v.rust_rewrite, v.cause) == (INSUFFICIENT, "cpu_bound")
    assert "seen only in metrics (CPU 3.90 cores of 4.00 (97%))" in v.reason
    assert "no request latency" in v.reason
    idle = ServiceSignals("idle", "go")
    idle.series[Signal.CPU_CORES_USED] = series(0.1, Q[Signal.CPU_CORES_USED])
    assert decide("idle", "go", [], CFG, True, idle).cause == "unknown"
    assert decide("none", "go", [], CFG, False, None).rust_rewrite == INSUFFICIENT


# --- ceiling --------------------------------------------------------------------------------


@pytest.fixture
def traces():
    t = Traces()
    yield t
    t.shutdown()


def _ceiling(traces, tmp_path, sig, speedup=2.0):
    ctxs = list(contexts(traces.table(tmp_path / "t.pb"), sig).values())
    results = []
    for c in ctxs:
        fs = run_rules(c, Config())
        shares = category_shares(c.hotspot, fs)
        cat, _ = pick(shares, CFG)
        results.append(HotspotResult(c.hotspot.operation, c.hotspot.total_ms, c.hotspot.part_share("self"),
                                     cat, shares, fs))
    return rewrite_ceiling(ctxs, results, cpu_speedup=speedup)


@pytest.mark.parametrize("speedup, cut_ms", [(2.0, 40.0), (4.0, 50.0)])
def test_ceiling_amdahl(traces, tmp_path, speedup, cut_ms):
    """JVM, 100 ms of self time per request at 10 req/s; GC pauses 0.2 s/s; 0.6 cores used.
    GC: 0.2 x 100 = 20 ms per request, removed. CPU outside GC: (0.6 - 0.2) / 10 = 40 ms per
    request, cut to 40/S. S=2: 20 + 20 = 40 ms; S=4: 20 + 30 = 50 ms (of 100: the same in %)."""
    steady(traces, "ledger", "jvm", 120, 10, 100)
    sig = signals_for("ledger", "jvm", **{Signal.GC_SECONDS_PER_SECOND: 0.2, Signal.CPU_CORES_USED: 0.6,
                                           Signal.REQUESTS_PER_SECOND: 10.0})
    c = _ceiling(traces, tmp_path, sig, speedup)
    assert c["cpu_speedup"] == speedup
    assert c["p50_ms"] == pytest.approx(cut_ms) and c["p99_ms"] == pytest.approx(cut_ms)
    assert c["p50_pct"] == pytest.approx(cut_ms) and c["mean_pct"] == pytest.approx(cut_ms)
    assert c["basis"]["gc_share"] == pytest.approx(0.2) and c["basis"]["cpu_share"] == pytest.approx(0.4)
    assert c["cpu_cost_pct"] == pytest.approx(100 * (1 - 1 / speedup))
    assert "fix_first_ms" not in c


def test_ceiling_tail_spreads_gc_by_each_requests_self_time(traces, tmp_path):
    """GC is 0.05 s/s in quiet phases and 0.5 in heavy ones; requests take 40 ms and 120 ms, all
    self time. Without CPU metrics GC explains its mean rate g of the time (~0.275), spread over
    requests by their self time: the p99 request (120 ms) loses 3x what a 40 ms one loses."""
    from tests.test_heuristics_runtime import T0, _phases

    steady(traces, "feed", "node", 720, 10, lambda t: 120.0 if ((t - T0) // 600) % 2 == 1 else 40.0)
    gc = series(lambda t: _phases(t - 1e-6, 0.05, 0.5), "sum by (pf_service) (rate(nodejs_gc_duration_seconds_sum[5m]))")
    c = _ceiling(traces, tmp_path, signals_for("feed", "node", **{Signal.GC_SECONDS_PER_SECOND: gc}))
    share = c["basis"]["gc_share"]
    assert share == pytest.approx(0.275, abs=0.02)
    assert c["p99_ms"] == pytest.approx(share * 120.0, rel=0.02)
    assert "cpu_cost_pct" not in c  # no CPU measured: no cost claim


def test_ceiling_beside_the_fix_first_saving(traces, tmp_path):
    """20 ms self + 80 ms of a database query, GC 0.1 s/s: a rewrite removes at most the 10 ms of
    GC; fixing the dominant database cause is worth what its findings estimate."""
    steady(traces, "orders", "jvm", 120, 10, 20, db_ms=80)
    ctxs = list(contexts(traces.table(tmp_path / "t.pb"),
                         signals_for("orders", "jvm", **{Signal.GC_SECONDS_PER_SECOND: 0.1})).values())
    (ctx,) = ctxs
    fs = [finding("PF-DB002", "database", 0.8, saving_ms=75.0, source="SELECT ...")]
    shares = category_shares(ctx.hotspot, fs + run_rules(ctx, Config()))
    res = [HotspotResult(ctx.hotspot.operation, ctx.hotspot.total_ms, 0.2, "database", shares,
                         fs + run_rules(ctx, Config()))]
    c = rewrite_ceiling(ctxs, res)
    assert c["mean_ms"] == pytest.approx(10.0) and c["mean_pct"] == pytest.approx(10.0)
    assert c["fix_first"] == {"category": "database", "rule": "PF-DB002", "mean_ms": 75.0, "pct": 75.0}
    assert (c["fix_first_ms"], c["fix_first_pct"]) == (75.0, 75.0)


def test_report_carries_the_ceiling_with_the_configured_speedup(traces, tmp_path):
    """`[rewrite] cpu_speedup = 4` in the config reaches each service's `rewrite_ceiling`."""
    from analyzer.pipeline import Inputs, analyze
    from analyzer.report_schema import validate_report

    steady(traces, "ledger", "jvm", 120, 10, 100)
    sig = signals_for("ledger", "jvm", **{Signal.GC_SECONDS_PER_SECOND: 0.2, Signal.CPU_CORES_USED: 0.6,
                                           Signal.REQUESTS_PER_SECOND: 10.0})
    rep = analyze(Inputs(table=traces.table(tmp_path / "t.pb"), signals=sig),
                  Config(sections={"rewrite": {"cpu_speedup": 4}}))
    validate_report(rep)
    (s,) = rep["services"]
    assert s["rewrite_ceiling"]["cpu_speedup"] == 4.0 and s["rewrite_ceiling"]["p50_ms"] == pytest.approx(50.0)
