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
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
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

def tempo(traces: dict[str, list[Span]], tenant: str | None = None, metrics: bool | str = True) -> StandIn:
    """Tempo's query API over `traces`. `metrics`: True answers TraceQL metrics on both endpoints,
    "range" only on `/api/metrics/query_range` (the instant one came later), False on neither (404,
    as a Tempo before 2.4 or without the local-blocks processor answers).

    TraceQL is understood as far as profile-first writes it: `nestedSetParent = -1`,
    `resource.service.name = "x"`, `name = "y"` and `duration > 123us` / `<=` joined by `&&`;
    the metrics queries `rate()` and `quantile_over_time(duration, …)` by (resource.service.name,
    name). Real Tempo computes quantiles from log2 histogram buckets (an approximation); these are
    exact, which the client cannot tell and must not rely on."""

    def route(req: Request) -> Answer:
        if tenant is not None and req.headers.get("x-scope-orgid") != tenant:
            return 401, {"Content-Type": "text/plain"}, b"no org id"
        if req.path == "/api/search":
            start, end = int(req.query["start"]) * 10**9, int(req.query["end"]) * 10**9
            limit = int(req.query.get("limit", "20"))
            match = _traceql_filter(req.query.get("q", "{}"))
            hits = [(t, m) for t in traces.values() if in_window(t, start, end)
                    for m in [[s for s in t if match(s, t)]] if m]
            hits.sort(key=lambda tm: -root_of(tm[0]).start_ns)  # most recent first, as Tempo does
            out = []
            for t, matched in hits[:limit]:
                root = root_of(t)
                spans = [{"spanID": m.span, "startTimeUnixNano": str(m.start_ns),
                          "durationNanos": str(m.end_ns - m.start_ns)} for m in matched[: int(req.query.get("spss", "3"))]]
                spanset = {"spans": spans, "matched": len(matched)}
                out.append({"traceID": t[0].trace, "rootServiceName": root.service, "rootTraceName": root.name,
                            "startTimeUnixNano": str(root.start_ns),
                            "durationMs": (root.end_ns - root.start_ns) // 1_000_000,
                            "spanSet": spanset, "spanSets": [spanset]})
            return json_answer({"traces": out, "metrics": {"inspectedTraces": len(hits), "inspectedBytes": "0"}})
        if req.path.startswith("/api/traces/"):
            tid = req.path.rsplit("/", 1)[1]
            if tid not in traces:
                return 404, {"Content-Type": "text/plain"}, b"trace not found"
            if req.headers.get("accept") == "application/protobuf":
                return 200, {"Content-Type": "application/protobuf"}, protobuf_trace(traces[tid])
            return json_answer({"batches": otlp_request(traces[tid])["resourceSpans"]})
        instant = req.path == "/api/metrics/query" and metrics is True
        ranged = req.path == "/api/metrics/query_range" and metrics in (True, "range")
        if instant or ranged:
            return json_answer(_traceql_metrics(traces, req, instant))
        return 404, {"Content-Type": "text/plain"}, b"404 page not found"

    return StandIn(route)


def _traceql_filter(q: str) -> Callable[[Span, list[Span]], bool]:
    """A span predicate for the TraceQL filters profile-first sends (see `tempo`)."""
    conds: list[Callable[[Span, list[Span]], bool]] = []
    for term in q.strip().strip("{}").split("&&"):
        term = term.strip()
        if not term:
            continue
        m = re.fullmatch(r'(resource\.service\.name|name)\s*=\s*"((?:[^"\\]|\\.)*)"', term)
        if m:
            field_, value = m.group(1), m.group(2).replace('\\"', '"').replace("\\\\", "\\")
            conds.append((lambda v: lambda s, t: s.service == v)(value) if field_.startswith("resource")
                         else (lambda v: lambda s, t: s.name == v)(value))
            continue
        m = re.fullmatch(r"duration\s*(>|<=)\s*(\d+)us", term)
        if m:
            op, us = m.group(1), int(m.group(2)) * 1000
            conds.append((lambda op, us: lambda s, t: (s.end_ns - s.start_ns > us) if op == ">"
                          else (s.end_ns - s.start_ns <= us))(op, us))
            continue
        if re.fullmatch(r"nestedSetParent\s*=\s*-1", term):
            conds.append(lambda s, t: not s.parent)
            continue
        raise ValueError(f"stand-in Tempo does not understand {term!r}")
    return lambda s, t: all(c(s, t) for c in conds)


def _traceql_metrics(traces: dict[str, list[Span]], req: Request, instant: bool) -> dict:
    """A TraceQL metrics answer (tempopb QueryInstantResponse / QueryRangeResponse as JSON) for
    `{ nestedSetParent = -1 } | rate()` or `| quantile_over_time(duration, .5, .95, .99)` by
    (resource.service.name, name), over the query's window (one step when ranged)."""
    q = req.query["q"]
    start, end = int(req.query["start"]), int(req.query["end"])
    selector, func = (x.strip() for x in q.split("|", 1))
    match = _traceql_filter(selector)
    groups: dict[tuple[str, str], list[int]] = {}
    for t in traces.values():
        for s in t:
            if start * 10**9 <= s.start_ns < end * 10**9 and match(s, t):
                groups.setdefault((s.service, s.name), []).append(s.end_ns - s.start_ns)
    series = []
    for (svc, name), durations in sorted(groups.items()):
        labels = [{"key": "resource.service.name", "value": {"stringValue": svc}},
                  {"key": "name", "value": {"stringValue": name}}]
        if func.startswith("rate()"):
            values = [(labels, len(durations) / max(1, end - start))]
        elif func.startswith("quantile_over_time(duration"):
            ps = [float(x) for x in func.split("(", 1)[1].split(")", 1)[0].split(",")[1:]]
            values = [(labels + [{"key": "p", "value": {"doubleValue": p}}],
                       float(np.quantile(np.asarray(durations, dtype=np.float64), p)) / 1e9) for p in ps]
        else:
            raise ValueError(f"stand-in Tempo does not understand {func!r}")
        for lab, v in values:
            prom = "{" + ",".join(f'{x["key"]}="{next(iter(x["value"].values()))}"' for x in lab) + "}"
            one = {"labels": lab, "promLabels": prom}
            one.update({"value": v} if instant else {"samples": [{"timestampMs": str(start * 1000), "value": v}]})
            series.append(one)
    return {"series": series, "metrics": {"inspectedBytes": "0", "totalJobs": 1, "completedJobs": 1}}


def jaeger(traces: dict[str, list[Span]], v3: bool = False) -> StandIn:
    services = sorted({s.service for t in traces.values() for s in t})

    operations = {svc: sorted({(s.name, {2: "server", 3: "client", 1: "internal"}[s.kind]) for t in traces.values()
                               for s in t if s.service == svc}) for svc in services}

    def matching(service: str, operation: str | None, min_ns: int, start: int, end: int,
                 limit: int) -> list[list[Span]]:
        """Traces with a span of `service` (and `operation`, at least `min_ns` long): Jaeger filters spans."""
        hits = [t for t in traces.values() if in_window(t, start, end)
                and any(s.service == service and (operation is None or s.name == operation)
                        and s.end_ns - s.start_ns >= min_ns for s in t)]
        hits.sort(key=lambda t: -root_of(t).start_ns)
        return hits[:limit]

    def route(req: Request) -> Answer:
        if req.path == "/api/v3/services":
            return json_answer({"services": services}) if v3 else (404, {}, b"404 page not found")
        if req.path == "/api/v3/traces" and v3:
            from datetime import datetime

            start = int(datetime.fromisoformat(req.query["query.start_time_min"].replace("Z", "+00:00")).timestamp() * 1e9)
            end = int(datetime.fromisoformat(req.query["query.start_time_max"].replace("Z", "+00:00")).timestamp() * 1e9)
            min_ns = int(float(req.query.get("query.duration_min", "0s").rstrip("s")) * 1e9)
            hits = matching(req.query["query.service_name"], req.query.get("query.operation_name"), min_ns, start, end,
                            int(req.query.get("query.search_depth") or req.query["query.num_traces"]))
            lines = [json.dumps({"result": otlp_request(t)}) for t in hits]  # streamed: one object per line
            return 200, {"Content-Type": "application/json"}, "\n".join(lines).encode()
        if req.path == "/api/v3/operations" and v3:
            return json_answer({"operations": [{"name": n, "spanKind": k} for n, k in
                                               operations.get(req.query.get("service", ""), [])]})
        if req.path.startswith("/api/services/") and req.path.endswith("/operations"):
            svc = unquote(req.path[len("/api/services/"):-len("/operations")])
            names = sorted({n for n, _ in operations.get(svc, [])})
            return json_answer({"data": names, "total": len(names), "limit": 0, "offset": 0, "errors": None})
        if req.path == "/api/services":
            return json_answer({"data": services, "total": len(services), "limit": 0, "offset": 0, "errors": None})
        if req.path == "/api/traces":
            min_us = int(req.query.get("minDuration", "0us").removesuffix("us") or 0)
            hits = matching(req.query["service"], req.query.get("operation"), min_us * 1000, int(req.query["start"]) * 1000,
                            int(req.query["end"]) * 1000, int(req.query.get("limit", "20")))
            return json_answer({"data": [jaeger_trace(t) for t in hits], "total": 0, "limit": 0, "offset": 0,
                                "errors": None})
        return 404, {}, b"404 page not found"

    return StandIn(route)


def zipkin_trace(spans: list[Span]) -> list[dict]:
    """A trace as Zipkin's /api/v2/traces returns it (microsecond times; names lowercased, as Zipkin
    stores span and service names)."""
    kinds = {2: "SERVER", 3: "CLIENT"}
    out = []
    for s in spans:
        span = {"traceId": s.trace, "id": s.span, "name": s.name.lower(), "timestamp": s.start_ns // 1000,
                "duration": (s.end_ns - s.start_ns) // 1000, "localEndpoint": {"serviceName": s.service.lower()}}
        if s.parent:
            span["parentId"] = s.parent
        if s.kind in kinds:
            span["kind"] = kinds[s.kind]
        out.append(span)
    return out


def zipkin(source: list[Path] | dict[str, list[Span]]) -> StandIn:
    """Zipkin's /api/v2 over the spans of `source`: files of Zipkin v2 JSON arrays, or traces.

    Searches filter as Zipkin's `QueryRequest.test` does: names compared lowercased; `spanName` and
    `minDuration` (microseconds, inclusive) are met by any span of `serviceName` (each by its own),
    and traces come most recent first, cut at `limit`."""
    by_trace: dict[str, list[dict]] = {}
    if isinstance(source, dict):
        by_trace = {tid: zipkin_trace(spans) for tid, spans in source.items()}
    else:
        for f in source:
            for s in json.loads(f.read_text()):
                by_trace.setdefault(s["traceId"], []).append(s)

    def service(s: dict) -> str | None:
        name = (s.get("localEndpoint") or {}).get("serviceName")
        return name.lower() if name else None

    services = sorted({service(s) for t in by_trace.values() for s in t} - {None})

    def matches(t: list[dict], svc: str | None, span_name: str | None, min_us: int | None) -> bool:
        mine = [s for s in t if svc is None or service(s) == svc]
        return bool(mine) and (span_name is None or any((s.get("name") or "").lower() == span_name for s in mine)) \
            and (min_us is None or any(s.get("duration", 0) >= min_us for s in mine))

    def route(req: Request) -> Answer:
        if req.path == "/api/v2/services":
            return json_answer(services)
        if req.path == "/api/v2/spans":
            svc = req.query["serviceName"].lower()
            return json_answer(sorted({(s.get("name") or "").lower() for t in by_trace.values() for s in t
                                       if service(s) == svc} - {""}))
        if req.path == "/api/v2/traces":
            end_us = int(req.query["endTs"]) * 1000
            start_us = end_us - int(req.query["lookback"]) * 1000
            svc, limit = req.query.get("serviceName"), int(req.query.get("limit", "10"))
            span_name = req.query.get("spanName")
            min_us = int(req.query["minDuration"]) if "minDuration" in req.query else None
            # Without serviceName Zipkin lists every trace of the window.
            hits = [t for t in by_trace.values()
                    if matches(t, svc.lower() if svc else None, span_name.lower() if span_name else None, min_us)
                    and start_us <= min(s.get("timestamp", 2**62) for s in t) < end_us]
            hits.sort(key=lambda t: -min(s.get("timestamp", 2**62) for s in t))  # nearest endTs first
            return json_answer(hits[:limit])
        return 404, {}, b'{"message": "not found"}'

    return StandIn(route)
