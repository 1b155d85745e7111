"""The contract with ClickHouse: the OpenTelemetry Collector ClickHouse exporter's `otel_traces`.

The exporter (`exporter/clickhouseexporter`, opentelemetry-collector-contrib) creates, per span:
`Timestamp DateTime64(9)` (start), `TraceId`, `SpanId`, `ParentSpanId` (lowercase hex, the
parent empty for roots), `SpanName`, `SpanKind`, `ServiceName`, `ResourceAttributes` and
`SpanAttributes` (`Map(LowCardinality(String), String)`: every value a string), `Duration`
(`UInt64` ns) and `StatusCode`, ordered by `(ServiceName, SpanName, toDateTime(Timestamp))`.

`check` reads the table's columns from `system.columns` and returns the `TableShape` the queries
are built for, or says which columns are missing. Variants that users still run:
- `Duration Int64` (older releases): negative values are read as 0.
- `StatusCode` `Error`/`Ok`/`Unset` and `SpanKind` `Server`/`Client`/... (pdata's enum names,
  written by some releases) beside `STATUS_CODE_ERROR` and `SPAN_KIND_SERVER`: both spellings
  are matched everywhere, so a table written by several Collector versions reads whole.
- `ResourceAttributes` missing (hand-made tables): runtimes are then unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from analyzer.model.spans import Kind, Status

DEFAULT_DATABASE = "otel"
DEFAULT_TABLE = "otel_traces"

# Both spellings of each enum value the exporter has written (see the module docstring).
KIND_NAMES: dict[str, int] = {}
for _k in Kind:
    KIND_NAMES[f"SPAN_KIND_{_k.name}"] = int(_k)
    KIND_NAMES[_k.name.capitalize()] = int(_k)
STATUS_NAMES: dict[str, int] = {}
for _s in Status:
    STATUS_NAMES[f"STATUS_CODE_{_s.name}"] = int(_s)
    STATUS_NAMES[_s.name.capitalize()] = int(_s)
ENTRY_KINDS = tuple(n for n, k in KIND_NAMES.items() if k in (Kind.SERVER, Kind.CONSUMER))
ERROR_STATUSES = tuple(n for n, s in STATUS_NAMES.items() if s == Status.ERROR)

# Column -> what its type must look like (matched on the type with LowCardinality/Nullable
# wrappers removed), and what it is for, for the message when it is missing.
_REQUIRED: dict[str, tuple[str, str]] = {
    "Timestamp": (r"DateTime64\(\d.*\)", "span start, DateTime64(9)"),
    "TraceId": (r"String|FixedString\(\d+\)", "trace id, hex String"),
    "SpanId": (r"String|FixedString\(\d+\)", "span id, hex String"),
    "ParentSpanId": (r"String|FixedString\(\d+\)", "parent span id, hex String"),
    "SpanName": (r"String", "operation name"),
    "SpanKind": (r"String", "SPAN_KIND_SERVER, ..."),
    "ServiceName": (r"String", "service.name"),
    "SpanAttributes": (r"Map\((LowCardinality\()?String\)?, String\)", "Map(LowCardinality(String), String)"),
    "Duration": (r"U?Int64", "nanoseconds, UInt64 (or Int64 in older schemas)"),
    "StatusCode": (r"String", "STATUS_CODE_ERROR, ... (or Error, ...)"),
}
_OPTIONAL: dict[str, str] = {"ResourceAttributes": _REQUIRED["SpanAttributes"][0]}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class SchemaError(Exception):
    """The table does not exist or does not fit the exporter's contract. One line, user-facing."""


@dataclass(frozen=True)
class TableRef:
    """A validated `database.table`; `sql` is the quoted form put into queries."""

    database: str
    table: str

    @classmethod
    def parse(cls, text: str) -> "TableRef":
        """`otel.otel_traces` or `otel_traces` (database `otel`). Only plain identifiers are accepted:
        they are the one part of a query that cannot be a bound parameter."""
        database, _, table = text.rpartition(".")
        database = database or DEFAULT_DATABASE
        for part in (database, table):
            if not _IDENTIFIER.fullmatch(part):
                raise SchemaError(f"--clickhouse-table {text!r}: expected DATABASE.TABLE made of letters, digits "
                                  f"and underscores (default {DEFAULT_DATABASE}.{DEFAULT_TABLE})")
        return cls(database, table)

    @property
    def sql(self) -> str:
        return f"`{self.database}`.`{self.table}`"

    def __str__(self) -> str:
        return f"{self.database}.{self.table}"


@dataclass(frozen=True)
class TableShape:
    """What the queries need to know about the table's variant."""

    ref: TableRef
    signed_duration: bool  # Int64 Duration (older schemas)
    has_resource_attributes: bool

    @property
    def duration_sql(self) -> str:
        """The span's duration in ns as UInt64, whatever the column's type."""
        return "toUInt64(greatest(Duration, 0))" if self.signed_duration else "Duration"

    @property
    def variant(self) -> str:
        parts = ["Int64 Duration"] if self.signed_duration else []
        if not self.has_resource_attributes:
            parts.append("no ResourceAttributes")
        return "exporter schema" + (f" ({', '.join(parts)})" if parts else "")


def check(ref: TableRef, columns: dict[str, str]) -> TableShape:
    """The shape of `ref` from its columns (name -> ClickHouse type), or a SchemaError naming
    what is missing or of the wrong type."""
    if not columns:
        raise SchemaError(f"ClickHouse table {ref} not found; point --clickhouse-table at the exporter's table "
                          f"(DATABASE.TABLE, default {DEFAULT_DATABASE}.{DEFAULT_TABLE})")
    missing, wrong = [], []
    for name, (pattern, meaning) in _REQUIRED.items():
        if name not in columns:
            missing.append(f"{name} ({meaning})")
        elif not re.fullmatch(pattern, _bare(columns[name])):
            wrong.append(f"{name} is {columns[name]}, expected {meaning}")
    if missing or wrong:
        what = "; ".join(([f"missing columns: {', '.join(missing)}"] if missing else []) + wrong)
        raise SchemaError(f"ClickHouse table {ref} is not an OpenTelemetry exporter traces table: {what}")
    resource = "ResourceAttributes" in columns and re.fullmatch(_OPTIONAL["ResourceAttributes"],
                                                               _bare(columns["ResourceAttributes"])) is not None
    return TableShape(ref=ref, signed_duration=_bare(columns["Duration"]) == "Int64",
                      has_resource_attributes=resource)


def _bare(ch_type: str) -> str:
    """A type without LowCardinality(...)/Nullable(...) around it (kept inside a Map's key)."""
    t = ch_type.strip()
    while True:
        m = re.fullmatch(r"(?:LowCardinality|Nullable)\((.*)\)", t)
        if not m:
            return t
        t = m.group(1)
