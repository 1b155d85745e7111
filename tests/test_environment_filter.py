"""`deployment.environment` on spans, and the scheduled report's environment filter on traces.

The traces are real OpenTelemetry SDK spans of the N+1 orders workload (12 requests), recorded
twice: once in production, named as SDKs since semantic conventions 1.27 name it
(`deployment.environment.name`), once in staging under the older `deployment.environment`.
Both come from `OTEL_RESOURCE_ATTRIBUTES`, as a real deployment sets them. Every reader must
give each span the environment of the SDK resource it came from; `report` keeps production
unless told otherwise, and says in its first lines when the filter left nothing.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from analyzer.model.semconv import DEPLOYMENT_ENVIRONMENT
from analyzer.report_schema import validate_report
from collectors.otlp_traces import load_traces
from collectors.span_tables import mapping_from_pairs
from tests.test_same_traces_every_format import TABLE_COLUMNS, write_jaeger, write_zipkin
from tests.workloads import orders
from tests.workloads.recording import record, write_jsonl, write_proto_framed

ROOT = Path(__file__).resolve().parents[1]
REQUESTS = 12  # orders_n_plus_one's requests per recording


def _recorded_in(resource_attributes: str, db_path: Path) -> list[ReadableSpan]:
    """The workload's spans with OTEL_RESOURCE_ATTRIBUTES set as a deployment would set it."""
    before = os.environ.get("OTEL_RESOURCE_ATTRIBUTES")
    os.environ["OTEL_RESOURCE_ATTRIBUTES"] = resource_attributes
    try:
        return record(orders.orders_n_plus_one, db_path=db_path)
    finally:
        if before is None:
            del os.environ["OTEL_RESOURCE_ATTRIBUTES"]
        else:
            os.environ["OTEL_RESOURCE_ATTRIBUTES"] = before


def _environment(span: ReadableSpan) -> str:
    attrs = span.resource.attributes
    return next(str(attrs[k]) for k in DEPLOYMENT_ENVIRONMENT if attrs.get(k))


@pytest.fixture(scope="module")
def production(orders_db: Path) -> list[ReadableSpan]:
    return _recorded_in("deployment.environment.name=production", orders_db)


@pytest.fixture(scope="module")
def staging(orders_db: Path) -> list[ReadableSpan]:
    return _recorded_in("deployment.environment=staging", orders_db)


def _write_table(spans: list[ReadableSpan], path: Path) -> Path:
    """A warehouse export with an environment column beside the usual ones."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trace", "span", "parent", "svc", "op", "t0", "t1", "kind", "status", "attrs", "env"])
        for s in spans:
            w.writerow([f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}",
                        f"{s.parent.span_id:016x}" if s.parent else "", s.resource.attributes["service.name"], s.name,
                        s.start_time, s.end_time, f"SPAN_KIND_{s.kind.name}", f"STATUS_CODE_{s.status.status_code.name}",
                        json.dumps(dict(s.attributes or {})), _environment(s)])
    return path


def test_every_reader_gives_each_span_its_resource_environment(production, staging, tmp_path: Path) -> None:
    spans = production + staging
    truth = {s.context.span_id: _environment(s) for s in spans}
    assert set(truth.values()) == {"production", "staging"}
    files = {
        "otlp-json": (write_jsonl(spans, tmp_path / "t.otlp.jsonl"), None),
        "otlp-proto": (write_proto_framed(spans, tmp_path / "t.otlp.binpb"), None),
        "jaeger": (write_jaeger(spans, tmp_path / "jaeger.json"), None),
        "zipkin": (write_zipkin(spans, tmp_path / "zipkin.json"), None),
        "span-table": (_write_table(spans, tmp_path / "t.csv"), mapping_from_pairs(TABLE_COLUMNS + ",environment=env")),
    }
    for name, (path, mapping) in files.items():
        t = load_traces([str(path)], span_columns=mapping).table
        assert len(t) == len(spans), name
        got = {int(t.span_id[i]): t.environments[c] if c >= 0 else None for i, c in enumerate(t.environment.tolist())}
        assert got == truth, name
        # A code per resource, not a string per span.
        assert t.environment.dtype == np.int32 and sorted(t.environments) == ["production", "staging"], name


def _report(tmp_path: Path, traces: Path, *flags: str) -> tuple[subprocess.CompletedProcess, dict, str]:
    p = subprocess.run([sys.executable, "-m", "analyzer", "report", "--traces", str(traces), "--end", "now",
                        "--window", "1d", "--no-history", "--format", "json", "--format", "md",
                        "--output-dir", str(tmp_path / "out"), *flags],
                       capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert p.returncode in (0, 3), p.stderr
    (folder,) = (tmp_path / "out").iterdir()
    return p, json.loads((folder / "report.json").read_text()), (folder / "report.md").read_text()


def _entry_count(report: dict) -> int:
    return sum(h["count"] for s in report["services"] for h in s["hotspots"] if h["operation"].startswith("GET"))


def test_report_keeps_production_unless_staging_is_asked_for(production, staging, tmp_path: Path) -> None:
    both = write_jsonl(production + staging, tmp_path / "both.otlp.jsonl")
    _, report, markdown = _report(tmp_path / "default", both)
    # The header says what was left out, with the figures.
    assert (f"deployment.environment production: {len(production):,} of {len(production) + len(staging):,} "
            f"spans read kept (left out: {len(staging):,} staging)") in markdown.splitlines()[2]
    validate_report(report)
    f = report["environment_filter"]
    assert f["environments"] == ["production"]
    assert f["by_environment"] == {"production": len(production), "staging": len(staging)}
    assert (f["spans_read"], f["spans_kept"]) == (len(production) + len(staging), len(production))
    assert report["input"]["spans"] == len(production)
    assert _entry_count(report) == REQUESTS  # production's requests only
    assert not any(p["kind"] == "environment_not_found" for p in report["completeness"]["problems"])

    _, report, _ = _report(tmp_path / "both", both, "--environment", "production", "--environment", "staging")
    assert report["environment_filter"]["spans_kept"] == len(production) + len(staging)
    assert _entry_count(report) == 2 * REQUESTS

    _, report, _ = _report(tmp_path / "all", both, "--environment", "*")
    assert "environment_filter" not in report and _entry_count(report) == 2 * REQUESTS


def test_a_filter_that_matches_no_span_is_said_first_and_exits_3(staging, tmp_path: Path) -> None:
    only_staging = write_jsonl(staging, tmp_path / "staging.otlp.jsonl")
    p, report, markdown = _report(tmp_path, only_staging)
    assert p.returncode == 3
    validate_report(report)
    problem = report["completeness"]["problems"][0]
    assert problem["kind"] == "environment_not_found"
    assert "production" in problem["message"] and f"staging ({len(staging):,} spans)" in problem["message"]
    assert report["services"] == []
    assert "no span is from deployment.environment production" in p.stderr
    first_lines = "\n".join(markdown.splitlines()[:8])
    assert "no span is from deployment.environment production" in first_lines


def test_spans_without_an_environment_are_kept(orders_n_plus_one_jsonl: Path, tmp_path: Path) -> None:
    """As Prometheus series without the label are: a fleet that sets no environment is not emptied."""
    _, report, _ = _report(tmp_path, orders_n_plus_one_jsonl)
    f = report["environment_filter"]
    assert f["by_environment"] == {"": f["spans_read"]} and f["spans_kept"] == f["spans_read"] > 0
    assert _entry_count(report) == REQUESTS


def test_the_receiver_keeps_the_environment_of_what_it_captures(tmp_path: Path) -> None:
    """Spans sent by the SDK's OTLP/HTTP exporter to `--listen`'s receiver, read back from its capture."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from collectors.capture import Capture
    from collectors.receiver import OtlpReceiver, ReceiverConfig

    capture = Capture(tmp_path / "capture.binpb.gz")
    capture.start()
    with OtlpReceiver(capture, ReceiverConfig(http_port=0, grpc_port=0)) as r:
        for service, env in (("checkout", {"deployment.environment.name": "production"}),
                             ("checkout-canary", {"deployment.environment": "staging"}), ("batch", {})):
            provider = TracerProvider(resource=Resource.create({"service.name": service, **env}))
            provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{r.http_endpoint}/v1/traces")))
            with provider.get_tracer("test").start_as_current_span("GET /cart"):
                pass
            provider.shutdown()
    t = load_traces([str(capture.close().traces_path)]).table
    got = {t.services[s]: (t.environments[e] if e >= 0 else None) for s, e in zip(t.service.tolist(), t.environment.tolist())}
    assert got == {"checkout": "production", "checkout-canary": "staging", "batch": None}


def test_clickhouse_takes_the_filter_in_its_queries(production, staging, tmp_path: Path) -> None:
    """chDB holding both environments: the whole-window figures (computed in the store) count production only."""
    from chdb import session as chdb_session

    from benchmarks.otel_traces_table import create_table, load_otlp_jsonl

    both = write_jsonl(production + staging, tmp_path / "both.otlp.jsonl")
    store = tmp_path / "store"
    s = chdb_session.Session(str(store))
    try:
        create_table(s, "otel.otel_traces")
        load_otlp_jsonl(s, both, "otel.otel_traces")
    finally:
        s.close()
    p = subprocess.run([sys.executable, "-m", "analyzer", "report", "--clickhouse", f"chdb:{store}", "--end", "now",
                        "--window", "1d", "--no-history", "--format", "json", "--output-dir", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode in (0, 3), p.stderr
    (folder,) = (tmp_path / "out").iterdir()
    report = json.loads((folder / "report.json").read_text())
    pushdown = report["input"]["sources"][0]["pushdown"]
    assert pushdown["window_spans"] == len(production)
    assert _entry_count(report) == REQUESTS
    assert report["environment_filter"]["by_environment"] == {"production": report["environment_filter"]["spans_read"]}
    # An environment the store has no span of: the queries find nothing, and the first problem says what was asked.
    p = subprocess.run([sys.executable, "-m", "analyzer", "report", "--clickhouse", f"chdb:{store}", "--end", "now",
                        "--window", "1d", "--no-history", "--format", "json", "--output-dir", str(tmp_path / "qa"),
                        "--environment", "qa"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 3, p.stderr
    (folder,) = (tmp_path / "qa").iterdir()
    (problem,) = json.loads((folder / "report.json").read_text())["completeness"]["problems"]
    assert problem["kind"] == "no_spans_in_window"
    assert problem["message"].endswith("(deployment.environment qa, or none, was asked for)")

    # `analyze --environment` pushes it into the same queries; nothing in the store for it is exit 2.
    p = _analyze("--clickhouse", f"chdb:{store}", "--environment", "production", "--format", "json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["input"]["sources"][0]["pushdown"]["window_spans"] == len(production)
    assert _entry_count(report) == REQUESTS
    p = _analyze("--clickhouse", f"chdb:{store}", "--environment", "qa")
    assert p.returncode == 2
    assert "(deployment.environment qa, or none, was asked for)" in p.stderr and "--environment" in p.stderr


@pytest.mark.parametrize("known", [("deployment.environment.name",), ()])
def test_tempo_searches_only_the_environments_asked_for_when_it_knows_them(known: tuple[str, ...]) -> None:
    """The TraceQL of every search and of the count names the environments, under the attribute
    names this Tempo has values for; a Tempo with none is searched unfiltered (TraceQL has no
    "attribute absent", so a condition would drop every trace)."""
    from collectors.store_pull import StoreSettings
    from collectors.tempo import Tempo
    from tests.store_standins import StandIn, json_answer

    def route(req):  # a Tempo holding no trace in the window: only the queries matter here
        if req.path.startswith("/api/v2/search/tag/"):
            name = req.path.split("/")[5].removeprefix("resource.")
            return json_answer({"tagValues": [{"type": "string", "value": "production"}] if name in known else []})
        if req.path == "/api/search":
            return json_answer({"traces": []})
        return json_answer({"series": []})

    server = StandIn(route)
    try:
        tempo = Tempo(StoreSettings(url=server.url, environments=("production", "canary")))
        tempo.search(0, 3600 * 10**9, ["checkout"], 100)
        tempo.population(0, 3600 * 10**9)
    finally:
        server.close()
    search = next(r.query["q"] for r in server.requests if r.path == "/api/search")
    count = next(r.query["q"] for r in server.requests if r.path == "/api/metrics/query")
    if known:
        env = ('(resource.deployment.environment.name = "production" || '
               'resource.deployment.environment.name = "canary")')
        assert search == '{resource.service.name="checkout" && ' + env + "}"
        assert count.startswith("{ nestedSetParent = -1 && " + env + " }")
    else:
        assert search == '{resource.service.name="checkout"}'
        assert count.startswith("{ nestedSetParent = -1 }")


# --- analyze --environment: no filter unless asked, then the same filter as `report` --------------


def _analyze(*flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", "analyze", *flags], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_analyze_keeps_every_environment_unless_one_is_asked_for(production, staging, tmp_path: Path) -> None:
    """Production and staging of the same service in one capture: `analyze` mixes them only when
    not told which one the verdict is about, and its header says what the filter left out."""
    both = write_proto_framed(production + staging, tmp_path / "both.otlp.binpb")
    p = _analyze("--traces", str(both), "--format", "json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert "environment_filter" not in report and _entry_count(report) == 2 * REQUESTS

    p = _analyze("--traces", str(both), "--environment", "production", "--format", "json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    validate_report(report)
    assert report["environment_filter"] == {"environments": ["production"],
                                            "spans_read": len(production) + len(staging),
                                            "spans_kept": len(production),
                                            "by_environment": {"production": len(production), "staging": len(staging)}}
    assert report["input"]["spans"] == len(production)
    assert _entry_count(report) == REQUESTS  # production's requests only

    p = _analyze("--traces", str(both), "--environment", "production", "--format", "text")
    assert p.returncode == 0, p.stderr
    header = " ".join(" ".join(p.stdout.splitlines()[:3]).split())  # (the text report wraps at 80 columns)
    assert (f"deployment.environment production: {len(production):,} of {len(production) + len(staging):,} "
            f"spans read kept (left out: {len(staging):,} staging)") in header

    p = _analyze("--traces", str(both), "--environment", "staging", "--environment", "production", "--format", "json")
    assert json.loads(p.stdout)["environment_filter"]["spans_kept"] == len(production) + len(staging)
    p = _analyze("--traces", str(both), "--environment", "*", "--format", "json")
    assert "environment_filter" not in json.loads(p.stdout)


def test_analyze_with_an_environment_no_span_is_from_is_exit_2(production, staging, tmp_path: Path) -> None:
    both = write_jsonl(production + staging, tmp_path / "both.otlp.jsonl")
    out = tmp_path / "report.json"
    p = _analyze("--traces", str(both), "--environment", "prod", "--output", str(out))
    assert p.returncode == 2
    (line,) = p.stderr.strip().splitlines()
    assert "no span is from deployment.environment prod:" in line
    assert f"production ({len(production):,} spans)" in line and f"staging ({len(staging):,} spans)" in line
    assert not out.exists()


def test_environment_names_from_the_telemetry_reach_the_terminal_inert(tmp_path: Path) -> None:
    """A resource's environment is telemetry: the exit-2 line names it without its control
    characters (a window title change, a bell, a right-to-left override)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    hostile = "\x1b]0;owned\x07prod\u202euction"
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout", "deployment.environment.name": hostile}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("GET /cart", kind=SpanKind.SERVER):
        pass
    provider.shutdown()
    traces = write_jsonl(list(exporter.get_finished_spans()), tmp_path / "t.otlp.jsonl")
    p = _analyze("--traces", str(traces), "--environment", "production")
    assert p.returncode == 2
    (line,) = p.stderr.strip().splitlines()
    assert "no span is from deployment.environment production" in line and "owned" in line
    assert not any(c in line for c in "\x1b\x07\u202e")


@pytest.mark.prometheus
def test_analyze_asks_prometheus_for_the_environments_asked_for(prom_env) -> None:
    """The CPU a service used, from Prometheus: with `--environment production`, production's series
    and the one that names no environment (0.25 + 0.5 cores), not staging's 4 cores; with
    `--extra-matchers` the filter is added to the user's own matchers."""
    server, window = prom_env

    def cores(*flags: str) -> float:
        p = _analyze("--prometheus", server.url, "--service", "shop-env", "--start", str(window.start + 600),
                     "--end", str(window.end), "--format", "json", *flags)
        assert p.returncode == 0, p.stderr
        (service,) = json.loads(p.stdout)["services"]
        used = [v for v in service["timeseries"]["cpu_cores_used"] if v is not None]
        return sum(used) / len(used)

    assert cores() == pytest.approx(4.75, rel=1e-3)
    assert cores("--environment", "production") == pytest.approx(0.75, rel=1e-3)
    assert cores("--environment", "production", "--extra-matchers", 'instance="unlabelled"') == pytest.approx(0.5, rel=1e-3)
