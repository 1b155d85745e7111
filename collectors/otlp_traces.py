"""Decoding OTLP trace export requests (protobuf or OTLP/JSON) into SpanTable batches.

Protobuf requests are read with numpy, many spans at a time (`proto_traces`). OTLP/JSON is read a
column at a time with list comprehensions per batch, and span by span (`_json_spans_checked`)
only for a group that holds something unusual.

Attributes are read only on spans that are not entry spans (SERVER/CONSUMER), and only the
keys in `semconv.SPAN_KEYS`. What is derived from them (span class, normalized statement, peer,
code location, cache key) goes through `derive_base` + `TraceDecoder._finish`, shared by both
encodings: the attributes that repeat (db system, host, code location...) are derived once per
distinct combination, and the two that carry per-request literals (the statement and the URL)
once per distinct text.

Damage is counted in the source's stats and the span skipped: `bad_ids` (trace or span id of
the wrong length, all zero, or not hex), `invalid_spans` (a span or status that does not
decode). A parent id of the wrong length is dropped and the span kept as a root
(`bad_parent_id`, a repair).
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np
from analyzer.model import semconv as sc
from analyzer.model.spans import Kind, SpanClass, SpanTable, Status as SpanStatus
from analyzer.model.statement import normalize_command, normalize_sql
from analyzer.model.table import Batch, Repairs, TableBuilder
from collectors import span_tables, trace_json
from collectors.otlp_files import (DEFAULT_LIMITS, InputError, Limits, SourceStats, expand_paths, iter_messages, shown,
                                   strings_cut)
from collectors.proto_traces import NO_PEER as _NO_PEER, ProtoTraces
from collectors.span_tables import ColumnMapping

ZERO8 = bytes(8)
ZERO16 = bytes(16)
_ENTRY_KINDS = frozenset({int(Kind.SERVER), int(Kind.CONSUMER)})
_KIND_NAMES = {f"SPAN_KIND_{k.name}": int(k) for k in Kind}
_STATUS_NAMES = {f"STATUS_CODE_{s.name}": int(s) for s in SpanStatus}
# Attributes whose values carry per-request literals: memoized on their own, by raw text.
_VOLATILE = frozenset(sc.DB_STATEMENT + sc.URL)
# Entries per memo: bounded, since literal-laden values make keys endless. The statement and URL
# memos hold values that are mostly seen once, so they stay small: what repeats is seen early and
# kept, and 32k long-lived strings scattered through the heap made every later JSON line ~10%
# slower to parse and decode (1M spans: 4,096 entries cost 11% more normalizations, 8% less time).
MEMO_LIMIT = 200_000
JSON_BATCH = 1 << 14  # spans per Batch from OTLP/JSON
_MAX_NS = (1 << 63) - 1  # timestamps are stored as int64 nanoseconds
_KINDS = frozenset(range(-128, 128))  # what the int8 kind and status columns hold
_STATUSES = _KINDS
VOLATILE_MEMO_LIMIT = 1 << 12

Derived = tuple[int, int, int, int, int, int]  # span class, db system, statement, peer, code location, cache key
# What the repeating attributes decide: span class, db system code, the operation summary
# (database and cache spans), peer code from host and port (-2: none, look at the URL), the port, code location.
Base = tuple[int, int, str | None, int, object, int]


class TraceDecoder:
    """Feeds decoded requests into a TableBuilder; one per analysis run."""

    def __init__(self, builder: TableBuilder, limits: Limits = DEFAULT_LIMITS) -> None:
        self.b = builder
        self.limits = limits
        # (kind, repeating attributes) -> (Base, what it derives to when there is no statement or URL)
        self._base: dict[tuple, tuple[Base, Derived]] = {}
        self._sql: dict[str, tuple[int, int]] = {}
        self._command: dict[str, tuple[int, int]] = {}
        self._url_peer: dict[tuple[str, object], int] = {}
        self._proto = ProtoTraces(self)
        self._json = _JsonColumns()
        self._source = SourceStats(path="")  # the source being read, for what is counted in attributes

    # -- protobuf ---------------------------------------------------------------------
    def add_proto(self, data: bytes, stats: SourceStats) -> None:
        """Queue one serialized ExportTraceServiceRequest; `flush` decodes what is queued."""
        self._proto.add(data, stats)

    def flush(self) -> None:
        """Decode or store what is queued (at the end of each source)."""
        self._proto.flush()
        self._flush_json()

    def base_of(self, kind: int, attrs: dict[str, object]) -> Base:
        return derive_base(self.b, kind, attrs)

    # -- OTLP/JSON --------------------------------------------------------------------
    def add_json(self, doc: dict, stats: SourceStats) -> None:
        """One OTLP/JSON request. A part of the wrong type (`resourceSpans` that is not an array, a
        `resource` that is not an object...) is skipped and counted with what it holds."""
        self._source = stats
        for rs in _parts(doc, "resourceSpans", stats):
            resource = rs.get("resource") or {}
            if not isinstance(resource, dict):
                _wrong_type(stats, "a resource")
                continue
            service = self.resource(_json_attrs(resource.get("attributes"), None, stats))
            # instrumentationLibrarySpans: the pre-0.19 name of scopeSpans, still in old files.
            key = "scopeSpans" if rs.get("scopeSpans") else "instrumentationLibrarySpans"
            for ss in _parts(rs, key, stats):
                spans = ss.get("spans")
                if spans and not isinstance(spans, list):
                    _wrong_type(stats, "spans")
                elif spans:
                    self._json_spans(service, spans, stats)

    def _json_spans(self, service: tuple[int, int], spans: list, stats: SourceStats) -> None:
        """A group of spans, a column at a time; any span that is not plainly valid sends the whole
        group through `_json_spans_checked`, which skips or repairs span by span."""
        try:
            fromhex = bytes.fromhex
            tids = [fromhex(s["traceId"]) for s in spans]
            sids = [fromhex(s["spanId"]) for s in spans]
            pids = [fromhex(s.get("parentSpanId") or "") for s in spans]
            kinds = [s.get("kind", 0) for s in spans]
            statuses = [(s.get("status") or {}).get("code", 0) for s in spans]
            starts = [int(s.get("startTimeUnixNano") or 0) for s in spans]
            ends = [int(s.get("endTimeUnixNano") or 0) for s in spans]
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            return self._json_spans_checked(service, spans, stats)
        # Whole-column checks in C: id lengths, all-zero ids, integer kinds and status codes.
        if (set(map(len, tids)) != {16} or set(map(len, sids)) != {8} or not set(map(len, pids)) <= {0, 8}
                or ZERO16 in tids or ZERO8 in sids or set(map(type, kinds)) != {int}
                or set(map(type, statuses)) != {int} or min(starts) < 0 or max(ends) > _MAX_NS
                or min(ends) < 0 or max(starts) > _MAX_NS or not set(kinds) <= _KINDS or not set(statuses) <= _STATUSES):
            return self._json_spans_checked(service, spans, stats)
        entry, derive_attrs = _ENTRY_KINDS, self._derive_json
        derived = [_NOTHING if k in entry else derive_attrs(k, s.get("attributes")) for s, k in zip(spans, kinds)]
        self._add(service, tids, b"".join(sids), b"".join([p or ZERO8 for p in pids]),
                  names=self._kept([str(s.get("name") or "") for s in spans]), kind=kinds, start=starts, end=ends,
                  status=statuses, derived=derived)
        stats.spans += len(tids)

    def _json_spans_checked(self, service: tuple[int, int], spans: list, stats: SourceStats) -> None:
        tids: list[bytes] = []
        sids: list[bytes] = []
        pids: list[bytes] = []
        names: list[str] = []
        kinds: list[int] = []
        starts: list[int] = []
        ends: list[int] = []
        statuses: list[int] = []
        derived: list[Derived] = []
        fromhex = bytes.fromhex
        for s in spans:
            try:
                tid = fromhex(s.get("traceId") or "")
                sid = fromhex(s.get("spanId") or "")
            except (ValueError, TypeError, AttributeError):
                stats.skipped["bad_ids"] += 1
                stats.note(f"span {s.get('name') if isinstance(s, dict) else s!r}: trace or span id is not hex; span skipped")
                continue
            if len(tid) != 16 or tid == ZERO16 or len(sid) != 8 or sid == ZERO8:
                stats.skipped["bad_ids"] += 1
                stats.note(f"span {s.get('name')!r}: trace id or span id of the wrong length or all zero; span skipped")
                continue
            try:
                pid = fromhex(s.get("parentSpanId") or "")
            except (ValueError, TypeError):
                pid = b"?"
            if len(pid) not in (0, 8):
                stats.repaired["bad_parent_id"] += 1
                pid = b""
            try:
                kind = s.get("kind", 0)
                kind = kind if type(kind) is int else _enum(kind, _KIND_NAMES)
                start = int(s.get("startTimeUnixNano") or 0)
                end = int(s.get("endTimeUnixNano") or 0)
                status = (s.get("status") or {}).get("code", 0)
                status = status if type(status) is int else _enum(status, _STATUS_NAMES)
                if not (0 <= start <= _MAX_NS and 0 <= end <= _MAX_NS and kind in _KINDS and status in _STATUSES):
                    raise ValueError("out of range")
            except (ValueError, TypeError, AttributeError, KeyError, OverflowError):
                stats.skipped["invalid_spans"] += 1
                stats.note(f"span {s.get('name')!r}: kind, status or timestamps are not integers in range; span skipped")
                continue
            tids.append(tid)
            sids.append(sid)
            pids.append(pid or ZERO8)
            names.append(str(s.get("name") or ""))
            kinds.append(kind)
            starts.append(start)
            ends.append(end)
            statuses.append(status)
            derived.append(_NOTHING if kind in _ENTRY_KINDS else self._derive_json(kind, s.get("attributes")))
        if not tids:
            return
        n = len(tids)
        self._add(service, tids, b"".join(sids), b"".join(pids), names=self._kept(names), kind=kinds, start=starts, end=ends,
                  status=statuses, derived=derived)
        stats.spans += n

    def _kept(self, texts: list[str]) -> list[str]:
        """`texts` with any longer than the string limit cut to it (counted, `truncated_strings`)."""
        cap = self.limits.string
        if not texts or max(map(len, texts)) <= cap:
            return texts
        strings_cut(self._source, sum(len(t) > cap for t in texts), self.limits)
        return [t[:cap] for t in texts]

    def resource(self, attrs: dict[str, object]) -> tuple[int, int]:
        """(service code, environment code) of a resource's attributes; names cut to the string limit."""
        name = str(attrs.get(sc.SERVICE_NAME) or "unknown_service")
        service = self.b.service(name if len(name) <= self.limits.string else self._cut(name),
                                 _str_or_none(attrs.get(sc.PROCESS_RUNTIME_NAME)),
                                 _str_or_none(attrs.get(sc.TELEMETRY_SDK_LANGUAGE)))
        return service, self.b.environment(attrs)

    def _cut(self, text: str) -> str:
        strings_cut(self._source, 1, self.limits)
        return text[:self.limits.string]

    def _derive_json(self, kind: int, raw_attrs: object) -> Derived:
        try:
            # The usual shape, in comprehensions: {"key": k, "value": {"<type>Value": v}}.
            items = [(kv["key"], kv["value"]) for kv in raw_attrs if kv["key"] in sc.SPAN_KEYS]  # type: ignore[union-attr]
            attrs = {k: sv if (sv := val.get("stringValue")) is not None and len(val) == 1 else _json_value(val)
                     for k, val in items}
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):  # else: attribute by attribute
            attrs = _json_attrs(raw_attrs, sc.SPAN_KEYS, self._source)
        return self.derive(kind, attrs)

    def derive(self, kind: int, attrs: dict[str, object]) -> Derived:
        """What a span's attributes (only `semconv.SPAN_KEYS` matter; `attrs` is consumed) derive
        to: the repeating ones memoized together, the statement and URL on their own. Entry spans
        (SERVER, CONSUMER) derive nothing: their own time is the request's."""
        if kind in _ENTRY_KINDS:
            return _NOTHING
        values = {k: attrs.pop(k) for k in _VOLATILE.intersection(attrs)} if attrs else {}
        try:
            key = (kind, tuple(attrs.items()))
            hit = self._base.get(key)
        except TypeError:  # an unhashable value (array attribute): derive without memo
            return self._finish(derive_base(self.b, kind, attrs), values)
        if hit is None:
            hit = self._memo_base(key, derive_base(self.b, kind, attrs))
        return self._finish(hit[0], values) if values else hit[1]

    # -- shared -----------------------------------------------------------------------
    def _add(self, service: tuple[int, int], tids: list[bytes], sid_b: bytes, pid_b: bytes, *, names: list[str],
             kind: list[int], start: list[int], end: list[int], status: list[int], derived: list[Derived]) -> None:
        """Queue the columns of a group of spans; they become one Batch per `JSON_BATCH` spans (a
        group is a ScopeSpans, ~100 spans: a Batch each would cost more in numpy calls and in
        the table's concatenation than the spans themselves)."""
        p = self._json
        p.services.append((*service, len(tids)))
        p.tids += tids
        p.sids.append(sid_b)
        p.pids.append(pid_b)
        p.names += names
        p.kinds += kind
        p.starts += start
        p.ends += end
        p.statuses += status
        p.derived += derived
        if len(p.tids) >= JSON_BATCH:
            self._flush_json()

    def _flush_json(self) -> None:
        p, self._json = self._json, _JsonColumns()
        if not p.tids:
            return
        d = np.array(p.derived, dtype=np.int32).reshape(-1, 6)
        ids = np.frombuffer(b"".join(p.tids), dtype=">u8").reshape(-1, 2)
        codes, environments, counts = zip(*p.services)
        self.b.add(Batch(
            service=np.repeat(np.array(codes, np.int32), counts),
            environment=np.repeat(np.array(environments, np.int32), counts), trace_hi=ids[:, 0].astype(np.uint64),
            trace_lo=ids[:, 1].astype(np.uint64),
            span_id=np.frombuffer(b"".join(p.sids), dtype=">u8").astype(np.uint64),
            parent_id=np.frombuffer(b"".join(p.pids), dtype=">u8").astype(np.uint64),
            name=self.b.names.codes_of(p.names), kind=np.array(p.kinds, np.int8),
            start=np.array(p.starts, np.int64), end=np.array(p.ends, np.int64), status=np.array(p.statuses, np.int8),
            span_class=d[:, 0].astype(np.int8), db_system=d[:, 1].copy(), statement=d[:, 2].copy(),
            peer=d[:, 3].copy(), code_location=d[:, 4].copy(), cache_key=d[:, 5].copy(),
        ))

    def _memo_base(self, key: tuple, base: Base) -> tuple[Base, Derived]:
        value = (base, self._finish(base, {}))
        if len(self._base) < MEMO_LIMIT:
            self._base[key] = value
        return value

    def _finish(self, base: Base, values: dict[str, object]) -> Derived:
        """Add what the statement and URL decide to the memoized rest (`derive_base`)."""
        cls, db_system, summary, peer, port, location = base
        statement = _str_or_none(_first(values, sc.DB_STATEMENT)) if values else None
        if statement and len(statement) > self.limits.string:
            statement = self._cut(statement)
        stmt_code = cache_key = -1
        if statement:
            stmt_code, cache_key = self.statement_codes(statement, cls == SpanClass.CACHE)
        elif summary:  # no statement: a database or cache span's summary names the operation
            stmt_code = self.b.statements.code(summary)
        if peer == _NO_PEER:
            url = _first(values, sc.URL) if values else None
            if isinstance(url, str) and len(url) > self.limits.string:
                url = self._cut(url)
            peer = self.peer_of_url(url, port) if isinstance(url, str) else -1
        return cls, db_system, stmt_code, peer, location, cache_key

    def statement_codes(self, statement: str, cache: bool) -> tuple[int, int]:
        """(statement shape code, cache key code or -1) of a statement: a cache command's shape and
        key, else the normalized SQL; memoized by text."""
        memo = self._command if cache else self._sql
        hit = memo.get(statement)
        if hit is None:
            hit = self.new_statement_codes(statement, cache)
            if len(memo) < VOLATILE_MEMO_LIMIT:
                memo[statement] = hit
        return hit

    def new_statement_codes(self, statement: str, cache: bool) -> tuple[int, int]:
        """`statement_codes` without the memo, for callers that memoize on their own."""
        if cache:
            shape, key = normalize_command(statement)
            return self.b.statements.code(shape), self.b.strings.code(key)
        return self.b.statements.code(normalize_sql(statement)), -1

    def peer_of_url(self, url: str, port: object) -> int:
        # Only scheme and authority decide the peer: memoize on them, not on the per-request path.
        m = _AUTHORITY.match(url)
        head = m.group(0) if m and (m.end() == len(url) or url[m.end()] in "/?#") else url
        try:
            return self._url_peer[(head, port)]
        except KeyError:
            pass
        except TypeError:  # unhashable port
            return self.b.peers.code(_peer(None, port, url))
        code = self.b.peers.code(_peer(None, port, head))
        if len(self._url_peer) < VOLATILE_MEMO_LIMIT:
            self._url_peer[(head, port)] = code
        return code


# Scheme and authority of a URL: what urlsplit reads its host and port from. The URL's first
# colon must be the one of "://" (no ":/?#" or white space before it), and the authority ends
# where urlsplit ends it, at the first "/", "?" or "#"; anything else takes the full URL.
_AUTHORITY = re.compile(r"[^:/?#\s]*://[^/?#\s]*")
_NOTHING: Derived = (int(SpanClass.INTERNAL), -1, -1, -1, -1, -1)


def _first(attrs: dict[str, object], keys: Iterable[str]) -> object:
    for k in keys:
        v = attrs.get(k)
        if v is not None and v != "":
            return v
    return None


def derive_base(b: TableBuilder, kind: int, attrs: dict[str, object]) -> Base:
    """What the attributes other than the statement and URL decide (see `Base`)."""
    db_system = _str_or_none(_first(attrs, sc.DB_SYSTEM))
    if _first(attrs, sc.MESSAGING_SYSTEM) is not None or kind == Kind.PRODUCER:
        cls = SpanClass.MESSAGING
    elif db_system is not None:
        cls = SpanClass.CACHE if db_system.lower() in sc.CACHE_SYSTEMS else SpanClass.DATABASE
    elif kind == Kind.CLIENT:
        cls = SpanClass.REMOTE
    else:
        cls = SpanClass.INTERNAL

    summary = _str_or_none(_first(attrs, sc.DB_SUMMARY)) if cls in (SpanClass.DATABASE, SpanClass.CACHE) else None

    host, port = _first(attrs, sc.PEER_HOST), _first(attrs, sc.PEER_PORT)
    peer = b.peers.code(_peer(host, port, None)) if host is not None else _NO_PEER
    location = _location(_first(attrs, sc.CODE_FILE), _first(attrs, sc.CODE_LINE), _first(attrs, sc.CODE_FUNCTION),
                         _first(attrs, sc.CODE_NAMESPACE))
    return int(cls), b.strings.code(db_system), summary or None, peer, port, b.code_locations.code(location)
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


def _json_attrs(attrs: object, wanted: frozenset[str] | None, stats: SourceStats) -> dict[str, object]:
    """The attributes (those in `wanted`) as a dict; one whose key is not a string or whose integer
    does not decode is skipped and counted (`invalid_attributes`)."""
    out: dict[str, object] = {}
    if not isinstance(attrs, list):
        return out
    if wanted is not None:
        try:  # the few wanted ones first, in C; anything odd goes through the checked loop below
            attrs = [kv for kv in attrs if kv["key"] in wanted]
        except (KeyError, TypeError):
            pass
    bad = 0
    for kv in attrs:
        key = kv.get("key") if isinstance(kv, dict) else None
        if not isinstance(key, str):
            bad += 1
            continue
        if wanted is not None and key not in wanted:
            continue
        value = kv.get("value")
        if isinstance(value, dict) and value:
            (vtype, v), = list(value.items())[:1]
            if vtype == "intValue":
                try:
                    v = int(v)
                except (ValueError, TypeError, OverflowError):
                    bad += 1
                    continue
            out[key] = v
    if bad:
        stats.skipped["invalid_attributes"] += bad
        stats.note(f"{bad} attribute(s) with a key that is not a string or an integer that does not decode; skipped")
    return out


def _parts(parent: dict, key: str, stats: SourceStats) -> list[dict]:
    """`parent[key]`, an array of objects: the objects; anything of another type is counted."""
    items = parent.get(key)
    if not items:
        return []
    if not isinstance(items, list):
        _wrong_type(stats, key)
        return []
    if all(type(x) is dict for x in items):
        return items
    bad = sum(not isinstance(x, dict) for x in items)
    _wrong_type(stats, f"{bad} item(s) of {key}")
    return [x for x in items if isinstance(x, dict)]


def _wrong_type(stats: SourceStats, what: str) -> None:
    stats.skipped["invalid_messages"] += 1
    stats.note(f"{what}: not of the type OTLP/JSON gives it; skipped with what it holds")


def _json_value(value: dict) -> object:
    """An AnyValue's value as `_json_attrs` reads it (its first member; intValue as an int)."""
    (vtype, v), = list(value.items())[:1]
    return int(v) if vtype == "intValue" else v


def _str_or_none(v: object) -> str | None:
    return None if v is None else str(v)


def _enum(v: object, names: dict[str, int]) -> int:
    """OTLP/JSON enums are integers; tolerate the enum names some producers write."""
    if isinstance(v, str) and not v.isdigit():
        return names[v]
    return int(v)  # type: ignore[arg-type]


@dataclass
class _JsonColumns:
    """Span columns from OTLP/JSON waiting to become a Batch."""

    services: list[tuple[int, int, int]] = field(default_factory=list)  # (service, environment, spans), per group
    tids: list[bytes] = field(default_factory=list)
    sids: list[bytes] = field(default_factory=list)  # each group's span ids, joined
    pids: list[bytes] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    kinds: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    derived: list[Derived] = field(default_factory=list)


@dataclass
class LoadedTraces:
    table: SpanTable
    sources: list[SourceStats]
    repairs: Repairs


def load_traces(paths: list[str], limits: Limits = DEFAULT_LIMITS, span_columns: ColumnMapping | None = None) -> LoadedTraces:
    """Read every OTLP trace file under `paths` into one SpanTable.

    Raises `InputError` for a path that is missing or a named file that is not OTLP at all.
    A file found inside a named directory that is not OTLP (a README beside the captures) is
    skipped and recorded as such; damaged parts of OTLP files are counted in the stats.
    Other trace formats are read too (collectors/trace_json.py, span_tables.py); `span_columns`
    maps the columns of CSV or Parquet span tables whose layout is not recognized."""
    builder = TableBuilder()
    decoder = TraceDecoder(builder, limits)
    sources: list[SourceStats] = []
    # Decoding makes no reference cycles, but each OTLP/JSON line is tens of thousands of dicts
    # alive at once: enough to set off a full collection every few lines, a quarter of the
    # time of a 1M-span JSON file. Reference counting frees everything here on its own.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _load(paths, decoder, sources, limits, span_columns)
    finally:
        if gc_was_enabled:
            gc.enable()
    table = builder.finish()
    return LoadedTraces(table=table, sources=sources, repairs=builder.repairs)


def _load(paths: list[str], decoder: TraceDecoder, sources: list[SourceStats], limits: Limits,
          span_columns: ColumnMapping | None) -> None:
    for found in expand_paths(paths):
        stats = SourceStats(path=shown(found.path))
        sources.append(stats)
        if found.skip:
            stats.format = "not-read"
            stats.skipped[found.skip] += 1
            stats.note(found.why)
            continue
        try:
            if span_tables.sniff(found.path):
                for doc in span_tables.read(found.path, stats, span_columns):
                    decoder.add_json(doc, stats)
                decoder.flush()
                continue
            for kind, payload in iter_messages(found.path, stats, limits):
                if kind == "proto":
                    decoder.add_proto(payload, stats)  # type: ignore[arg-type]
                else:
                    for doc in trace_json.to_otlp(payload, stats):
                        decoder.add_json(doc, stats)
                # Freed before the next message is parsed, which then reuses its memory while it
                # is still in cache (a JSON line is ~100k objects).
                del payload
            decoder.flush()
        except InputError as e:
            decoder.flush()  # the messages read before the error are kept
            if not found.in_directory:
                raise
            stats.format = "not-otlp" if e.skip == "files" else "not-read"
            stats.skipped[e.skip] += 1
            stats.note(str(e))
