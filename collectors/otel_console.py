"""What the OpenTelemetry SDK's console exporter prints (`ConsoleSpanExporter`), as OTLP/JSON.

The Python SDK prints each span as its own pretty-printed JSON object (`ReadableSpan.to_json`),
one after another: `{"name", "context": {"trace_id": "0x…", "span_id": "0x…"}, "kind":
"SpanKind.SERVER", "parent_id", "start_time"/"end_time" (ISO 8601, microseconds), "status":
{"status_code"}, "attributes": {…}, "resource": {"attributes": {…}}}`. That is not a file
format anyone should rely on (times lose their nanoseconds, nothing frames the objects), so
reading it is a convenience and the source says how to get OTLP instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

from collectors import otlp_shape as shape
from collectors.otlp_files import SourceStats

FORMAT = "otel-sdk-console"
NOTICE = ("this is the OpenTelemetry SDK console exporter's output (one JSON object per span, times in "
          "microseconds); for a real capture use the OTLP exporter (OTEL_TRACES_EXPORTER=otlp) with "
          "`profile-first capture`, or a Collector's file exporter")


def looks_like(doc: object) -> bool:
    return (isinstance(doc, dict) and isinstance(doc.get("context"), dict) and "trace_id" in doc["context"]
            and "start_time" in doc)


def split_objects(text: str) -> list[object] | None:
    """The JSON values written one after another in `text`, or None if it is not such a sequence."""
    decoder = json.JSONDecoder()
    out, i, n = [], 0, len(text)
    try:
        while True:
            while i < n and text[i].isspace():
                i += 1
            if i >= n:
                return out
            value, i = decoder.raw_decode(text, i)
            out.append(value)
    except ValueError:
        return None


def to_otlp(docs: list, stats: SourceStats) -> Iterator[dict]:
    """One OTLP/JSON document holding every console span in `docs`, grouped by resource."""
    stats.format = FORMAT
    if NOTICE not in stats.notices:
        stats.notices.append(NOTICE)
    groups: dict[str, tuple[dict, list[dict]]] = {}
    for d in docs:
        if not looks_like(d):
            stats.skipped["invalid_spans"] += 1
            continue
        try:
            ctx = d["context"]
            start, end = _ns(d["start_time"]), _ns(d["end_time"])
            span = shape.span(
                trace=_hex(ctx["trace_id"]), span_id=_hex(ctx["span_id"]), parent=_hex(d.get("parent_id") or ""),
                name=str(d.get("name") or ""), kind=shape.kind_of(d.get("kind")), start_ns=start, end_ns=end,
                status=shape.status_of((d.get("status") or {}).get("status_code")),
                attrs=d.get("attributes") if isinstance(d.get("attributes"), dict) else None)
        except (KeyError, TypeError, ValueError):
            stats.skipped["invalid_spans"] += 1
            stats.note(f"console span {d.get('name')!r}: ids or times do not parse; span skipped")
            continue
        resource = (d.get("resource") or {}).get("attributes") or {}
        key = json.dumps(resource, sort_keys=True, default=str)
        groups.setdefault(key, (resource, []))[1].append(span)
    yield shape.document(groups.values())


def _hex(value: str) -> str:
    return value[2:] if value.startswith("0x") else value


def _ns(iso: str) -> int:
    t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000
