"""An `otel_traces` table as the OpenTelemetry Collector's ClickHouse exporter creates and fills it.

`create_table` issues the exporter's DDL (the current one, or the older variant with an `Int64`
Duration and `Error`/`Server` enum spellings); `load_otlp_jsonl` fills it from OTLP/JSON lines
(the Collector's file-exporter format, what the tests' real SDK workloads and the benchmark fleet
write) with the exporter's mapping: ids as lowercase hex, kind and status as their enum names,
every attribute value as a string, the resource's `service.name` in `ServiceName`, the scope
name in `SpanAttributes['otel.scope.name']`. The conversion runs in ClickHouse (each line parsed once
into typed nested tuples), so a million spans load in seconds. Used by tests/test_clickhouse.py and the benchmark.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The exporter's traces table (exporter/clickhouseexporter/internal/sqltemplates/traces_table.sql):
# its columns, types, codecs, skip indexes, partitioning and order. Older releases differ in the
# Duration type, the scope columns and the order (OLD_DDL); some wrote pdata's enum names
# (`Server`, `Error`), which `load_otlp_jsonl(..., old=True)` mimics.
_HEAD = """
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),"""
_TAIL = """
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (Timestamp DateTime64(9), Name LowCardinality(String),
                   Attributes Map(LowCardinality(String), String)) CODEC(ZSTD(1)),
    Links Nested (TraceId String, SpanId String, TraceState String,
                  Attributes Map(LowCardinality(String), String)) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,"""
CURRENT_DDL = "CREATE TABLE IF NOT EXISTS {table} (" + _HEAD + """
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),""" + _TAIL + """
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp))
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
"""
OLD_DDL = "CREATE TABLE IF NOT EXISTS {table} (" + _HEAD + """
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration Int64 CODEC(ZSTD(1)),""" + _TAIL + """
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE MergeTree()
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toUnixTimestamp(Timestamp), TraceId)
SETTINGS index_granularity = 8192
"""

_KINDS = ["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]
_STATUSES = ["UNSET", "OK", "ERROR"]

# OTLP/JSON as typed nested tuples: each line is parsed once by the JSON input format.
_VALUE = "Tuple(stringValue Nullable(String), intValue Nullable(String), boolValue Nullable(Bool), doubleValue Nullable(Float64))"
_KVS = f"Array(Tuple(key String, value {_VALUE}))"
_STRUCTURE = (
    f"resourceSpans Array(Tuple(resource Tuple(attributes {_KVS}), scopeSpans Array(Tuple("
    f"scope Tuple(name String, version String), spans Array(Tuple(traceId String, spanId String, parentSpanId String, "
    f"traceState String, name String, kind Int32, startTimeUnixNano String, endTimeUnixNano String, "
    f"attributes {_KVS}, status Tuple(code Int32, message String)))))))"
)


def _attrs(kvs: str) -> str:
    """An OTLP KeyValue array -> Map(String, String), each value as the exporter's AsString gives it."""
    return (f"CAST(arrayMap(kv -> (kv.key, multiIf(kv.value.stringValue IS NOT NULL, kv.value.stringValue, "
            f"kv.value.intValue IS NOT NULL, kv.value.intValue, kv.value.boolValue IS NOT NULL, "
            f"if(kv.value.boolValue, 'true', 'false'), kv.value.doubleValue IS NOT NULL, "
            f"toString(kv.value.doubleValue), '')), {kvs}), 'Map(String, String)')")


def create_table(session: Any, table: str = "otel.otel_traces", old: bool = False) -> None:
    """Create the database and the exporter's table in a chDB session (or anything with `.query`)."""
    database = table.rsplit(".", 1)[0]
    session.query(f"CREATE DATABASE IF NOT EXISTS {database}")
    session.query((OLD_DDL if old else CURRENT_DDL).format(table=table))


def load_otlp_jsonl(session: Any, path: Path, table: str = "otel.otel_traces", old: bool = False) -> None:
    """Insert every span of an OTLP/JSON lines file (gzip by extension is fine) as the exporter would."""
    kind_names = [n.capitalize() for n in _KINDS] if old else [f"SPAN_KIND_{n}" for n in _KINDS]
    status_names = [n.capitalize() for n in _STATUSES] if old else [f"STATUS_CODE_{n}" for n in _STATUSES]
    scope_cols = "" if old else "ScopeName, ScopeVersion, "
    scope_vals = "" if old else "ss.scope.name, ss.scope.version,"
    session.query(f"""
        INSERT INTO {table} (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName,
                             ResourceAttributes, {scope_cols}SpanAttributes, Duration, StatusCode, StatusMessage)
        SELECT fromUnixTimestamp64Nano(toInt64(s.startTimeUnixNano)), lower(s.traceId), lower(s.spanId),
               lower(s.parentSpanId), s.traceState, s.name, {kind_names}[s.kind + 1],
               {_attrs('rs.resource.attributes')}['service.name'], {_attrs('rs.resource.attributes')},
               {scope_vals}
               mapUpdate({_attrs('s.attributes')},
                         if(ss.scope.name = '', map(), map('otel.scope.name', ss.scope.name))),
               toInt64(s.endTimeUnixNano) - toInt64(s.startTimeUnixNano),
               {status_names}[s.status.code + 1], s.status.message
        FROM file('{_sql_string(str(path))}', 'JSONEachRow', '{_STRUCTURE}')
        ARRAY JOIN resourceSpans AS rs
        ARRAY JOIN rs.scopeSpans AS ss
        ARRAY JOIN ss.spans AS s
        SETTINGS input_format_skip_unknown_fields = 1, input_format_json_read_numbers_as_strings = 1
    """)


def _sql_string(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'")
