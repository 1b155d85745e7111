"""Building OTLP/JSON documents from other trace formats.

Jaeger, Zipkin, the SDK console exporter and span tables are turned into OTLP/JSON
`{"resourceSpans": [...]}` documents and read by the same decoder as OTLP files
(`TraceDecoder.add_json`), so span classes, statements and peers are derived by one piece of
code whatever the source. Only the attributes the analysis reads (`semconv.SPAN_KEYS`) and the
resource attributes it reads are carried over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from analyzer.model import semconv as sc
from analyzer.model.spans import Kind, Status

KIND_BY_NAME = {
    "server": Kind.SERVER, "client": Kind.CLIENT, "producer": Kind.PRODUCER, "consumer": Kind.CONSUMER,
    "internal": Kind.INTERNAL,
}
RESOURCE_KEYS = frozenset({sc.SERVICE_NAME, sc.PROCESS_RUNTIME_NAME, sc.TELEMETRY_SDK_LANGUAGE, *sc.DEPLOYMENT_ENVIRONMENT})


def trace_id(raw: object) -> str:
    """A trace id as 32 hex digits: 64-bit ids (Zipkin, Jaeger) are zero-padded on the left."""
    s = str(raw or "").strip().lower()
    return s.rjust(32, "0") if 0 < len(s) < 32 else s


def span_id(raw: object) -> str:
    """A span id as 16 hex digits (shorter ids lost their leading zeros)."""
    s = str(raw or "").strip().lower()
    return s.rjust(16, "0") if 0 < len(s) < 16 else s


def kind_of(name: object) -> int:
    """A span kind from its name in any usual spelling ("server", "SERVER", "SPAN_KIND_SERVER")."""
    if isinstance(name, int):
        return name
    key = str(name or "").strip().lower().removeprefix("span_kind_").removeprefix("spankind.")
    return int(KIND_BY_NAME.get(key, Kind.UNSPECIFIED))


def status_of(code: object) -> int:
    key = str(code or "").strip().lower().removeprefix("status_code_")
    return int({"ok": Status.OK, "error": Status.ERROR}.get(key, Status.UNSET))


def attributes(values: Mapping[str, object], keep: frozenset[str] = sc.SPAN_KEYS) -> list[dict]:
    """OTLP/JSON KeyValues of the `keep` entries of `values`."""
    out = []
    for key, value in values.items():
        if key not in keep or value is None:
            continue
        if isinstance(value, bool):
            v = {"boolValue": value}
        elif isinstance(value, int):
            v = {"intValue": str(value)}
        elif isinstance(value, float):
            v = {"doubleValue": value}
        else:
            v = {"stringValue": str(value)}
        out.append({"key": key, "value": v})
    return out


def span(*, trace: str, span_id: str, parent: str, name: str, kind: int, start_ns: int, end_ns: int,
         status: int = 0, attrs: Mapping[str, object] | None = None) -> dict:
    """One OTLP/JSON span."""
    out: dict = {"traceId": trace, "spanId": span_id, "name": name, "kind": kind,
                 "startTimeUnixNano": start_ns, "endTimeUnixNano": end_ns}
    if parent:
        out["parentSpanId"] = parent
    if status:
        out["status"] = {"code": status}
    if attrs:
        out["attributes"] = attributes(attrs)
    return out


def document(groups: Iterable[tuple[Mapping[str, object], list[dict]]]) -> dict:
    """An ExportTraceServiceRequest in OTLP/JSON: one ResourceSpans per (resource attributes, spans)."""
    return {"resourceSpans": [
        {"resource": {"attributes": attributes(resource, RESOURCE_KEYS)}, "scopeSpans": [{"spans": spans}]}
        for resource, spans in groups if spans
    ]}
