"""Jaeger JSON (the query service's `/api/traces` answer, the UI's "download JSON") as OTLP/JSON.

Shapes read: `{"data": [trace, ...]}` (API and UI download) and `{"data": trace}` (the UI's
internal form, e.g. a trace copied out of its redux state). A trace is
`{"traceID", "spans": [...], "processes": {"p1": {"serviceName", "tags"}}}`; a span has
`spanID`, `operationName`, `references` (the first CHILD_OF is the parent, else the first
FOLLOWS_FROM), `startTime` and `duration` in microseconds, `processID` (or an inline
`process`) and typed `tags`: `span.kind` gives the kind, `otel.status_code` or `error=true` the
status, and every other tag is an attribute under its own name (OTel exporters to Jaeger keep
the semantic-convention names).
"""

from __future__ import annotations

from collections.abc import Iterator

from analyzer.model.spans import Status
from collectors import otlp_shape as shape
from collectors.otlp_files import SourceStats

FORMAT = "jaeger-json"


def looks_like(doc: object) -> bool:
    if not isinstance(doc, dict) or "data" not in doc:
        return False
    data = doc["data"]
    first = data[0] if isinstance(data, list) and data else data
    return isinstance(first, dict) and "spans" in first and ("traceID" in first or "processes" in first)


def to_otlp(doc: dict, stats: SourceStats) -> Iterator[dict]:
    """One OTLP/JSON document per Jaeger trace in `doc`."""
    stats.format = FORMAT
    data = doc.get("data")
    for trace in (data if isinstance(data, list) else [data]):
        if isinstance(trace, dict):
            yield trace_to_otlp(trace, stats)
        else:
            stats.skipped["invalid_messages"] += 1


def trace_to_otlp(trace: dict, stats: SourceStats) -> dict:
    processes = trace.get("processes") if isinstance(trace.get("processes"), dict) else {}
    groups: dict[str, tuple[dict, list[dict]]] = {}
    for s in trace.get("spans") or ():
        if not isinstance(s, dict):
            stats.skipped["invalid_spans"] += 1
            continue
        process = processes.get(s.get("processID")) or s.get("process") or {}
        service = str(process.get("serviceName") or "unknown_service")
        tags = _tags(s.get("tags"))
        try:
            start = int(s["startTime"])
            end = start + int(s.get("duration") or 0)
        except (KeyError, TypeError, ValueError):
            stats.skipped["invalid_spans"] += 1
            stats.note(f"span {s.get('operationName')!r}: startTime or duration is not a number; span skipped")
            continue
        resource, spans = groups.setdefault(str(s.get("processID") or service),
                                            ({"service.name": service, **_tags(process.get("tags"))}, []))
        spans.append(shape.span(
            trace=shape.trace_id(s.get("traceID") or trace.get("traceID")), span_id=shape.span_id(s.get("spanID")),
            parent=_parent(s.get("references")), name=str(s.get("operationName") or ""),
            kind=shape.kind_of(tags.pop("span.kind", "")), start_ns=start * 1000, end_ns=end * 1000,
            status=_status(tags), attrs=tags))
    return shape.document(groups.values())


def _tags(tags: object) -> dict[str, object]:
    out: dict[str, object] = {}
    for t in tags if isinstance(tags, list) else ():
        if isinstance(t, dict) and "key" in t:
            out[str(t["key"])] = t.get("value")
    return out


def _parent(refs: object) -> str:
    refs = [r for r in refs if isinstance(r, dict)] if isinstance(refs, list) else []
    for kind in ("CHILD_OF", "FOLLOWS_FROM"):
        for r in refs:
            if r.get("refType", "CHILD_OF") == kind and r.get("spanID"):
                return shape.span_id(r["spanID"])
    return ""


def _status(tags: dict[str, object]) -> int:
    code = tags.get("otel.status_code")
    if code is not None:
        return shape.status_of(code)
    return int(Status.ERROR) if tags.get("error") in (True, "true") else 0
