"""Span tables: CSV or Parquet with one span per row, as trace warehouses export them.

A `ColumnMapping` names the columns holding the trace id, span id, parent id, service, span
name, start, and end or duration, optionally kind, status, attributes (a JSON object per
row) and environment (`deployment.environment`). It comes from the config (`[span_table]`) or
the command line (`--span-columns trace_id=TraceID,...`); two layouts are recognized from their header without one: the Nezha
dataset's (`TraceID,SpanID,ParentID,PodName,OperationName,StartTimeUnixNano,...`) and the
OpenTelemetry Collector ClickHouse exporter's `otel_traces` columns.

- Service from a pod name (`service_from = "pod"`): Kubernetes Deployment pods are named
  `<deployment>-<replicaset hash>-<5 chars>`; the deployment name is the service
  (`frontend-579b9bff58-t2dbm` -> `frontend`), StatefulSet pods lose their ordinal.
- Missing kinds are inferred from the tree: a root, or a span whose parent is in another
  service, is a SERVER span; a span with a child in another service is a CLIENT (unless it is
  already a SERVER). Spans named like SQL (`SELECT ts.orders`, `sql.conn.query`) become
  database calls. Both are said in the source's `notices`: they are inferences, not data.
- Times: integers in `time_unit` (default ns) or ISO 8601 / `YYYY-MM-DD hh:mm:ss.fffffffff`
  text; a duration column in `duration_unit`.

Rows that do not parse are counted (`skipped.invalid_rows`) and skipped.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from analyzer.model.spans import Kind
from collectors import otlp_shape as shape
from collectors.otlp_files import InputError, SourceStats

PARQUET_MAGIC = b"PAR1"
UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
NO_PARENT = frozenset({"", "root", "0", "0000000000000000", "null", "none"})
KINDS_NOTICE = ("span kinds were not in the table: inferred from the tree (a parent->child pair across services "
                "is client->server; roots are servers)")
DB_NOTICE = "database calls were inferred from span names that read as SQL (e.g. `SELECT ts.orders`, `sql.conn.query`)"
_COLUMN_NAME = re.compile(r"^[A-Za-z_][\w .()\[\]/-]{0,63}$")
_POD = re.compile(r"^(.+?)(?:-[a-z0-9]{5,10}-[a-z0-9]{5}|-\d+)$")
_SQL_NAME = re.compile(r"^(?:(?:select|insert|update|delete|replace|merge|upsert|call)\s|sql\.)", re.IGNORECASE)


@dataclass(frozen=True)
class ColumnMapping:
    """Which column holds what; `end` or `duration` is needed, the rest below them is optional."""

    trace_id: str = ""
    span_id: str = ""
    parent_id: str = ""
    service: str = ""
    name: str = ""
    start: str = ""
    end: str = ""
    duration: str = ""
    kind: str = ""
    status: str = ""
    attributes: str = ""
    environment: str = ""  # deployment.environment of each row's service, when the table has it
    time_unit: str = "ns"  # of start and end when they are integers
    duration_unit: str = "ns"
    service_from: str = ""  # "pod": the service is the Deployment name in a pod name

    def __post_init__(self) -> None:
        for unit in (self.time_unit, self.duration_unit):
            if unit not in UNITS:
                raise ValueError(f"time unit {unit!r}: use one of {', '.join(UNITS)}")
        if self.service_from not in ("", "pod"):
            raise ValueError(f"service_from {self.service_from!r}: only \"pod\" is known")

    @property
    def required(self) -> tuple[str, ...]:
        return (self.trace_id, self.span_id, self.parent_id, self.service, self.name, self.start,
                self.end or self.duration)

    @classmethod
    def parse(cls, items: Mapping[str, object]) -> "ColumnMapping":
        """From `{"trace_id": "TraceID", ...}` (the config table or `--span-columns` pairs)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(items) - known)
        if unknown:
            raise ValueError(f"unknown span-table key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**{k: str(v) for k, v in items.items()})


NEZHA = ColumnMapping(trace_id="TraceID", span_id="SpanID", parent_id="ParentID", service="PodName",
                      name="OperationName", start="StartTimeUnixNano", end="EndTimeUnixNano", service_from="pod")
CLICKHOUSE = ColumnMapping(trace_id="TraceId", span_id="SpanId", parent_id="ParentSpanId", service="ServiceName",
                           name="SpanName", start="Timestamp", duration="Duration", kind="SpanKind",
                           status="StatusCode", attributes="SpanAttributes")
PRESETS = {"nezha": NEZHA, "clickhouse": CLICKHOUSE}



def sniff(path: Path) -> str | None:
    """"parquet" or "csv" when the file is a span table candidate, else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head[:4] == PARQUET_MAGIC:
        return "parquet"
    line = head.split(b"\n", 1)[0].strip()
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    delimiter = "\t" if text.count("\t") > text.count(",") else ","
    header = next(csv.reader([text], delimiter=delimiter), [])
    # A header of column names: five or more, each a short identifier-like name.
    if len(header) >= 5 and all(_COLUMN_NAME.match(h.strip()) for h in header):
        return "csv"
    return None


def read(path: Path, stats: SourceStats, mapping: ColumnMapping | None = None) -> Iterator[dict]:
    """The spans of a span table as an OTLP/JSON request."""
    kind = sniff(path)
    columns, bad_rows = (_read_parquet(path), 0) if kind == "parquet" else _read_csv(path)
    header = list(columns)
    mapping = mapping or _preset_for(header)
    if mapping is None:
        raise InputError(f"{path}: a {kind or 'CSV'} table (columns {', '.join(header[:8])}), not OTLP; if it holds one "
                         "span per row, map its columns with --span-columns trace_id=COL,span_id=COL,parent_id=COL,"
                         "service=COL,name=COL,start=COL,end=COL (or duration=COL), or [sources.span_table] in the config")
    missing = [c for c in mapping.required if c not in columns]
    if missing:
        raise InputError(f"{path}: span table has no column(s) {', '.join(missing)} (columns: {', '.join(header[:12])})")
    stats.format = f"span-table-{kind}"
    if bad_rows:
        stats.skipped["invalid_rows"] += bad_rows
        stats.note(f"{bad_rows} row(s) with the wrong number of fields; skipped")
    yield _document(columns, mapping, stats)


def _preset_for(header: list[str]) -> ColumnMapping | None:
    for preset in PRESETS.values():
        if all(c in header for c in preset.required):
            return preset
    return None


def _read_csv(path: Path) -> tuple[dict[str, list[str]], int]:
    """The columns by header name, and how many rows had the wrong number of fields."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        sample = f.read(4096)
        f.seek(0)
        delimiter = "\t" if sample.split("\n", 1)[0].count("\t") > sample.split("\n", 1)[0].count(",") else ","
        rows = csv.reader(f, delimiter=delimiter)
        header = next(rows, [])
        cols: list[list[str]] = [[] for _ in header]
        width = len(header)
        bad = 0
        for row in rows:
            if len(row) != width:
                bad += 1 if row else 0
                continue
            for col, value in zip(cols, row):
                col.append(value)
    return dict(zip(header, cols)), bad


def _read_parquet(path: Path) -> dict[str, list]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise InputError(f"{path}: a Parquet file; reading it needs pyarrow: pip install 'profile-first[parquet]'") from e
    try:
        return pq.read_table(path).to_pydict()
    except Exception as e:  # pyarrow raises its own many error types for damaged files
        raise InputError(f"{path}: Parquet file does not read: {e}") from e


def _document(columns: dict[str, list], m: ColumnMapping, stats: SourceStats) -> dict:
    """One OTLP/JSON request holding every row's span, grouped by service."""
    get = lambda name: columns[name] if name else None  # noqa: E731
    traces, sids, pids, services, names = (get(c) for c in (m.trace_id, m.span_id, m.parent_id, m.service, m.name))
    starts, ends, durations = get(m.start), get(m.end), get(m.duration)
    kinds, statuses, attrs, environments = get(m.kind), get(m.status), get(m.attributes), get(m.environment)
    n = len(traces)
    rows: list[tuple] = []
    for i in range(n):
        try:
            start = _time(starts[i], m.time_unit)
            end = _time(ends[i], m.time_unit) if ends is not None else start + int(float(durations[i]) * UNITS[m.duration_unit])
            parent = str(pids[i] or "").strip()
            rows.append((shape.trace_id(traces[i]), shape.span_id(sids[i]),
                         "" if parent.lower() in NO_PARENT else shape.span_id(parent), _service(str(services[i]), m),
                         str(names[i]), start, end))
        except (TypeError, ValueError):
            stats.skipped["invalid_rows"] += 1
            stats.note(f"row {i + 2}: a time or duration does not parse; row skipped")
            rows.append(None)  # type: ignore[arg-type]
    span_kinds = [shape.kind_of(k) for k in kinds] if kinds is not None else _infer_kinds(rows)
    if kinds is None:
        stats.notices.append(KINDS_NOTICE)
    infer_db = kinds is None and attrs is None
    inferred_db = 0
    groups: dict[tuple[str, str], list[dict]] = {}  # by service and environment: a resource each
    for i, row in enumerate(rows):
        if row is None:
            continue
        trace, sid, parent, service, name, start, end = row
        a = _attributes(attrs[i]) if attrs is not None else {}
        kind = span_kinds[i]
        if infer_db and kind == Kind.INTERNAL and _SQL_NAME.match(name):
            kind, a = int(Kind.CLIENT), {"db.system": "sql", "db.operation": name}
            inferred_db += 1
        env = str(environments[i] or "") if environments is not None else ""
        groups.setdefault((service, env), []).append(shape.span(
            trace=trace, span_id=sid, parent=parent, name=name, kind=kind, start_ns=start, end_ns=end,
            status=shape.status_of(statuses[i]) if statuses is not None else 0, attrs=a))
    if inferred_db:
        stats.notices.append(DB_NOTICE)
    return shape.document(({"service.name": svc, **({"deployment.environment.name": env} if env else {})}, spans)
                          for (svc, env), spans in groups.items())


def _service(raw: str, m: ColumnMapping) -> str:
    if m.service_from == "pod":
        match = _POD.match(raw)
        return match.group(1) if match else raw
    return raw


def _time(value: object, unit: str) -> int:
    if isinstance(value, datetime):
        return _from_datetime(value)
    if isinstance(value, (int, float)):
        return int(value * UNITS[unit]) if isinstance(value, float) else int(value) * UNITS[unit]
    text = str(value).strip()
    if text.isdigit():
        return int(text) * UNITS[unit]
    # "2024-01-02 03:04:05.123456789" (ClickHouse DateTime64(9)) or ISO 8601: nanoseconds kept.
    head, _, frac = text.replace("T", " ").rstrip("Z").partition(".")
    digits = re.match(r"\d*", frac).group(0)  # type: ignore[union-attr]
    t = datetime.fromisoformat(head).replace(tzinfo=timezone.utc) if "+" not in head else datetime.fromisoformat(head)
    return int(t.timestamp()) * 1_000_000_000 + int((digits + "000000000")[:9])


def _from_datetime(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def _attributes(raw: object) -> dict[str, object]:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, list):  # pyarrow reads a Map column as (key, value) pairs
        return {str(k): v for k, v in raw if k is not None}
    if not raw:
        return {}
    try:
        value = json.loads(str(raw))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _infer_kinds(rows: list[tuple | None]) -> list[int]:
    """SERVER for roots and spans called from another service, CLIENT for spans calling another
    service, INTERNAL for the rest (see the module docstring)."""
    service_of = {(r[0], r[1]): r[3] for r in rows if r is not None}
    kinds = [int(Kind.INTERNAL)] * len(rows)
    calls_out: set[tuple[str, str]] = set()
    for i, r in enumerate(rows):
        if r is None:
            continue
        parent_service = service_of.get((r[0], r[2])) if r[2] else None
        if parent_service is None or parent_service != r[3]:
            kinds[i] = int(Kind.SERVER)
            if parent_service is not None:
                calls_out.add((r[0], r[2]))
    for i, r in enumerate(rows):
        if r is not None and kinds[i] != Kind.SERVER and (r[0], r[1]) in calls_out:
            kinds[i] = int(Kind.CLIENT)
    return kinds


def mapping_from_pairs(pairs: str) -> ColumnMapping:
    """`--span-columns trace_id=TraceID,span_id=SpanID,...` (or a preset name: nezha, clickhouse)."""
    if pairs.strip() in PRESETS:
        return PRESETS[pairs.strip()]
    items = {}
    for part in pairs.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--span-columns: {part!r} is not KEY=COLUMN")
        items[key.strip()] = value.strip()
    return ColumnMapping.parse(items)

