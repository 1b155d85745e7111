"""The fix-first list never promises the same milliseconds twice."""

from __future__ import annotations

from pathlib import Path

from analyzer.config import Config
from analyzer.pipeline import Inputs, analyze
from collectors.otlp_traces import load_traces

MIXED = Path(__file__).resolve().parents[1] / "examples" / "mixed.otlp.jsonl"


def test_n_plus_one_and_its_slow_statement_are_listed_once():
    """examples/mixed: GET /orders/report repeats one slow statement 20x (N+1). PF-DB001 (batch the
    loop) and PF-DB002 (make the statement fast) both fire on that same statement; the fix-first
    list keeps only the larger saving."""
    loaded = load_traces([str(MIXED)])
    report = analyze(Inputs(loaded.table, loaded.sources, loaded.repairs), Config())
    (orders,) = [s for s in report["services"] if s["service"] == "orders"]
    (hot,) = [h for h in orders["hotspots"] if h["operation"] == "GET /orders/report"]
    fired = {f["rule"]: f for f in hot["findings"]}
    assert {"PF-DB001", "PF-DB002"} <= set(fired)
    listed = [i for i in orders["fix_first"] if i["operation"] == "GET /orders/report" and i["rule"].startswith("PF-DB")]
    assert [i["rule"] for i in listed] == ["PF-DB001"]
    assert fired["PF-DB001"]["saving_ms"] >= fired["PF-DB002"]["saving_ms"]
