"""Which JSON trace format a document is, and its spans as OTLP/JSON requests.

Told apart by content, never by file name:

| shape | format |
|---|---|
| `{"resourceSpans": [...]}` (hex or base64 ids) | OTLP/JSON (`otlp_wrapped.hex_ids`) |
| `{"batches": ...}`, `{"trace": {...}}`, `{"result": {...}}` | Tempo / Jaeger v3 wrapped OTLP (`otlp_wrapped`) |
| `{"data": [trace, ...]}` or `{"data": trace}` | Jaeger JSON (`jaeger_json`) |
| `[span, ...]` or `[[span, ...], ...]` with `traceId` and `id` | Zipkin v2 (`zipkin_json`) |
| JSON objects one after another with `context.trace_id` | the SDK console exporter (`otel_console`) |

Anything else is refused by `refusal`, which names what the document looks like and how to
turn it into something readable.
"""

from __future__ import annotations

from collections.abc import Iterator

from collectors import jaeger_json, otel_console, otlp_wrapped, zipkin_json
from collectors.otlp_files import SourceStats


def recognize(doc: object) -> str | None:
    """The format name of a JSON document profile-first reads traces from, or None."""
    if isinstance(doc, dict) and ("resourceSpans" in doc or "resourceMetrics" in doc or not doc):
        return "otlp-json"
    if (wrapped := otlp_wrapped.wrapper_of(doc)) is not None:
        return wrapped
    if jaeger_json.looks_like(doc) or _empty_jaeger_answer(doc):
        return jaeger_json.FORMAT
    if zipkin_json.looks_like(doc) and not _zipkin_v1(doc):
        return zipkin_json.FORMAT
    if otel_console.looks_like(doc) or (isinstance(doc, list) and doc and all(map(otel_console.looks_like, doc))):
        return otel_console.FORMAT
    return None


def to_otlp(doc: object, stats: SourceStats) -> Iterator[dict]:
    """The OTLP/JSON requests of a recognized document (nothing for an unrecognized one, which
    `recognize` has turned away before)."""
    if isinstance(doc, dict) and "resourceSpans" in doc:
        yield otlp_wrapped.hex_ids(doc, stats)
        return
    fmt = recognize(doc)
    if fmt in otlp_wrapped.WRAPPERS.values():
        stats.format = fmt
        yield otlp_wrapped.hex_ids(otlp_wrapped.unwrap(doc), stats)  # type: ignore[arg-type]
    elif fmt == jaeger_json.FORMAT:
        yield from jaeger_json.to_otlp(doc, stats)  # type: ignore[arg-type]
    elif fmt == zipkin_json.FORMAT:
        yield from zipkin_json.to_otlp(doc, stats)  # type: ignore[arg-type]
    elif fmt == otel_console.FORMAT:
        yield from otel_console.to_otlp(doc if isinstance(doc, list) else [doc], stats)
    elif fmt == "otlp-json" and isinstance(doc, dict):
        yield doc


def refusal(doc: object) -> str:
    """Why a JSON document is not read, naming what it looks like and the way to convert it."""
    if _zipkin_v1(doc):
        return ("Zipkin v1 JSON (spans with binaryAnnotations): fetch the traces from Zipkin's v2 API "
                "(/api/v2/trace/<id>) or give --zipkin URL")
    if isinstance(doc, dict):
        keys = sorted(doc)[:8]
        if doc.get("status") in ("success", "error") and "data" in doc:
            return "a Prometheus API answer, not traces: give its base URL with --prometheus URL"
        if "traceEvents" in doc:
            return "a Chrome trace-event profile, not distributed traces: export OTLP from your tracing SDK instead"
        if "data" in doc:
            return ("JSON with a `data` key but no Jaeger traces in it (each needs `spans`): download the trace "
                    "from the Jaeger UI (Download JSON) or give --jaeger URL")
        if "Traces" in doc or "Segments" in doc:
            return ("AWS X-Ray JSON: route the traces through an OpenTelemetry Collector "
                    "(awsxrayreceiver, file exporter) to get OTLP")
        return (f"JSON but not a trace format profile-first reads (top-level keys {keys}); it reads OTLP/JSON "
                "(also wrapped by Tempo or Jaeger v3), Jaeger JSON, Zipkin v2 JSON and the SDK console exporter's "
                "output; a Collector's file exporter writes OTLP from any of its receivers")
    if isinstance(doc, list):
        return ("a JSON array, but not of Zipkin v2 spans (objects with traceId and id): "
                "export the traces with a Collector's file exporter (OTLP)")
    return "JSON but not an object or array of spans"


def _empty_jaeger_answer(doc: object) -> bool:
    """`/api/traces` with nothing found: `{"data": [], "total": 0, ...}`."""
    return isinstance(doc, dict) and doc.get("data") == [] and ("total" in doc or "errors" in doc)


def _zipkin_v1(doc: object) -> bool:
    first = doc[0] if isinstance(doc, list) and doc else None
    if isinstance(first, list):
        first = first[0] if first else None
    return isinstance(first, dict) and "traceId" in first and ("binaryAnnotations" in first or (
        "annotations" in first and "localEndpoint" not in first and "kind" not in first))
