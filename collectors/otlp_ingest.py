"""Decode and validate one OTLP export request, independent of the transport that carried it.

The receiver's hot path lives here, so it does as little per-span Python work as the OTLP
specification allows: protobuf requests are parsed once by the C (upb) parser, spans are
counted, and ids are length-checked so that spans the spec calls invalid are rejected through
`partial_success` rather than stored. The accepted request is kept as protobuf bytes; turning
it into OTLP/JSON is the capture writer's job, later, off the request path.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import zlib
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

TRACES = "traces"
METRICS = "metrics"

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_CONTENT_TYPES = {"application/x-protobuf": PROTOBUF, "application/protobuf": PROTOBUF, "application/json": JSON}

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_ID_KEYS = ("traceId", "spanId", "parentSpanId")


class IngestError(Exception):
    """A request that cannot be accepted; `status` is the HTTP status the spec asks for."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Accepted:
    """A validated request: protobuf bytes to store, and what it held."""

    payload: bytes  # serialized Export*ServiceRequest holding only the accepted items
    items: int  # spans (traces) or data points (metrics) accepted
    rejected: int  # spans rejected as invalid (partial success); always 0 for metrics
    message: str = ""  # why some were rejected, for partial_success.error_message


def media_type(content_type: str | None) -> str | None:
    """The canonical OTLP media type of a Content-Type header, or None if unsupported."""
    if not content_type:
        return None
    return _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())


def inflate(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """The decoded body, refusing to produce more than `max_bytes`.

    Inflation is bounded by `max_length`, so a gzip bomb costs at most `max_bytes + 1` bytes of
    memory before it is rejected.
    """
    enc = (encoding or "").strip().lower()
    if enc in ("", "identity"):
        if len(body) > max_bytes:
            raise IngestError(413, f"request body exceeds {max_bytes} bytes")
        return body
    if enc in ("gzip", "x-gzip", "deflate"):
        # wbits 32+15 accepts gzip and zlib headers; raw deflate (-15) is tried if that fails.
        try:
            return _bounded_inflate(zlib.decompressobj(32 + zlib.MAX_WBITS), body, max_bytes)
        except zlib.error:
            if enc != "deflate":
                raise IngestError(400, "malformed gzip body") from None
            try:
                return _bounded_inflate(zlib.decompressobj(-zlib.MAX_WBITS), body, max_bytes)
            except zlib.error:
                raise IngestError(400, "malformed deflate body") from None
    if enc == "zstd":
        import zstandard

        try:
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)) as reader:
                out = reader.read(max_bytes + 1)
        except zstandard.ZstdError:
            raise IngestError(400, "malformed zstd body") from None
        if len(out) > max_bytes:
            raise IngestError(413, f"decompressed body exceeds {max_bytes} bytes")
        return out
    raise IngestError(415, f"unsupported Content-Encoding {encoding!r}; use gzip, deflate, zstd or none")


def _bounded_inflate(d: Any, body: bytes, max_bytes: int) -> bytes:
    out = d.decompress(body, max_bytes + 1)
    while d.unconsumed_tail and len(out) <= max_bytes:
        out += d.decompress(d.unconsumed_tail, max_bytes + 1 - len(out))
    if len(out) > max_bytes:
        raise IngestError(413, f"decompressed body exceeds {max_bytes} bytes")
    if not d.eof:
        raise IngestError(400, "truncated compressed body")
    return out


def accept(signal: str, media: str, data: bytes) -> Accepted:
    """Validate one decoded request body of `signal` encoded as `media`."""
    try:
        return _accept(signal, media, data)
    except RecursionError:  # JSON (or an AnyValue tree) nested deeper than Python's stack: the sender's fault
        raise IngestError(400, "malformed request: nested too deeply") from None


def _accept(signal: str, media: str, data: bytes) -> Accepted:
    if signal == TRACES:
        if media == PROTOBUF:
            return accept_trace_request(_parse(ExportTraceServiceRequest, data), data)
        return _accept_trace_json(_load_json(data))
    if media == PROTOBUF:
        return accept_metric_request(_parse(ExportMetricsServiceRequest, data), data)
    obj = _load_json(data)
    _hex_ids_to_base64(obj)
    req = _from_dict(ExportMetricsServiceRequest, obj)
    return accept_metric_request(req)


def accept_trace_request(req: ExportTraceServiceRequest, raw: bytes | None = None) -> Accepted:
    """Count spans and drop those whose ids the spec calls invalid (wrong length or all zero)."""
    accepted = rejected = 0
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            spans = ss.spans
            bad: list[int] | None = None
            for i, s in enumerate(spans):
                t = s.trace_id
                p = s.span_id
                if len(t) != 16 or len(p) != 8 or t == _ZERO_TRACE or p == _ZERO_SPAN or len(s.parent_span_id) not in (0, 8):
                    if bad is None:
                        bad = []
                    bad.append(i)
            if bad:
                for i in reversed(bad):
                    del spans[i]
                rejected += len(bad)
            accepted += len(spans)
    if rejected:
        msg = f"{rejected} span(s) rejected: trace id must be 16 non-zero bytes, span id 8 non-zero bytes"
        return Accepted(req.SerializeToString(), accepted, rejected, msg)
    # Re-serializing costs as much as parsing; reuse the caller's bytes when nothing changed.
    return Accepted(raw if raw is not None else req.SerializeToString(), accepted, 0)


def accept_metric_request(req: ExportMetricsServiceRequest, raw: bytes | None = None) -> Accepted:
    points = 0
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is not None:
                    points += len(getattr(m, kind).data_points)
    return Accepted(raw if raw is not None else req.SerializeToString(), points, 0)


def _parse(cls: Any, data: bytes) -> Any:
    try:
        return cls.FromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise IngestError(400, f"malformed protobuf {cls.__name__}: {e}") from None


def _load_json(data: bytes) -> dict:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise IngestError(400, f"malformed JSON: {e}") from None
    if not isinstance(obj, dict):
        raise IngestError(400, "OTLP/JSON request must be a JSON object")
    return obj


def _from_dict(cls: Any, obj: dict) -> Any:
    try:
        return json_format.ParseDict(obj, cls(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as e:
        raise IngestError(400, f"malformed OTLP/JSON {cls.__name__}: {e}") from None


def _hex_id(value: Any, size: int, allow_empty: bool) -> str | None:
    """base64 of a hex id for protobuf's JSON parser, or None if the id is invalid."""
    if value in (None, "") and allow_empty:
        return ""
    if not isinstance(value, str) or len(value) != 2 * size:
        return None
    try:
        raw = binascii.unhexlify(value)
    except (binascii.Error, ValueError):
        return None
    if raw == bytes(size):
        return None
    return base64.b64encode(raw).decode("ascii")


def _accept_trace_json(obj: dict) -> Accepted:
    rejected = 0
    for rs in _list(obj.get("resourceSpans")):
        for ss in _list(rs.get("scopeSpans") if isinstance(rs, dict) else None):
            if not isinstance(ss, dict):
                continue
            kept = []
            for span in _list(ss.get("spans")):
                if not isinstance(span, dict):
                    raise IngestError(400, "span must be a JSON object")
                t = _hex_id(span.get("traceId"), 16, False)
                s = _hex_id(span.get("spanId"), 8, False)
                p = _hex_id(span.get("parentSpanId"), 8, True)
                if t is None or s is None or p is None:
                    rejected += 1
                    continue
                span["traceId"], span["spanId"], span["parentSpanId"] = t, s, p
                for link in _list(span.get("links")):
                    if isinstance(link, dict):
                        _hex_ids_to_base64(link)
                kept.append(span)
            ss["spans"] = kept
    req = _from_dict(ExportTraceServiceRequest, obj)
    out = accept_trace_request(req)
    if rejected:
        msg = f"{rejected} span(s) rejected: trace id must be 32 hex digits, span id 16, not all zero"
        return Accepted(out.payload, out.items, rejected + out.rejected, msg)
    return out


def _list(value: Any) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise IngestError(400, "expected a JSON array in OTLP/JSON request")
    return value


def _hex_ids_to_base64(node: Any) -> None:
    """OTLP/JSON ids are hex; protobuf's JSON parser expects base64 for bytes fields."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                if value == "":
                    continue
                try:
                    node[key] = base64.b64encode(binascii.unhexlify(value)).decode("ascii")
                except (binascii.Error, ValueError):
                    raise IngestError(400, f"{key} must be hex: {value!r}") from None
            else:
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)
