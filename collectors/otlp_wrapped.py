"""OTLP/JSON as trace stores and protobuf's own JSON mapping write it.

- Wrapped: Tempo's `/api/traces/<id>` answers `{"batches": [ResourceSpans...]}` (older
  releases), its `/api/v2/traces/<id>` `{"trace": {"resourceSpans": ...}}`, Jaeger's `/api/v3`
  `{"result": {"resourceSpans": ...}}` (one such object per line when it streams). Each is
  unwrapped to a plain request.
- Base64 ids: OTLP/JSON requires hex ids, but protobuf's JSON mapping (`MessageToJson`, and
  stores that use it) writes bytes fields as base64. A document whose first span id is not hex
  but is base64 of the right length has every id rewritten to hex; the source says so
  (`notices`), since it is a different encoding than the specification's.
"""

from __future__ import annotations

import base64
import binascii

from collectors.otlp_files import SourceStats

WRAPPERS = {"batches": "tempo-json", "trace": "tempo-v2-json", "result": "jaeger-v3-json"}
_ID_KEYS = ("traceId", "spanId", "parentSpanId")
BASE64_NOTICE = ("ids were base64 (protobuf's JSON mapping, e.g. MessageToJson), not the hex OTLP/JSON "
                 "requires; read them as base64")


def wrapper_of(doc: object) -> str | None:
    """The format name of a wrapped OTLP/JSON document, or None."""
    if not isinstance(doc, dict) or len(doc) > 3:
        return None
    if isinstance(doc.get("batches"), list):
        return WRAPPERS["batches"]
    for key in ("trace", "result"):
        inner = doc.get(key)
        if isinstance(inner, dict) and ("resourceSpans" in inner or not inner):
            return WRAPPERS[key]
    return None


def unwrap(doc: dict) -> dict:
    """The plain request inside a wrapped document (the document itself when not wrapped)."""
    if isinstance(doc.get("batches"), list):
        return {"resourceSpans": doc["batches"]}
    for key in ("trace", "result"):
        inner = doc.get(key)
        if isinstance(inner, dict) and "resourceSpans" in inner:
            return inner
    return doc


def hex_ids(doc: dict, stats: SourceStats) -> dict:
    """`doc` with base64 ids rewritten as hex when its first span's ids are base64 (else as it is)."""
    first = _first_span(doc)
    if first is None or not _is_base64_id(first.get("traceId"), 16):
        return doc
    if BASE64_NOTICE not in stats.notices:
        stats.notices.append(BASE64_NOTICE)
    for rs in doc.get("resourceSpans") or ():
        for ss in (rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or ()) if isinstance(rs, dict) else ():
            for span in (ss.get("spans") or ()) if isinstance(ss, dict) else ():
                if isinstance(span, dict):
                    for key in _ID_KEYS:
                        value = span.get(key)
                        if isinstance(value, str) and value:
                            span[key] = _b64_to_hex(value)
    return doc


def _first_span(doc: dict) -> dict | None:
    try:
        rs = doc["resourceSpans"][0]
        ss = (rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans"))[0]
        span = ss["spans"][0]
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    return span if isinstance(span, dict) else None


def _is_base64_id(value: object, size: int) -> bool:
    if not isinstance(value, str) or len(value) == 2 * size:
        return False
    try:
        return len(base64.b64decode(value, validate=True)) == size
    except (binascii.Error, ValueError):
        return False


def _b64_to_hex(value: str) -> str:
    """The hex form of a base64 id; a value that is not base64 is left for the decoder to count."""
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return value
