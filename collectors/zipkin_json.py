"""Zipkin v2 JSON (a file's span array, or `/api/v2/traces`' list of traces) as OTLP/JSON.

- Times are microseconds; ids are 16 or 32 hex digits (64-bit trace ids are zero-padded).
- `localEndpoint.serviceName` is the service; `remoteEndpoint` names the peer (`peer.service`,
  else its address and port).
- Shared spans: an RPC's client and server halves may share one span id, the server half
  marked `shared`. The table keys spans by id, so the server half gets an id of its own
  (derived from the shared one), its parent is the client half, and children recorded in the
  server's service under the shared id are re-parented onto it.
- Fragments: a span reported in several pieces (one with the timing, another with late
  annotations or tags) is merged into one, counted as `repaired.merged_fragments`; a span
  with no duration at all (never finished) is kept with duration 0 (`repaired.missing_duration`),
  one with no timestamp is skipped (`skipped.invalid_spans`).
- Brave's tags are read as the conventions the analysis knows: `sql.query` and
  `cassandra.query` are database statements, `kafka.topic` and `rabbit.*` messaging, `error`
  an error status.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from analyzer.model import semconv as sc
from analyzer.model.spans import Status
from collectors import otlp_shape as shape
from collectors.otlp_files import SourceStats

FORMAT = "zipkin-v2-json"
# Brave / Zipkin instrumentation tags -> (db.system, the tag that holds the statement)
_DB_TAGS = {"sql.query": "sql", "cassandra.query": "cassandra", "mongodb.command": "mongodb",
            "redis.command": "redis", "jdbc.query": "sql"}
_RESOURCE_TAGS = ("process.runtime.name", "telemetry.sdk.language", *sc.DEPLOYMENT_ENVIRONMENT)
_MESSAGING_TAGS = {"kafka.topic": "kafka", "rabbit.exchange": "rabbitmq", "rabbit.queue": "rabbitmq",
                   "messaging.destination": None}


def looks_like(doc: object) -> bool:
    """A list of Zipkin v2 spans, or a list of such lists (`/api/v2/traces`)."""
    if not isinstance(doc, list) or not doc:
        return False
    first = doc[0]
    if isinstance(first, list):
        first = first[0] if first else None
    return isinstance(first, dict) and "traceId" in first and "id" in first and "spanId" not in first


def to_otlp(doc: list, stats: SourceStats) -> Iterator[dict]:
    """The spans of `doc` as one OTLP/JSON document per trace list (see the module docstring)."""
    stats.format = FORMAT
    traces = doc if doc and all(isinstance(x, list) for x in doc) else [doc]
    for spans in traces:
        yield _document([s for s in spans if isinstance(s, dict)], stats)


def _merge(spans: list[dict], stats: SourceStats) -> list[dict]:
    """One span per (trace, id, shared): later fragments fill what earlier ones lack."""
    merged: dict[tuple, dict] = {}
    for s in spans:
        key = (shape.trace_id(s.get("traceId")), shape.span_id(s.get("id")), bool(s.get("shared")))
        have = merged.get(key)
        if have is None:
            merged[key] = dict(s)
            continue
        stats.repaired["merged_fragments"] += 1
        for k, v in s.items():
            if k == "tags":
                have["tags"] = {**(v or {}), **(have.get("tags") or {})}
            elif have.get(k) in (None, "", {}):
                have[k] = v
    return list(merged.values())


def _server_id(shared_id: str) -> str:
    """The id given to the server half of a shared span (stable, so the same file reads the same)."""
    return hashlib.blake2b(bytes.fromhex(shared_id) + b"server", digest_size=8).hexdigest()


def _document(spans: list[dict], stats: SourceStats) -> dict:
    spans = _merge(spans, stats)
    # Shared ids: (trace, id) -> the server half's service, when its client half is present too.
    clients = {(shape.trace_id(s.get("traceId")), shape.span_id(s.get("id")))
               for s in spans if not s.get("shared")}
    shared: dict[tuple[str, str], str] = {}
    for s in spans:
        key = (shape.trace_id(s.get("traceId")), shape.span_id(s.get("id")))
        if s.get("shared") and key in clients and _is_hex(key[1]):
            shared[key] = _service(s)
    # A resource per service and environment: one service's spans may come from two deployments.
    by_resource: dict[tuple[str, str | None], list[dict]] = {}
    resources: dict[tuple[str, str | None], dict] = {}
    for s in spans:
        trace, sid = shape.trace_id(s.get("traceId")), shape.span_id(s.get("id"))
        parent = shape.span_id(s.get("parentId")) if s.get("parentId") else ""
        service = _service(s)
        tags = s.get("tags") if isinstance(s.get("tags"), dict) else {}
        resource = (service, next((str(tags[k]) for k in sc.DEPLOYMENT_ENVIRONMENT if tags.get(k)), None))
        if resource not in resources:  # the SDK's Zipkin exporter copies resource attributes into tags
            resources[resource] = {"service.name": service, **{k: tags[k] for k in _RESOURCE_TAGS if k in tags}}
        if s.get("shared") and (trace, sid) in shared:
            parent, sid = sid, _server_id(sid)
        elif parent and shared.get((trace, parent)) == service:  # recorded under the shared id, in the server
            parent = _server_id(parent)
        ts = s.get("timestamp")
        if not isinstance(ts, (int, float)) or isinstance(ts, bool):
            stats.skipped["invalid_spans"] += 1
            stats.note(f"span {s.get('name')!r} ({sid}): no timestamp; span skipped")
            continue
        dur = s.get("duration")
        if not isinstance(dur, (int, float)) or isinstance(dur, bool):
            stats.repaired["missing_duration"] += 1
            dur = 0
        by_resource.setdefault(resource, []).append(shape.span(
            trace=trace, span_id=sid, parent=parent, name=str(s.get("name") or ""),
            kind=shape.kind_of(s.get("kind") or "internal"), start_ns=int(ts * 1000), end_ns=int((ts + dur) * 1000),
            status=_status(s), attrs=_attrs(s)))
    return shape.document((resources[r], group) for r, group in by_resource.items())


def _service(s: dict) -> str:
    return str((s.get("localEndpoint") or {}).get("serviceName") or "unknown_service")


def _status(s: dict) -> int:
    tags = s.get("tags") or {}
    return int(Status.ERROR) if isinstance(tags, dict) and "error" in tags else 0


def _attrs(s: dict) -> dict[str, object]:
    tags = s.get("tags") if isinstance(s.get("tags"), dict) else {}
    attrs: dict[str, object] = dict(tags)  # OTel-instrumented Zipkin exporters already use the conventions
    for tag, system in _DB_TAGS.items():
        if tag in tags:
            attrs.setdefault("db.system", system)
            attrs.setdefault("db.statement", tags[tag])
    for tag, system in _MESSAGING_TAGS.items():
        if tag in tags and system:
            attrs.setdefault("messaging.system", system)
    remote = s.get("remoteEndpoint") or {}
    if isinstance(remote, dict):
        if remote.get("serviceName"):
            attrs.setdefault("peer.service", remote["serviceName"])
        host = remote.get("ipv4") or remote.get("ipv6")
        if host:
            attrs.setdefault("network.peer.address", host)
        if remote.get("port"):
            attrs.setdefault("server.port", remote["port"])
    return attrs


def _is_hex(s: str) -> bool:
    try:
        bytes.fromhex(s)
    except ValueError:
        return False
    return len(s) == 16

