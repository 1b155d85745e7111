"""Trace files in the formats other tools write, read from their content (collectors/trace_json.py).

Real data: the Zipkin test traces and the Jaeger UI ride-share trace in ../shared/data (see
SOURCES.md), and spans recorded with the real OpenTelemetry SDK, written by the SDK's own
console exporter, Zipkin JSON encoder and protobuf's JSON mapping.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf.json_format import MessageToJson
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from analyzer.config import Config
from analyzer.model.spans import Kind, SpanClass
from analyzer.pipeline import Inputs, analyze
from collectors.otlp_files import InputError
from collectors.otlp_json import to_otlp_dict
from collectors.otlp_traces import load_traces
from tests.shared_data import SHARED_DATA
from tests.workloads.recording import encode, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
DATA = SHARED_DATA
ZIPKIN = DATA / "zipkin-lens-testdata"
RIDESHARE = DATA / "jaeger-ui-rideshare" / "testTrace.json"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def _columns(t):
    """A table's spans as comparable tuples (ids, service, name, kind, times)."""
    return sorted((t.trace_id_hex(int(t.trace[r])), t.span_id_hex(r), int(t.parent_id[r]), t.services[t.service[r]],
                   t.names[t.name[r]], int(t.kind[r]), int(t.start[r]), int(t.end[r]), int(t.status[r]),
                   int(t.span_class[r])) for r in range(len(t)))


# ---- Zipkin v2 -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.name for p in ZIPKIN.glob("*.json")))
def test_every_zipkin_sample_reads_with_its_span_count(name: str) -> None:
    entries = json.loads((ZIPKIN / name).read_text())
    loaded = load_traces([str(ZIPKIN / name)])
    (stats,) = loaded.sources
    assert stats.format == "zipkin-v2-json"
    assert not stats.skipped
    # Every span entry of the file is a span of the table, or a fragment merged into one.
    assert len(loaded.table) + stats.repaired.get("merged_fragments", 0) == len(entries)
    assert loaded.repairs.duplicate_spans == 0  # shared ids were split, not dropped as duplicates
    assert loaded.table.n_traces == len({e["traceId"] for e in entries})


def test_zipkin_shared_span_becomes_a_client_and_its_server_child() -> None:
    t = load_traces([str(ZIPKIN / "yelp.json")]).table
    # mobile_api calls spectre `get`; both halves carry span id 7a778764a0d0b594 in the file.
    (client,) = [r for r in range(len(t)) if t.span_id_hex(r) == "7a778764a0d0b594"]
    assert t.services[t.service[client]] == "mobile_api" and t.kind[client] == Kind.CLIENT
    (server,) = np.flatnonzero(t.parent == client)
    assert t.services[t.service[server]] == "spectre" and t.kind[server] == Kind.SERVER
    # mobile_api's own work under the shared id f5f268651b2a2b34 hangs under its server half.
    (yelp_client,) = [r for r in range(len(t)) if t.span_id_hex(r) == "f5f268651b2a2b34"]
    (mobile_server,) = np.flatnonzero(t.parent == yelp_client)
    assert t.services[t.service[mobile_server]] == "mobile_api"
    assert {t.services[t.service[r]] for r in np.flatnonzero(t.parent == mobile_server)} == {"mobile_api"}
    assert len(np.flatnonzero(t.parent == mobile_server)) == 4  # get_multi, set, get, post


def test_zipkin_smartthings_sql_and_cassandra_tags_are_database_calls() -> None:
    t = load_traces([str(ZIPKIN / "smartthings-mobile-web-install.json")]).table
    entries = json.loads((ZIPKIN / "smartthings-mobile-web-install.json").read_text())
    db_ids = {e["id"] for e in entries if {"sql.query", "cassandra.query"} & set(e.get("tags") or {})}
    db_rows = np.flatnonzero(t.span_class == SpanClass.DATABASE)
    assert {t.span_id_hex(r) for r in db_rows} == db_ids
    # SOURCES.md: Cassandra/SQL spans totalling 0.89 s, a small part of a 301.7 s trace.
    assert len(db_ids) > 250
    assert float((t.end[db_rows] - t.start[db_rows]).sum()) / 1e9 == pytest.approx(0.89, abs=0.01)


def test_zipkin_p6spy_request_is_not_classed_as_database() -> None:
    """SOURCES.md: `http:/book` takes 252 ms, its 4 SQL spans 11.6 ms: ~95 % is not database."""
    loaded = load_traces([str(ZIPKIN / "simple-db-p6.json")])
    report = analyze(Inputs(loaded.table, loaded.sources, loaded.repairs), Config())
    (hot,) = [h for s in report["services"] for h in s["hotspots"] if h["operation"] == "http:/book"]
    assert hot["p50_ms"] == pytest.approx(252.0, abs=0.1)
    assert hot["breakdown"]["database"] == pytest.approx(11.6, abs=0.3)
    assert hot["category"] != "database"


def test_zipkin_clock_skew_server_before_its_client_is_fitted_inside_it() -> None:
    """skew.json: serviceb's SERVER span starts 62 ms before servicea's CLIENT parent."""
    loaded = load_traces([str(ZIPKIN / "skew.json")])
    report = analyze(Inputs(loaded.table, loaded.sources, loaded.repairs), Config())
    (a,) = [s for s in report["services"] if s["service"] == "servicea"]
    hot = a["hotspots"][0]
    assert hot["remote_detail"]["server"] > 0 and hot["remote_detail"]["gap"] >= 0
    parts = hot["breakdown"]
    total = parts["self"] + parts["database"] + parts["cache"] + parts["remote"] + parts["messaging"]
    assert total == pytest.approx(hot["p50_ms"], abs=0.01)


# ---- Jaeger ----------------------------------------------------------------------------------

def test_jaeger_ui_rideshare_trace_keeps_its_facts() -> None:
    """SOURCES.md: OrderVehicle 1,181.6 ms -> HTTP GET 968.3 -> BikeHandler 967.1 -> FindNearestVehicle
    966.3 ms with no children; 213 ms of the load generator's time is before its HTTP GET starts."""
    loaded = load_traces([str(RIDESHARE)])
    t = loaded.table
    assert loaded.sources[0].format == "jaeger-json" and len(t) == 4
    by_name = {t.names[t.name[r]]: r for r in range(len(t))}
    assert t.kind[by_name["HTTP GET"]] == Kind.CLIENT and t.kind[by_name["BikeHandler"]] == Kind.SERVER
    assert t.parent[by_name["FindNearestVehicle"]] == by_name["BikeHandler"]
    assert t.peers[t.peer[by_name["HTTP GET"]]] == "ap-south:5000"  # from http.url
    report = analyze(Inputs(t, loaded.sources, loaded.repairs), Config())
    hots = {h["operation"]: h for s in report["services"] for h in s["hotspots"]}
    assert hots["OrderVehicle"]["p50_ms"] == pytest.approx(1181.6, abs=0.1)
    assert hots["OrderVehicle"]["breakdown"]["self"] == pytest.approx(213.3, abs=0.5)
    assert hots["OrderVehicle"]["remote_detail"]["server"] == pytest.approx(967.1, abs=0.1)
    # A busy loop with no metrics: all self time, and no cause claimed without CPU metrics.
    assert hots["BikeHandler"]["breakdown"]["self"] == pytest.approx(967.1, abs=0.1)
    (ride,) = [s for s in report["services"] if s["service"] == "ride-sharing-app"]
    assert ride["verdict"]["rust_rewrite"] == "insufficient_evidence"


def test_jaeger_api_answer_with_several_traces(tmp_path: Path) -> None:
    trace = json.loads(RIDESHARE.read_text())["data"]
    second = json.loads(json.dumps(trace).replace(trace["traceID"], "0" * 16 + trace["traceID"][16:]))
    path = tmp_path / "jaeger-api.json"
    path.write_text(json.dumps({"data": [trace, second], "total": 2, "limit": 0, "offset": 0, "errors": None}))
    t = load_traces([str(path)]).table
    assert len(t) == 8 and t.n_traces == 2


# ---- OTLP shapes from SDK spans ----------------------------------------------------------------

@pytest.fixture(scope="module")
def sdk_spans():
    """A SERVER span with a database CLIENT span and an erroring INTERNAL one, from the real SDK."""
    out = io.StringIO()
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "checkout"}))
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out)))
    tracer = provider.get_tracer("tests.formats")
    for _ in range(3):
        with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER):
            with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT,
                                              attributes={"db.system": "sqlite", "db.statement": "SELECT 1"}):
                pass
            with tracer.start_as_current_span("render") as s:
                s.set_status(Status(StatusCode.ERROR))
    spans = memory.get_finished_spans()
    provider.shutdown()
    return spans, out.getvalue()


def test_wrapped_and_base64_otlp_read_like_plain_otlp(sdk_spans, tmp_path: Path) -> None:
    spans, _ = sdk_spans
    plain = load_traces([str(write_jsonl(spans, tmp_path / "plain.jsonl"))]).table
    doc = to_otlp_dict(encode(spans))
    shapes = {
        "tempo-json": {"batches": doc["resourceSpans"]},
        "tempo-v2-json": {"trace": doc},
        "jaeger-v3-json": {"result": doc},
    }
    for fmt, wrapped in shapes.items():
        path = tmp_path / f"{fmt}.json"
        path.write_text(json.dumps(wrapped))
        loaded = load_traces([str(path)])
        assert loaded.sources[0].format == fmt
        assert _columns(loaded.table) == _columns(plain), fmt
    # Jaeger v3 streams one {"result": ...} object per line.
    lines = tmp_path / "v3-stream.json"
    lines.write_text("".join(json.dumps({"result": to_otlp_dict(encode([s]))}) + "\n" for s in spans))
    assert _columns(load_traces([str(lines)]).table) == _columns(plain)
    # protobuf's own JSON mapping: base64 ids, enum names; read, and said.
    b64 = tmp_path / "message-to-json.json"
    b64.write_text(MessageToJson(encode(spans)))
    loaded = load_traces([str(b64)])
    assert _columns(loaded.table) == _columns(plain)
    assert any("base64" in n for n in loaded.sources[0].notices)


def test_base64_ids_are_read_and_said_on_stderr(sdk_spans, tmp_path: Path) -> None:
    spans, _ = sdk_spans
    path = tmp_path / "b64.json"
    path.write_text(MessageToJson(encode(spans)))
    p = run("analyze", "--traces", str(path), "--format", "json")
    assert p.returncode == 0, p.stderr
    assert "ids were base64" in p.stderr
    assert json.loads(p.stdout)["input"]["spans"] == len(spans)


def test_console_exporter_output_is_read_and_named(sdk_spans, tmp_path: Path) -> None:
    spans, console = sdk_spans
    path = tmp_path / "console.txt"
    path.write_text(console)
    loaded = load_traces([str(path)])
    assert loaded.sources[0].format == "otel-sdk-console"
    got = _columns(loaded.table)
    want = _columns(load_traces([str(write_jsonl(spans, tmp_path / "plain.jsonl"))]).table)
    # Same spans; the console prints times to the microsecond only.
    assert [g[:6] + g[8:] for g in got] == [w[:6] + w[8:] for w in want]
    assert all(abs(g[6] - w[6]) < 1000 and abs(g[7] - w[7]) < 1000 for g, w in zip(got, want))
    p = run("analyze", "--traces", str(path), "--format", "json")
    assert p.returncode == 0, p.stderr
    assert "console exporter" in p.stderr and "OTEL_TRACES_EXPORTER=otlp" in p.stderr


# ---- refusals ---------------------------------------------------------------------------------

@pytest.mark.parametrize("content,says", [
    ([{"traceId": "a", "id": "b", "annotations": [], "binaryAnnotations": []}], "Zipkin v1 JSON"),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "--prometheus"),
    ({"traceEvents": []}, "Chrome trace-event"),
    ({"data": {"services": []}}, "Jaeger"),
    ({"spans": []}, "Jaeger JSON, Zipkin v2 JSON"),
])
def test_unreadable_json_names_what_it_looks_like(tmp_path: Path, content: object, says: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InputError, match=says.replace(".", r"\.").replace("(", r"\(")):
        load_traces([str(path)])


def test_a_directory_of_unreadable_files_keeps_the_per_file_reason(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"v1-{i}.json").write_text(json.dumps([{"traceId": "a", "id": "b", "binaryAnnotations": []}]))
    p = run("analyze", "--traces", str(tmp_path))
    assert p.returncode == 2
    assert "no spans could be read" in p.stderr and "Zipkin v1 JSON" in p.stderr and "/api/v2/trace" in p.stderr
    assert "Traceback" not in p.stderr


def test_a_directory_of_zipkin_files_reads_them_all(tmp_path: Path) -> None:
    for name in ("ascend.json", "yelp.json", "skew.json"):
        (tmp_path / name).write_bytes((ZIPKIN / name).read_bytes())
    p = run("analyze", "--traces", str(tmp_path), "--format", "json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["input"]["spans"] == 8 + 16 + 4
    assert {s["format"] for s in report["input"]["sources"]} == {"zipkin-v2-json"}
