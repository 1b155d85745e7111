"""Decoding OTLP trace export requests (protobuf or OTLP/JSON) into SpanTable batches.

Only the fields the analysis needs are read. Span attributes are scanned only on spans
that are not entry spans (SERVER/CONSUMER), and only the keys in `semconv.SPAN_KEYS` are
kept; everything derived from them (span class, normalized statement, peer, code location)
goes through `derive`, shared by both encodings.

Damage is counted per span in the source's stats and the span skipped:
`bad_trace_id` / `bad_span_id` (wrong length, all zero, or not hex). A parent id of the
wrong length is dropped and the span kept as a root (`bad_parent_id`, a repair).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from analyzer import semconv as sc
from analyzer.model import Kind, SpanClass, Status
from analyzer.statement import normalize_command, normalize_sql
from analyzer.table import Batch, TableBuilder
from analyzer.model import SpanTable
from analyzer.table import Repairs
from collectors.otlp_files import InputError, SourceStats, expand_paths, iter_messages

ZERO8 = bytes(8)
ZERO16 = bytes(16)
_ENTRY_KINDS = (Kind.SERVER, Kind.CONSUMER)
_KIND_NAMES = {f"SPAN_KIND_{k.name}": int(k) for k in Kind}
_STATUS_NAMES = {f"STATUS_CODE_{s.name}": int(s) for s in Status}


class TraceDecoder:
    """Feeds decoded requests into a TableBuilder; one per analysis run."""

    def __init__(self, builder: TableBuilder) -> None:
        self.b = builder
        self._derived: dict[tuple, tuple[int, int, int, int, int, int]] = {}

    # -- protobuf ---------------------------------------------------------------------
    def add_proto(self, data: bytes, stats: SourceStats) -> None:
        req = ExportTraceServiceRequest()
        try:
            req.ParseFromString(data)
        except DecodeError as e:
            stats.skipped["invalid_messages"] += 1
            stats.note(f"message {stats.messages}: not a valid ExportTraceServiceRequest ({e})")
            return
        for rs in req.resource_spans:
            rattrs = {kv.key: kv.value.string_value for kv in rs.resource.attributes
                      if kv.key in (sc.SERVICE_NAME, sc.PROCESS_RUNTIME_NAME, sc.TELEMETRY_SDK_LANGUAGE)}
            service = self.b.service(rattrs.get(sc.SERVICE_NAME) or "unknown_service",
                                     rattrs.get(sc.PROCESS_RUNTIME_NAME), rattrs.get(sc.TELEMETRY_SDK_LANGUAGE))
            for ss in rs.scope_spans:
                self._proto_spans(service, ss.spans, stats)

    def _proto_spans(self, service: int, spans, stats: SourceStats) -> None:
        n = len(spans)
        if not n:
            return
        tids = [s.trace_id for s in spans]
        sids = [s.span_id for s in spans]
        pids = [s.parent_span_id or ZERO8 for s in spans]
        tid_b, sid_b, pid_b = b"".join(tids), b"".join(sids), b"".join(pids)
        keep = None
        if len(tid_b) != 16 * n or len(sid_b) != 8 * n or len(pid_b) != 8 * n or ZERO16 in tids or ZERO8 in sids:
            keep, pids = _check_ids(tids, sids, pids, stats)
            tids = [x for x, k in zip(tids, keep) if k]
            sids = [x for x, k in zip(sids, keep) if k]
            pids = [x for x, k in zip(pids, keep) if k]
            spans = [s for s, k in zip(spans, keep) if k]
            n = len(spans)
            if not n:
                return
            tid_b, sid_b, pid_b = b"".join(tids), b"".join(sids), b"".join(pids)
        kind = np.fromiter((s.kind for s in spans), np.int8, n)
        derived = [
            self._derive_proto(s) if k not in _ENTRY_KINDS else _NOTHING
            for s, k in zip(spans, kind.tolist())
        ]
        self._add(service, tid_b, sid_b, pid_b,
                  names=[s.name for s in spans], kind=kind,
                  start=np.fromiter((s.start_time_unix_nano for s in spans), np.int64, n),
                  end=np.fromiter((s.end_time_unix_nano for s in spans), np.int64, n),
                  status=np.fromiter((s.status.code for s in spans), np.int8, n),
                  derived=derived)
        stats.spans += n

    def _derive_proto(self, span) -> tuple[int, int, int, int, int, int]:
        # Reading string_value and int_value directly is cheaper than WhichOneof + getattr;
        # every attribute we derive from is a string or an integer.
        items = tuple([(kv.key, kv.value.string_value, kv.value.int_value)
                       for kv in span.attributes if kv.key in sc.SPAN_KEYS])
        key = (span.kind, items)
        hit = self._derived.get(key)
        if hit is None:
            attrs = {k: (sv if sv else (iv if iv else None)) for k, sv, iv in items}
            hit = self._memo(key, derive(self.b, span.kind, attrs))
        return hit

    # -- OTLP/JSON --------------------------------------------------------------------
    def add_json(self, doc: dict, stats: SourceStats) -> None:
        for rs in doc.get("resourceSpans") or ():
            if not isinstance(rs, dict):
                stats.skipped["invalid_messages"] += 1
                continue
            rattrs = _json_attrs((rs.get("resource") or {}).get("attributes"), None)
            service = self.b.service(str(rattrs.get(sc.SERVICE_NAME) or "unknown_service"),
                                     _str_or_none(rattrs.get(sc.PROCESS_RUNTIME_NAME)),
                                     _str_or_none(rattrs.get(sc.TELEMETRY_SDK_LANGUAGE)))
            # instrumentationLibrarySpans: the pre-0.19 name of scopeSpans, still in old files.
            for ss in (rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or ()):
                spans = ss.get("spans") if isinstance(ss, dict) else None
                if spans:
                    self._json_spans(service, spans, stats)

    def _json_spans(self, service: int, spans: list, stats: SourceStats) -> None:
        tids: list[bytes] = []
        sids: list[bytes] = []
        pids: list[bytes] = []
        names: list[str] = []
        kinds: list[int] = []
        starts: list[int] = []
        ends: list[int] = []
        statuses: list[int] = []
        derived: list[tuple[int, int, int, int, int, int]] = []
        for s in spans:
            try:
                tid = bytes.fromhex(s.get("traceId") or "")
                sid = bytes.fromhex(s.get("spanId") or "")
            except (ValueError, TypeError, AttributeError):
                stats.skipped["bad_ids"] += 1
                stats.note(f"span {s.get('name') if isinstance(s, dict) else s!r}: trace or span id is not hex; span skipped")
                continue
            if len(tid) != 16 or tid == ZERO16 or len(sid) != 8 or sid == ZERO8:
                stats.skipped["bad_ids"] += 1
                stats.note(f"span {s.get('name')!r}: trace id or span id of the wrong length or all zero; span skipped")
                continue
            try:
                pid = bytes.fromhex(s.get("parentSpanId") or "")
            except (ValueError, TypeError):
                pid = b"?"
            if len(pid) not in (0, 8):
                stats.repaired["bad_parent_id"] += 1
                pid = b""
            try:
                kind = _enum(s.get("kind", 0), _KIND_NAMES)
                start = int(s.get("startTimeUnixNano") or 0)
                end = int(s.get("endTimeUnixNano") or 0)
                status = _enum((s.get("status") or {}).get("code", 0), _STATUS_NAMES)
            except (ValueError, TypeError, AttributeError, KeyError):
                stats.skipped["invalid_spans"] += 1
                stats.note(f"span {s.get('name')!r}: kind, status or timestamps are not integers; span skipped")
                continue
            tids.append(tid)
            sids.append(sid)
            pids.append(pid or ZERO8)
            names.append(str(s.get("name") or ""))
            kinds.append(kind)
            starts.append(start)
            ends.append(end)
            statuses.append(status)
            derived.append(_NOTHING if kind in _ENTRY_KINDS else self._derive(kind, _json_attrs(s.get("attributes"), sc.SPAN_KEYS)))
        if not tids:
            return
        n = len(tids)
        self._add(service, b"".join(tids), b"".join(sids), b"".join(pids), names=names,
                  kind=np.array(kinds, np.int8), start=np.array(starts, np.int64), end=np.array(ends, np.int64),
                  status=np.array(statuses, np.int8), derived=derived)
        stats.spans += n

    # -- shared -----------------------------------------------------------------------
    def _add(self, service: int, tid_b: bytes, sid_b: bytes, pid_b: bytes, *, names: list[str],
             kind: np.ndarray, start: np.ndarray, end: np.ndarray, status: np.ndarray,
             derived: list[tuple[int, int, int, int, int, int]]) -> None:
        d = np.array(derived, dtype=np.int32).reshape(-1, 6)
        self.b.add(Batch(
            service=service, trace_ids=tid_b, span_ids=sid_b, parent_ids=pid_b,
            name=self.b.names.codes_of(names), kind=kind, start=start, end=end, status=status,
            span_class=d[:, 0].astype(np.int8), db_system=d[:, 1], statement=d[:, 2], peer=d[:, 3],
            code_location=d[:, 4], cache_key=d[:, 5],
        ))

    def _derive(self, kind: int, attrs: dict[str, object]) -> tuple[int, int, int, int, int, int]:
        """(span class, db system, statement, peer, code location, cache key) codes from attributes.

        Memoized on the attribute values: real traces repeat the same few combinations."""
        try:
            key = (kind, tuple(attrs.items()))
            hit = self._derived.get(key)
        except TypeError:  # an unhashable value (array attribute): derive without memo
            return derive(self.b, kind, attrs)
        return hit if hit is not None else self._memo(key, derive(self.b, kind, attrs))

    def _memo(self, key: tuple, value: tuple[int, int, int, int, int, int]) -> tuple[int, int, int, int, int, int]:
        if len(self._derived) < 1_000_000:  # bounded: literal-laden statements make every key new
            self._derived[key] = value
        return value


_NOTHING = (int(SpanClass.INTERNAL), -1, -1, -1, -1, -1)


def derive(b: TableBuilder, kind: int, attrs: dict[str, object]) -> tuple[int, int, int, int, int, int]:
    def first(keys: Iterable[str]) -> object:
        for k in keys:
            v = attrs.get(k)
            if v not in (None, ""):
                return v
        return None

    db_system = _str_or_none(first(sc.DB_SYSTEM))
    statement = _str_or_none(first(sc.DB_STATEMENT))
    cache_key = None
    if first(sc.MESSAGING_SYSTEM) is not None or kind == Kind.PRODUCER:
        cls = SpanClass.MESSAGING
    elif db_system is not None:
        cls = SpanClass.CACHE if db_system.lower() in sc.CACHE_SYSTEMS else SpanClass.DATABASE
    elif kind == Kind.CLIENT:
        cls = SpanClass.REMOTE
    else:
        cls = SpanClass.INTERNAL

    stmt_code = -1
    if cls == SpanClass.CACHE and statement:
        shape, cache_key = normalize_command(statement)
        stmt_code = b.statements.code(shape)
    elif statement:
        stmt_code = b.statements.code(normalize_sql(statement))
    elif cls in (SpanClass.DATABASE, SpanClass.CACHE):
        summary = _str_or_none(first(sc.DB_SUMMARY))
        if summary:
            stmt_code = b.statements.code(summary)

    peer = _peer(first(sc.PEER_HOST), first(sc.PEER_PORT), first(sc.URL))
    location = _location(first(sc.CODE_FILE), first(sc.CODE_LINE), first(sc.CODE_FUNCTION), first(sc.CODE_NAMESPACE))
    return (
        int(cls),
        b.strings.code(db_system),
        stmt_code,
        b.peers.code(peer),
        b.code_locations.code(location),
        b.strings.code(cache_key),
    )


def _peer(host: object, port: object, url: object) -> str | None:
    if host is None and isinstance(url, str):
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port or port
        except ValueError:
            return None
    if host is None:
        return None
    return f"{host}:{port}" if port not in (None, "") else str(host)


def _location(path: object, line: object, function: object, namespace: object) -> str | None:
    if path is None and function is None:
        return None
    func = f"{namespace}.{function}" if namespace and function and "." not in str(function) else function
    where = f"{path}:{line}" if path is not None and line is not None else (str(path) if path is not None else "")
    return f"{where} ({func})" if func and where else (where or str(func))


def _json_attrs(attrs: object, wanted: frozenset[str] | None) -> dict[str, object]:
    out: dict[str, object] = {}
    if not isinstance(attrs, list):
        return out
    for kv in attrs:
        if not isinstance(kv, dict):
            continue
        key = kv.get("key")
        if wanted is not None and key not in wanted:
            continue
        value = kv.get("value")
        if isinstance(value, dict) and value:
            (vtype, v), = list(value.items())[:1]
            out[key] = int(v) if vtype == "intValue" else v
    return out


def _str_or_none(v: object) -> str | None:
    return None if v is None else str(v)


def _enum(v: object, names: dict[str, int]) -> int:
    """OTLP/JSON enums are integers; tolerate the enum names some producers write."""
    if isinstance(v, str) and not v.isdigit():
        return names[v]
    return int(v)  # type: ignore[arg-type]


def _check_ids(tids: list[bytes], sids: list[bytes], pids: list[bytes], stats: SourceStats) -> tuple[list[bool], list[bytes]]:
    keep: list[bool] = []
    fixed: list[bytes] = []
    for t, s, p in zip(tids, sids, pids):
        ok = len(t) == 16 and t != ZERO16 and len(s) == 8 and s != ZERO8
        if not ok:
            stats.skipped["bad_ids"] += 1
            stats.note("span with a trace id or span id of the wrong length or all zero; span skipped")
        elif len(p) != 8:
            stats.repaired["bad_parent_id"] += 1
            p = ZERO8
        keep.append(ok)
        fixed.append(p)
    return keep, fixed


@dataclass
class LoadedTraces:
    table: SpanTable
    sources: list[SourceStats]
    repairs: Repairs


def load_traces(paths: list[str]) -> LoadedTraces:
    """Read every OTLP trace file under `paths` into one SpanTable.

    Raises `InputError` for a path that is missing or a named file that is not OTLP at all.
    A file found inside a named directory that is not OTLP (a README beside the captures) is
    skipped and recorded as such; damaged parts of OTLP files are counted in the stats."""
    builder = TableBuilder()
    decoder = TraceDecoder(builder)
    sources = []
    for path, in_directory in expand_paths(paths):
        stats = SourceStats(path=str(path))
        sources.append(stats)
        try:
            for kind, payload in iter_messages(path, stats):
                if kind == "proto":
                    decoder.add_proto(payload, stats)  # type: ignore[arg-type]
                else:
                    decoder.add_json(payload, stats)  # type: ignore[arg-type]
        except InputError as e:
            if not in_directory:
                raise
            stats.format = "not-otlp"
            stats.skipped["files"] += 1
            stats.note(str(e))
    table = builder.finish()
    return LoadedTraces(table=table, sources=sources, repairs=builder.repairs)
