"""Span tables (collectors/span_tables.py) on the Nezha trace CSVs and their labelled faults.

The Nezha files (../shared/data/nezha, SOURCES.md §1) are real Online Boutique and Train Ticket
traces flattened to CSV, with no span kind column and pod names instead of services. Each fault
below is the one the dataset's fault list labels, and the fact checked is the one SOURCES.md
computed from the file.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analyzer.config import Config
from analyzer.model.spans import Kind, SpanTable
from analyzer.pipeline import Inputs, analyze
from collectors.otlp_traces import load_traces
from collectors.span_tables import KINDS_NOTICE
from tests.shared_data import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
NEZHA = SHARED_DATA / "nezha"
OB_BASELINE = NEZHA / "construct_data/2022-08-23/trace/17_00_trace.csv"
OB_CART_DELAY = NEZHA / "rca_data/2022-08-22/trace/04_28_trace.csv"
OB_CATALOG_CPU = NEZHA / "rca_data/2022-08-22/trace/06_36_trace.csv"
TT_BASELINE = NEZHA / "construct_data/2023-01-30/trace/11_39_trace.csv"
TT_CONTACTS_DELAY = NEZHA / "rca_data/2023-01-30/trace/11_52_trace.csv"
ALL = sorted(NEZHA.glob("*/*/trace/*_trace.csv"))


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def _report(path: Path) -> dict:
    loaded = load_traces([str(path)])
    return analyze(Inputs(loaded.table, loaded.sources, loaded.repairs), Config())


def _hotspot(report: dict, service: str, operation: str) -> dict:
    (s,) = [s for s in report["services"] if s["service"] == service]
    (h,) = [h for h in s["hotspots"] if h["operation"] == operation]
    return h


def _gaps_into(t: SpanTable, callee: str) -> dict[str, float]:
    """p50 of (client duration - callee server duration) in ms, per calling service, over the calls
    whose SERVER child is in `callee`."""
    svc = t.services.index(callee)
    servers = np.flatnonzero((t.service == svc) & (t.kind == Kind.SERVER) & (t.parent >= 0))
    clients = t.parent[servers]
    callers = t.service[clients]
    gap = ((t.end[clients] - t.start[clients]) - (t.end[servers] - t.start[servers])) / 1e6
    return {t.services[c]: float(np.median(gap[callers == c])) for c in np.unique(callers) if t.services[c] != callee}


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_nezha_csv_reads_with_its_row_and_trace_counts(path: Path) -> None:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    loaded = load_traces([str(path)])
    (stats,) = loaded.sources
    assert stats.format == "span-table-csv" and not stats.skipped
    assert len(loaded.table) == len(rows)
    assert loaded.table.n_traces == len({r["TraceID"] for r in rows})
    assert loaded.repairs.orphans == 0 and loaded.repairs.duplicate_spans == 0
    # Services are the Deployment names, not pods: `frontend-579b9bff58-t2dbm` -> `frontend`.
    assert {p.rsplit("-", 2)[0] for p in {r["PodName"] for r in rows}} == set(loaded.table.services)
    assert KINDS_NOTICE in stats.notices


def test_sizes_stated_in_sources_md() -> None:
    for path, spans, traces in ((OB_BASELINE, 22_969, 502), (TT_BASELINE, 4_595, 62)):
        t = load_traces([str(path)]).table
        assert (len(t), t.n_traces) == (spans, traces)


def test_kinds_inferred_from_the_tree() -> None:
    t = load_traces([str(OB_BASELINE)]).table
    name = {n: i for i, n in enumerate(t.names)}
    rows = lambda svc, op: (t.service == t.services.index(svc)) & (t.name == name[op])  # noqa: E731
    # frontend's root span is an entry; its call to cart is a CLIENT whose child is cart's SERVER.
    assert (t.kind[rows("frontend", "hipstershop.Frontend/Recv.")] == Kind.SERVER).all()
    assert (t.kind[rows("frontend", "hipstershop.CartService/GetCart")] == Kind.CLIENT).all()
    assert (t.kind[rows("cartservice", "hipstershop.CartService/GetCart")] == Kind.SERVER).all()
    # productcatalog's SQL driver spans are database calls (named like SQL), not self time.
    assert (t.kind[rows("productcatalogservice", "sql.conn.query")] == Kind.CLIENT).all()


def test_network_delay_on_cart_shows_as_a_gap_on_every_call_into_cart() -> None:
    """04_28: network_delay injected on cartservice. SOURCES.md: frontend->cart client p50 249.9 ms
    vs server 1.6 (gap 248); checkout->cart gap 249.6; the baseline's gap is a few ms."""
    before = _gaps_into(load_traces([str(OB_BASELINE)]).table, "cartservice")
    during = _gaps_into(load_traces([str(OB_CART_DELAY)]).table, "cartservice")
    assert set(during) == {"frontend", "checkoutservice"}
    assert all(g > 200 for g in during.values()), during
    assert all(g < 10 for g in before.values()), before
    report = _report(OB_CART_DELAY)
    hot = _hotspot(report, "frontend", "hipstershop.Frontend/Recv.")
    (cart,) = [f for f in hot["findings"] if f["rule"] == "PF-NET001" and f["message"].startswith(
        "Slow downstream: waiting on cartservice")]
    ev = {e["signal"]: e["value"] for e in cart["evidence"]}
    assert ev["gap_time_per_request"] > 10 * ev["downstream_server_time_per_request"]
    assert "gap dominates" in cart["remedy"]
    # cart's own requests stay fast: the delay is on the wire, not in cart.
    assert _hotspot(report, "cartservice", "hipstershop.CartService/GetCart")["p50_ms"] < 5


def test_train_ticket_contacts_delay_is_pinned_on_contacts_not_on_another_http_get() -> None:
    """11_52: network_delay on ts-contacts-service. Its callers' CLIENT spans are all named `HTTP GET`
    with no peer attribute, and the same callers make `HTTP GET`s to ts-security-service: the
    callee's SERVER span tells them apart. SOURCES.md: preserve->contacts client p50 2,013 ms vs
    contacts server 16 ms."""
    report = _report(TT_CONTACTS_DELAY)
    for caller, op in (("ts-preserve-service", "/api/v1/preserveservice/preserve"),
                       ("ts-preserve-other-service", "/api/v1/preserveotherservice/preserveOther")):
        hot = _hotspot(report, caller, op)
        slow = [f for f in hot["findings"] if f["rule"] == "PF-NET001"]
        top = max(slow, key=lambda f: f["share"])
        assert top["message"].startswith("Slow downstream: waiting on ts-contacts-service (HTTP GET)"), top["message"]
        ev = {e["signal"]: e["value"] for e in top["evidence"]}
        assert ev["gap_time_per_request"] > 1500 and ev["downstream_server_time_per_request"] < 50
        assert not any("ts-security-service" in f["message"] and f["share"] > 0.3 for f in slow)
    assert _gaps_into(load_traces([str(TT_BASELINE)]).table, "ts-contacts-service")["ts-preserve-service"] < 10


def test_cpu_fault_on_productcatalog_is_not_classified_as_database() -> None:
    """06_36: cpu_consumed on productcatalogservice. SOURCES.md: ListProducts server p50 210.7 ms
    (baseline 2.9) while sql.conn.query stays ~1 ms: CPU, not database."""
    report = _report(OB_CATALOG_CPU)
    hot = _hotspot(report, "productcatalogservice", "hipstershop.ProductCatalogService/ListProducts")
    assert hot["p50_ms"] > 100
    assert hot["category"] != "database"
    assert hot["breakdown"]["database"] < 0.1 * hot["breakdown"]["self"]
    assert not [f for f in hot["findings"] if f["category"] == "database"]
    (svc,) = [s for s in report["services"] if s["service"] == "productcatalogservice"]
    assert svc["verdict"]["cause"] != "database"


def test_parquet_with_a_column_mapping_on_the_command_line(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="pyarrow is in the test extra; CI installs it")
    import pyarrow.parquet as pq

    with open(TT_CONTACTS_DELAY, newline="") as f:
        rows = list(csv.DictReader(f))
    table = pa.table({
        "trace": [r["TraceID"] for r in rows], "span": [r["SpanID"] for r in rows],
        "parent": ["" if r["ParentID"] == "root" else r["ParentID"] for r in rows],
        "pod": [r["PodName"] for r in rows], "operation": [r["OperationName"] for r in rows],
        "start_ns": [int(r["StartTimeUnixNano"]) for r in rows], "end_ns": [int(r["EndTimeUnixNano"]) for r in rows],
    })
    path = tmp_path / "spans.parquet"
    pq.write_table(table, path)
    mapping = ("trace_id=trace,span_id=span,parent_id=parent,service=pod,name=operation,start=start_ns,end=end_ns,"
               "service_from=pod")
    p = run("analyze", "--traces", str(path), "--span-columns", mapping, "--format", "json")
    assert p.returncode == 0, p.stderr
    assert "kinds were not in the table" in p.stderr
    got = json.loads(p.stdout)
    want = json.loads(run("analyze", "--traces", str(TT_CONTACTS_DELAY), "--format", "json").stdout)
    assert got["input"]["spans"] == len(rows) and got["input"]["sources"][0]["format"] == "span-table-parquet"
    assert got["services"] == want["services"]


def test_a_table_of_unknown_layout_asks_for_the_mapping_and_the_config_gives_it(tmp_path: Path) -> None:
    path = tmp_path / "spans.csv"
    with open(TT_BASELINE, newline="") as f, open(path, "w", newline="") as out:
        reader, writer = csv.reader(f), csv.writer(out)
        next(reader)
        writer.writerow(["tid", "sid", "pid", "pod", "op", "t0", "t1", "dur_us"])
        writer.writerows(reader)
    p = run("analyze", "--traces", str(path))
    assert p.returncode == 2 and "--span-columns" in p.stderr and "tid, sid, pid" in p.stderr
    config = tmp_path / "profile-first.toml"
    config.write_text('[sources.span_table]\ntrace_id = "tid"\nspan_id = "sid"\nparent_id = "pid"\nservice = "pod"\n'
                      'name = "op"\nstart = "t0"\nduration = "dur_us"\nduration_unit = "us"\nservice_from = "pod"\n')
    p = run("analyze", "--traces", str(path), "--config", str(config), "--format", "json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["input"]["spans"] == 4_595
