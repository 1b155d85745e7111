"""Stand-in Tempo, Jaeger and Zipkin query APIs on loopback, serving real traces in each store's shape.

No Tempo, Jaeger or Zipkin server can be installed here, so these serve recorded data the way
the stores' HTTP APIs answer (shapes: ../shared/docs/trace-stores.md): the Nezha Train Ticket and
Online Boutique traces (which came out of a real Tempo) and the Zipkin test traces. They honour
the window and `limit` parameters, so a search that comes back full must be split, and can be told
to fail: a 503 before answering, a slow answer, a redirect to another host, a tenant header
required. Every request is recorded with its headers.
"""

from __future__ import annotations

import base64
import csv
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from google.protobuf.json_format import ParseDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class StandIn:
    """A server on 127.0.0.1; `route(request) -> (status, headers, body)` answers."""

    route: Callable[[Request], Answer]
    requests: list[Request] = field(default_factory=list)
    fail_first: dict[str, int] = field(default_factory=dict)  # path prefix -> 503s before answering
    delay_s: dict[str, float] = field(default_factory=dict)  # path prefix -> seconds before answering

    def __post_init__(self) -> None:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                req = Request(parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()},
                              {k.lower(): v for k, v in self.headers.items()})
                standin.requests.append(req)
                status, headers, body = standin._answer(req)
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _answer(self, req: Request) -> Answer:
        for prefix, n in list(self.fail_first.items()):
            if req.path.startswith(prefix) and n > 0:
                self.fail_first[prefix] = n - 1
                return 503, {"Content-Type": "text/plain"}, b"overloaded, try again"
        for prefix, s in self.delay_s.items():
            if req.path.startswith(prefix):
                time.sleep(s)
        return self.route(req)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def json_answer(obj: object, status: int = 200) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()


# ---- data: the Nezha CSVs as the traces Tempo stored ---------------------------------------

@dataclass
class Span:
    trace: str
    span: str
    parent: str
    service: str
    name: str
    start_ns: int
    end_ns: int
    kind: int  # OTLP: 2 server, 3 client, 1 internal


def nezha_spans(path: Path) -> dict[str, list[Span]]:
    """The file's spans by trace id. Kinds by the dataset's documented rule (SOURCES.md): a
    cross-service parent->child pair is client->server; roots are servers; services are pod names
    without their last two parts."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    service = {(r["TraceID"], r["SpanID"]): r["PodName"].rsplit("-", 2)[0] for r in rows}
    out: dict[str, list[Span]] = {}
    callers = set()
    spans = []
    for r in rows:
        parent = "" if r["ParentID"] == "root" else r["ParentID"]
        svc = service[(r["TraceID"], r["SpanID"])]
        parent_svc = service.get((r["TraceID"], parent))
        kind = 2 if not parent or parent_svc != svc else 1
        if parent and parent_svc is not None and parent_svc != svc:
            callers.add((r["TraceID"], parent))
        spans.append(Span(r["TraceID"], r["SpanID"], parent, svc, r["OperationName"], int(r["StartTimeUnixNano"]),
                          int(r["EndTimeUnixNano"]), kind))
    for s in spans:
        if s.kind == 1 and (s.trace, s.span) in callers:
            s.kind = 3
        out.setdefault(s.trace, []).append(s)
    return out


def otlp_request(spans: list[Span]) -> dict:
    """OTLP/JSON ExportTraceServiceRequest (hex ids), one ResourceSpans per service."""
    by_service: dict[str, list[dict]] = {}
    for s in spans:
        by_service.setdefault(s.service, []).append({
            "traceId": s.trace, "spanId": s.span, "parentSpanId": s.parent, "name": s.name, "kind": s.kind,
            "startTimeUnixNano": str(s.start_ns), "endTimeUnixNano": str(s.end_ns)})
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]},
                               "scopeSpans": [{"spans": group}]} for svc, group in by_service.items()]}


def protobuf_trace(spans: list[Span]) -> bytes:
    """What Tempo's /api/traces/<id> sends with Accept: application/protobuf (tempopb.Trace: field 1
    `batches` is ResourceSpans, as in an ExportTraceServiceRequest)."""
    doc = otlp_request(spans)
    for rs in doc["resourceSpans"]:
        for s in rs["scopeSpans"][0]["spans"]:
            for k in ("traceId", "spanId", "parentSpanId"):
                s[k] = base64.b64encode(bytes.fromhex(s[k])).decode() if s[k] else ""
    return ParseDict(doc, ExportTraceServiceRequest()).SerializeToString()


def jaeger_trace(spans: list[Span]) -> dict:
    """A trace as Jaeger's legacy /api/traces returns it."""
    procs: dict[str, str] = {}
    out = []
    for s in spans:
        pid = procs.setdefault(s.service, f"p{len(procs) + 1}")
        kind = {2: "server", 3: "client"}.get(s.kind)
        out.append({"traceID": s.trace, "spanID": s.span, "operationName": s.name, "flags": 1,
                    "references": [{"refType": "CHILD_OF", "traceID": s.trace, "spanID": s.parent}] if s.parent else [],
                    "startTime": s.start_ns // 1000, "duration": (s.end_ns - s.start_ns) // 1000,
                    "tags": [{"key": "span.kind", "type": "string", "value": kind}] if kind else [],
                    "logs": [], "processID": pid, "warnings": None})
    return {"traceID": spans[0].trace, "spans": out,
            "processes": {pid: {"serviceName": svc, "tags": []} for svc, pid in procs.items()}, "warnings": None}


def root_of(spans: list[Span]) -> Span:
    return next(s for s in spans if not s.parent)


def in_window(spans: list[Span], start_ns: int, end_ns: int) -> bool:
    return start_ns <= root_of(spans).start_ns < end_ns


# ---- the stores ---------------------------------------------------------------------------------

def tempo(traces: dict[str, list[Span]], tenant: str | None = None, metrics: bool = True) -> StandIn:
    def route(req: Request) -> Answer:
        if tenant is not None and req.headers.get("x-scope-orgid") != tenant:
            return 401, {"Content-Type": "text/plain"}, b"no org id"
        if req.path == "/api/search":
            start, end = int(req.query["start"]) * 10**9, int(req.query["end"]) * 10**9
            limit = int(req.query.get("limit", "20"))
            service = _traceql_service(req.query.get("q", "{}"))
            hits = [t for t in traces.values() if in_window(t, start, end)
                    and (service is None or any(s.service == service for s in t))]
            hits.sort(key=lambda t: -root_of(t).start_ns)  # most recent first, as Tempo does
            return json_answer({"traces": [
                {"traceID": t[0].trace, "rootServiceName": root_of(t).service, "rootTraceName": root_of(t).name,
                 "startTimeUnixNano": str(root_of(t).start_ns),
                 "durationMs": (root_of(t).end_ns - root_of(t).start_ns) // 1_000_000} for t in hits[:limit]],
                "metrics": {"inspectedTraces": len(hits)}})
        if req.path.startswith("/api/traces/"):
            tid = req.path.rsplit("/", 1)[1]
            if tid not in traces:
                return 404, {"Content-Type": "text/plain"}, b"trace not found"
            if req.headers.get("accept") == "application/protobuf":
                return 200, {"Content-Type": "application/protobuf"}, protobuf_trace(traces[tid])
            return json_answer({"batches": otlp_request(traces[tid])["resourceSpans"]})
        if req.path == "/api/metrics/query" and metrics:
            start, end = int(req.query["start"]) * 10**9, int(req.query["end"]) * 10**9
            counts: dict[tuple[str, str], int] = {}
            for t in traces.values():
                if in_window(t, start, end):
                    key = (root_of(t).service, root_of(t).name)
                    counts[key] = counts.get(key, 0) + 1
            return json_answer({"series": [
                {"labels": [{"key": "resource.service.name", "value": {"stringValue": k[0]}},
                            {"key": "name", "value": {"stringValue": k[1]}}], "value": str(v)}
                for k, v in counts.items()]})
        return 404, {"Content-Type": "text/plain"}, b"404 page not found"

    return StandIn(route)


def _traceql_service(q: str) -> str | None:
    marker = 'resource.service.name="'
    if marker not in q:
        return None
    return q.split(marker, 1)[1].split('"', 1)[0]


def jaeger(traces: dict[str, list[Span]], v3: bool = False) -> StandIn:
    services = sorted({s.service for t in traces.values() for s in t})

    def matching(service: str, start: int, end: int, limit: int) -> list[list[Span]]:
        hits = [t for t in traces.values() if in_window(t, start, end) and any(s.service == service for s in t)]
        hits.sort(key=lambda t: -root_of(t).start_ns)
        return hits[:limit]

    def route(req: Request) -> Answer:
        if req.path == "/api/v3/services":
            return json_answer({"services": services}) if v3 else (404, {}, b"404 page not found")
        if req.path == "/api/v3/traces" and v3:
            from datetime import datetime

            start = int(datetime.fromisoformat(req.query["query.start_time_min"].replace("Z", "+00:00")).timestamp() * 1e9)
            end = int(datetime.fromisoformat(req.query["query.start_time_max"].replace("Z", "+00:00")).timestamp() * 1e9)
            hits = matching(req.query["query.service_name"], start, end, int(req.query["query.num_traces"]))
            lines = [json.dumps({"result": otlp_request(t)}) for t in hits]  # streamed: one object per line
            return 200, {"Content-Type": "application/json"}, "\n".join(lines).encode()
        if req.path == "/api/services":
            return json_answer({"data": services, "total": len(services), "limit": 0, "offset": 0, "errors": None})
        if req.path == "/api/traces":
            hits = matching(req.query["service"], int(req.query["start"]) * 1000, int(req.query["end"]) * 1000,
                            int(req.query.get("limit", "20")))
            return json_answer({"data": [jaeger_trace(t) for t in hits], "total": 0, "limit": 0, "offset": 0,
                                "errors": None})
        return 404, {}, b"404 page not found"

    return StandIn(route)


def zipkin(files: list[Path]) -> StandIn:
    """Zipkin's /api/v2 over the spans of `files` (Zipkin v2 JSON arrays)."""
    by_trace: dict[str, list[dict]] = {}
    for f in files:
        for s in json.loads(f.read_text()):
            by_trace.setdefault(s["traceId"], []).append(s)
    services = sorted({(s.get("localEndpoint") or {}).get("serviceName") for t in by_trace.values() for s in t} - {None})

    def route(req: Request) -> Answer:
        if req.path == "/api/v2/services":
            return json_answer(services)
        if req.path == "/api/v2/traces":
            end_us = int(req.query["endTs"]) * 1000
            start_us = end_us - int(req.query["lookback"]) * 1000
            svc, limit = req.query.get("serviceName"), int(req.query.get("limit", "10"))
            hits = [t for t in by_trace.values()
                    if any((s.get("localEndpoint") or {}).get("serviceName") == svc for s in t)
                    and start_us <= min(s.get("timestamp", 2**62) for s in t) < end_us]
            return json_answer(hits[:limit])
        return 404, {}, b'{"message": "not found"}'

    return StandIn(route)
