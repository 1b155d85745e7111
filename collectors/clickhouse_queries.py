"""The SQL run against `otel_traces`: text built from constants and validated identifiers only;
every value (window, services, attribute keys, trace ids) is a bound `{name:Type}` parameter.

Each query ends in a SETTINGS clause that bounds it on the server: `max_execution_time`,
`max_result_rows` with `result_overflow_mode = 'throw'` (a result larger than planned is an
error, never a silent cut), and Arrow strings as strings.

The whole-window queries read only the columns they need and attribute values by key
(`SpanAttributes[{k:String}]`), never whole maps, and attribute maps only where the figure needs
them. What they compute:
- `operations`: entry spans per (service, operation): count, total time, exact p50/p95/p99,
  errors. The hot-spot ranking.
- `repetitions`: per trace and service, how often each normalized statement ran, aggregated per
  (service, entry operation, statement): the whole-window figure behind the N+1 rule, for the
  statements a sampled trace repeats (the rule quotes it only beside a finding of the sample).
- `candidates`: a hash-uniform listing of root spans per root operation for the sampler.
- `spans`: every span of the sampled traces, with the attributes the SpanTable derives from and
  its statement's `normalizedQueryHash`.

An entry span here is a root or a SERVER/CONSUMER span: the table has no parent's service or
kind without a join, so a SERVER span called from inside its own service (rare) counts as an
entry here while the local breakdown nests it; the sample's breakdown is unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from analyzer.model import semconv as sc
from collectors.clickhouse_schema import ENTRY_KINDS, ERROR_STATUSES, KIND_NAMES, TableRef, TableShape
from analyzer.model.spans import Kind

QUANTILES = (0.5, 0.95, 0.99)
HASH_RANGE = 1 << 20  # candidates are listed where cityHash64(TraceId) % HASH_RANGE < the group's limit
_PRODUCER_KINDS = tuple(n for n, k in KIND_NAMES.items() if k == Kind.PRODUCER)
# Span attributes fetched for the sample: what `derive_base` and the statement/URL readers use.
SPAN_KEYS = tuple(sorted(sc.SPAN_KEYS))
RESOURCE_KEYS = (sc.PROCESS_RUNTIME_NAME, sc.TELEMETRY_SDK_LANGUAGE, *sc.DEPLOYMENT_ENVIRONMENT)


@dataclass(frozen=True)
class Bounds:
    """Limits every query carries."""

    max_execution_time: int = 300  # seconds
    max_result_rows: int = 1_000_000


@dataclass(frozen=True)
class Window:
    start_ns: int | None = None
    end_ns: int | None = None
    services: tuple[str, ...] = ()
    # deployment.environment values kept (and spans whose resource names none); empty: no filter.
    # Needs the ResourceAttributes column.
    environments: tuple[str, ...] = ()


Query = tuple[str, dict[str, object]]


def columns(ref: TableRef, b: Bounds) -> Query:
    return (f"SELECT name, type FROM system.columns WHERE database = {{db:String}} AND table = {{table:String}}"
            f"{_settings(b, 10_000)}", {"db": ref.database, "table": ref.table})


def totals(shape: TableShape, w: Window, b: Bounds) -> Query:
    where, params = _where(w)
    return (f"SELECT count() AS spans, uniq(TraceId) AS traces FROM {shape.ref.sql} WHERE {where}{_settings(b, 1)}",
            params)


def operations(shape: TableShape, w: Window, b: Bounds, limit: int) -> Query:
    where, params = _where(w)
    params.update(entry_kinds=list(ENTRY_KINDS), error_statuses=list(ERROR_STATUSES), limit=limit)
    d = shape.duration_sql
    q = ", ".join(repr(x) for x in QUANTILES)
    return (f"SELECT ServiceName AS service, SpanName AS operation, count() AS n, sum({d}) AS total_ns, "
            f"quantilesExactInclusive({q})({d}) AS q, countIf(StatusCode IN {{error_statuses:Array(String)}}) AS errors, "
            f"countIf(ParentSpanId = '') AS roots "
            f"FROM {shape.ref.sql} WHERE {where} AND {_ENTRY} "
            f"GROUP BY service, operation ORDER BY total_ns DESC, service, operation LIMIT {{limit:UInt32}}"
            f"{_settings(b, limit)}", params)


def repetitions(shape: TableShape, w: Window, b: Bounds, min_repetitions: int, services: Sequence[str],
                hashes: Sequence[int], limit: int) -> Query:
    """Per (service, entry operation, statement hash), for the statements `hashes` of `services`
    (what the sample repeats): traces running it, executions, the most in one trace, and the
    traces (and their executions) with at least `min_repetitions`. Two reads of those services
    only (the ordering key's first column: their granules alone are read): their entry spans,
    from columns only, and their spans that carry a statement key (a PREWHERE on the map's keys;
    the maps are read for those alone), grouped together by (trace, service); the operation is
    the service's first entry span in the trace. Traces are grouped by a 64-bit hash of their id
    (a fixed-size key: a third of the memory of the hex strings; two of a million traces collide
    with odds of about 1 in 10^7)."""
    where, params = _where(w)
    source, db_source_params = _database_keys(shape, w, services)
    db, db_params = _is_database()
    params.update(db_source_params)
    params.update(db_params, entry_kinds=list(ENTRY_KINDS), min_rep=min_repetitions, limit=limit,
                  hashes=[int(h) for h in hashes], r_services=list(services))
    entries = (f"SELECT cityHash64(TraceId) AS trace, ServiceName AS service, toString(SpanName) AS entry_op, "
               f"Timestamp AS ts, toUInt64(0) AS h FROM {shape.ref.sql} "
               f"PREWHERE ServiceName IN {{r_services:Array(String)}} AND {_ENTRY} WHERE {where}")
    statements = (f"SELECT cityHash64(TraceId) AS trace, ServiceName AS service, '' AS entry_op, Timestamp AS ts, "
                  f"normalizedQueryHash({_STATEMENT}) AS h FROM {source} "
                  f"WHERE {db} AND normalizedQueryHash({_STATEMENT}) IN {{hashes:Array(UInt64)}}")
    return (f"SELECT service, operation, h, count() AS traces, sum(n) AS executions, max(n) AS most, "
            f"countIf(n >= {{min_rep:UInt32}}) AS repeating, sumIf(n, n >= {{min_rep:UInt32}}) AS repeated "
            f"FROM (SELECT service, argMinIf(entry_op, ts, h = 0) AS operation, "
            f"sumMapIf([h], [toUInt64(1)], h != 0) AS m FROM ({entries} UNION ALL {statements}) "
            f"GROUP BY trace, service) "
            f"ARRAY JOIN m.1 AS h, m.2 AS n WHERE operation != '' "
            f"GROUP BY service, operation, h ORDER BY repeated DESC, executions DESC LIMIT {{limit:UInt32}}"
            f"{_settings(b, limit)}", params)


def candidates(shape: TableShape, w: Window, b: Bounds, groups: Sequence[tuple[str, str]],
               thresholds: Sequence[int], per_group: int) -> Query:
    """Root spans of `groups` (service, operation) whose trace id hashes below the group's
    threshold (out of HASH_RANGE): a uniform draw whose size the caller sets from the group's
    count of roots; `LIMIT BY` bounds each group at `per_group` whatever the hash gives. Roots only:
    each trace is then listed once, under its root operation, so its sample weight (1 / its
    chance of being drawn there) holds for every span in it, downstream services included. The
    (service, operation) condition is on the ordering key's prefix: only those operations'
    granules are read."""
    where, params = _where(w)
    params.update(groups=[tuple(g) for g in groups], thresholds=[int(t) for t in thresholds], per_group=per_group)
    limit_rows = max(1, per_group * len(groups))
    return (f"SELECT TraceId AS trace_id, ServiceName AS service, SpanName AS operation, {shape.duration_sql} AS dur "
            f"FROM {shape.ref.sql} WHERE {where} AND (ServiceName, SpanName) IN {{groups:Array(Tuple(String, String))}} "
            f"AND ParentSpanId = '' AND cityHash64(TraceId) % {HASH_RANGE} < arrayElement({{thresholds:Array(UInt32)}}, "
            f"indexOf({{groups:Array(Tuple(String, String))}}, (ServiceName, SpanName))) "
            f"LIMIT {{per_group:UInt32}} BY ServiceName, SpanName{_settings(b, limit_rows)}", params)


def _trace_conds(trace_ids: Sequence[str], start_ns: int | None, end_ns: int | None) -> tuple[str, dict[str, object]]:
    params: dict[str, object] = {"ids": list(trace_ids)}
    conds = ["TraceId IN {ids:Array(String)}"]
    if start_ns is not None:
        conds.append("Timestamp >= fromUnixTimestamp64Nano({t0:Int64})")
        params["t0"] = int(start_ns)
    if end_ns is not None:
        conds.append("Timestamp < fromUnixTimestamp64Nano({t1:Int64})")
        params["t1"] = int(end_ns)
    return " AND ".join(conds), params


def resources(shape: TableShape, trace_ids: Sequence[str], start_ns: int | None, end_ns: int | None,
              entry_operations: Sequence[tuple[str, str]], b: Bounds, max_rows: int) -> Query:
    """The resource attributes the SpanTable reads (runtime, deployment.environment) of the entry
    spans of `trace_ids`, per (trace, service). A service's spans in one trace run in the process
    of its entry span, so they share its resource. The (service, operation) pairs of the entry
    spans (the ranking's) are the ordering key's prefix: only their granules are read, the trace
    ids and the (large) ResourceAttributes map included, not every granule a sampled span is in."""
    where, params = _trace_conds(trace_ids, start_ns, end_ns)
    params.update({f"r{i}": key for i, key in enumerate(RESOURCE_KEYS)}, entry_kinds=list(ENTRY_KINDS),
                  entry_ops=[tuple(g) for g in entry_operations])
    columns = ", ".join(f"ResourceAttributes[{{r{i}:String}}] AS r{i}" for i in range(len(RESOURCE_KEYS)))
    return (f"SELECT TraceId AS trace_id, ServiceName AS service, {columns} FROM {shape.ref.sql} "
            f"WHERE (ServiceName, SpanName) IN {{entry_ops:Array(Tuple(String, String))}} AND {where} AND {_ENTRY} "
            f"LIMIT 1 BY TraceId, ServiceName{_settings(b, max_rows)}", params)


def spans(shape: TableShape, trace_ids: Sequence[str], start_ns: int | None, end_ns: int | None,
          b: Bounds, max_rows: int) -> Query:
    """Every span of `trace_ids` (in the time range when given, to prune partitions); their
    resources come from `resources`."""
    where, params = _trace_conds(trace_ids, start_ns, end_ns)
    params["span_keys"] = list(SPAN_KEYS)
    # The statement's normalizedQueryHash ties the sample's statements to the store's repetition counts.
    params.update(_STATEMENT_PARAMS)
    # One pass over each span's map keeping the keys the SpanTable derives from (several times
    # faster than a lookup per key), and none for entry spans, whose attributes are not read.
    return (f"SELECT TraceId AS trace_id, SpanId AS span_id, ParentSpanId AS parent_id, SpanName AS name, "
            f"SpanKind AS kind, ServiceName AS service, toUnixTimestamp64Nano(Timestamp) AS start, "
            f"{shape.duration_sql} AS dur, StatusCode AS status, "
            f"if({_ENTRY} OR {_STATEMENT} = '', toUInt64(0), normalizedQueryHash({_STATEMENT})) AS h, "
            f"if({_ENTRY}, map(), mapFilter((k, v) -> k IN {{span_keys:Array(String)}}, SpanAttributes)) AS attrs "
            f"FROM {shape.ref.sql} WHERE {where}{_settings(b, max_rows)}",
            {**params, "entry_kinds": list(ENTRY_KINDS)})


def bare_scan(shape: TableShape, b: Bounds) -> Query:
    """The floor the benchmark compares with: one grouped pass over the table."""
    return (f"SELECT ServiceName, SpanName, count(), sum(Duration) FROM {shape.ref.sql} "
            f"GROUP BY ServiceName, SpanName{_settings(b, 1_000_000)}", {})


_ENTRY = "(ParentSpanId = '' OR SpanKind IN {entry_kinds:Array(String)})"


def _first_of(keys: Sequence[str], prefix: str) -> tuple[str, dict[str, object]]:
    """The first non-empty of `SpanAttributes[key]` over `keys`, as SQL, with its key parameters."""
    names = [f"{prefix}{i}" for i in range(len(keys))]
    parts = [f"SpanAttributes[{{{n}:String}}] != '', SpanAttributes[{{{n}:String}}]" for n in names]
    return f"multiIf({', '.join(parts)}, '')", dict(zip(names, keys))


_STATEMENT, _STATEMENT_PARAMS = _first_of(sc.DB_STATEMENT, "stmt")
_DB_SYSTEM, _DB_SYSTEM_PARAMS = _first_of(sc.DB_SYSTEM, "dbsys")
_MESSAGING, _MESSAGING_PARAMS = _first_of(sc.MESSAGING_SYSTEM, "msg")


def _database_keys(shape: TableShape, w: Window, services: Sequence[str]) -> tuple[str, dict[str, object]]:
    """The window's spans of `services` with a statement key, their attribute map cut down to the
    keys that classify a database span, as a subquery. The PREWHERE reads the map's keys alone;
    the values are read for the rows it keeps, and each is looked up in a map of a few entries."""
    where, params = _where(w)
    params.update(db_keys=list(sc.DB_STATEMENT + sc.DB_SYSTEM + sc.MESSAGING_SYSTEM),
                  stmt_keys=list(sc.DB_STATEMENT), r_services=list(services))
    return (f"(SELECT TraceId, ServiceName, SpanKind, Timestamp, "
            f"mapFilter((k, v) -> k IN {{db_keys:Array(String)}}, SpanAttributes) AS SpanAttributes "
            f"FROM {shape.ref.sql} PREWHERE ServiceName IN {{r_services:Array(String)}} "
            f"AND hasAny(mapKeys(SpanAttributes), {{stmt_keys:Array(String)}}) WHERE {where})", params)


def _is_database() -> tuple[str, dict[str, object]]:
    """A database (not cache, not messaging) span with a statement, as `derive_base` classifies."""
    sql = (f"({_STATEMENT} != '' AND {_DB_SYSTEM} != '' AND lower({_DB_SYSTEM}) NOT IN {{cache_systems:Array(String)}} "
           f"AND {_MESSAGING} = '' AND SpanKind NOT IN {{producer_kinds:Array(String)}})")
    return sql, {**_STATEMENT_PARAMS, **_DB_SYSTEM_PARAMS, **_MESSAGING_PARAMS,
                 "cache_systems": sorted(sc.CACHE_SYSTEMS), "producer_kinds": list(_PRODUCER_KINDS)}


def _where(w: Window) -> tuple[str, dict[str, object]]:
    conds, params = ["1"], {}
    if w.start_ns is not None:
        conds.append("Timestamp >= fromUnixTimestamp64Nano({w_start:Int64})")
        params["w_start"] = int(w.start_ns)
    if w.end_ns is not None:
        conds.append("Timestamp < fromUnixTimestamp64Nano({w_end:Int64})")
        params["w_end"] = int(w.end_ns)
    if w.services:
        conds.append("ServiceName IN {w_services:Array(String)}")
        params["w_services"] = list(w.services)
    if w.environments:
        keys = [f"ResourceAttributes[{{w_env{i}:String}}]" for i in range(len(sc.DEPLOYMENT_ENVIRONMENT))]
        first = ", ".join(k + " != '', " + k for k in keys)  # the first name set, as _first_of
        conds.append(f"multiIf({first}, '') IN {{w_envs:Array(String)}}")
        params.update({f"w_env{i}": k for i, k in enumerate(sc.DEPLOYMENT_ENVIRONMENT)})
        params["w_envs"] = [*w.environments, ""]  # "": the resource names no environment, kept
    return " AND ".join(conds), params


def _settings(b: Bounds, rows: int) -> str:
    return (f" SETTINGS max_execution_time = {int(b.max_execution_time)}, "
            f"max_result_rows = {int(min(rows, b.max_result_rows))}, result_overflow_mode = 'throw', "
            f"output_format_arrow_string_as_string = 1")
