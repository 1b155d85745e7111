"""The same traces through OTLP, Jaeger JSON, Zipkin JSON and a span table give the same hot spots
and verdicts: every source ends in the same SpanTable.

The traces are real OpenTelemetry SDK spans from two recorded workloads (an N+1 orders endpoint
on SQLite, a gateway calling three HTTP services one after another). They are written as the
Collector's OTLP/JSON, as Zipkin v2 JSON by the SDK's own Zipkin encoder, as Jaeger JSON (the
query service's `/api/traces` shape: `span.kind` and typed tags, resource attributes as process
tags), and as a CSV span table with kind, status and attributes columns. Jaeger and Zipkin keep
microseconds, so durations agree to the microsecond.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from opentelemetry.exporter.zipkin.json.v2 import JsonV2Encoder
from opentelemetry.exporter.zipkin.node_endpoint import NodeEndpoint
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tests.workloads import network
from tests.workloads.recording import record, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "analyzer", "analyze", *args, "--format", "json"], capture_output=True,
                       text=True, cwd=ROOT, timeout=180)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _service(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


def write_zipkin(spans: list[ReadableSpan], path: Path) -> Path:
    """One Zipkin v2 JSON array, each service's spans encoded by the SDK's JsonV2Encoder."""
    by_service: dict[str, list[ReadableSpan]] = defaultdict(list)
    for s in spans:
        by_service[_service(s)].append(s)
    out = []
    for service, group in by_service.items():
        endpoint = NodeEndpoint()
        endpoint.service_name = service
        out += json.loads(JsonV2Encoder().serialize(group, endpoint))
    path.write_text(json.dumps(out))
    return path


def _tag(key: str, value: object) -> dict:
    kind = {bool: "bool", int: "int64", float: "float64"}.get(type(value), "string")
    return {"key": key, "type": kind, "value": value if kind != "string" else str(value)}


def write_jaeger(spans: list[ReadableSpan], path: Path) -> Path:
    """`{"data": [trace, ...]}` as Jaeger's query service answers /api/traces."""
    traces: dict[int, list[ReadableSpan]] = defaultdict(list)
    for s in spans:
        traces[s.context.trace_id].append(s)
    data = []
    for tid, group in traces.items():
        processes: dict[str, str] = {}
        jspans = []
        for s in group:
            pid = processes.setdefault(_service(s), f"p{len(processes) + 1}")
            tags = [_tag(k, v) for k, v in (s.attributes or {}).items()]
            if s.kind != SpanKind.INTERNAL:
                tags.append(_tag("span.kind", s.kind.name.lower()))
            if s.status.status_code != StatusCode.UNSET:
                tags.append(_tag("otel.status_code", s.status.status_code.name))
            jspans.append({
                "traceID": f"{tid:032x}", "spanID": f"{s.context.span_id:016x}", "operationName": s.name, "flags": 1,
                "references": [{"refType": "CHILD_OF", "traceID": f"{tid:032x}", "spanID": f"{s.parent.span_id:016x}"}]
                if s.parent else [],
                "startTime": s.start_time // 1000, "duration": (s.end_time - s.start_time) // 1000, "tags": tags,
                "logs": [], "processID": pid, "warnings": None})
        resource = {_service(s): s.resource.attributes for s in group}
        data.append({"traceID": f"{tid:032x}", "spans": jspans, "warnings": None, "processes": {
            pid: {"serviceName": svc, "tags": [_tag(k, v) for k, v in resource[svc].items() if k != "service.name"]}
            for svc, pid in processes.items()}})
    path.write_text(json.dumps({"data": data, "total": len(data), "limit": 0, "offset": 0, "errors": None}))
    return path


def write_table(spans: list[ReadableSpan], path: Path) -> Path:
    """One span per row, as a warehouse exports them: ids, service, name, ns times, kind, status, attributes."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trace", "span", "parent", "svc", "op", "t0", "t1", "kind", "status", "attrs"])
        for s in spans:
            w.writerow([f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}",
                        f"{s.parent.span_id:016x}" if s.parent else "", _service(s), s.name, s.start_time, s.end_time,
                        f"SPAN_KIND_{s.kind.name}", f"STATUS_CODE_{s.status.status_code.name}",
                        json.dumps(dict(s.attributes or {}))])
    return path


TABLE_COLUMNS = ("trace_id=trace,span_id=span,parent_id=parent,service=svc,name=op,start=t0,end=t1,kind=kind,"
                 "status=status,attributes=attrs")


@pytest.fixture(scope="module")
def spans(orders_n_plus_one_spans) -> list[ReadableSpan]:
    return list(orders_n_plus_one_spans) + list(record(network.gateway_sequential))


def _summary(report: dict) -> list[tuple]:
    return [(s["service"], s["verdict"]["rust_rewrite"], s["verdict"]["cause"],
             [(h["operation"], h["category"], h["count"], sorted({f["rule"] for f in h["findings"]}))
              for h in s["hotspots"]]) for s in report["services"]]


def _p50s(report: dict) -> list[float]:
    return [h["p50_ms"] for s in report["services"] for h in s["hotspots"]]


def test_otlp_jaeger_zipkin_and_a_span_table_agree(spans, tmp_path: Path) -> None:
    otlp = run("--traces", str(write_jsonl(spans, tmp_path / "spans.otlp.jsonl")))
    jaeger = run("--traces", str(write_jaeger(spans, tmp_path / "jaeger.json")))
    zipkin = run("--traces", str(write_zipkin(spans, tmp_path / "zipkin.json")))
    table = run("--traces", str(write_table(spans, tmp_path / "spans.csv")), "--span-columns", TABLE_COLUMNS)
    assert [r["input"]["sources"][0]["format"] for r in (otlp, jaeger, zipkin, table)] == [
        "otlp-json-lines", "jaeger-json", "zipkin-v2-json", "span-table-csv"]
    assert {r["input"]["spans"] for r in (otlp, jaeger, zipkin, table)} == {len(spans)}
    want = _summary(otlp)
    # The workloads' verdicts: N+1 queries (database) and a sequential call chain (network).
    causes = {s[0]: s[2] for s in want}
    assert causes["orders"] == "database" and causes["gateway"] == "network"
    for name, got in (("jaeger", jaeger), ("zipkin", zipkin), ("table", table)):
        assert _summary(got) == want, name
        assert _p50s(got) == pytest.approx(_p50s(otlp), abs=0.005), name  # microseconds apart at most
    # Runtimes travel with the resource attributes where the format carries them.
    assert {s["runtime"] for s in jaeger["services"]} == {s["runtime"] for s in otlp["services"]} == {"python"}
    assert {s["runtime"] for s in zipkin["services"]} == {"python"}
