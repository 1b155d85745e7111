"""Traces from ClickHouse's `otel_traces`: the heavy work in the store, a sample pulled here.

1. The table's columns are checked against the exporter's contract (`clickhouse_schema`).
2. Over the whole window, in the store (`clickhouse_queries`): entry spans per (service,
   operation) with count, total, p50/p95/p99 and errors (columns only, no attribute map).
3. Per root operation, a hash-uniform listing of its root spans (trace id, duration) goes to the
   stratified sampler (`collectors/sampling.py`: the tail above p95 up to a cap, a uniform draw
   below, weights 1 / inclusion probability, scaled by the store's count over the listing).
4. Every span of the sampled traces is fetched in one query, with only the attributes the
   SpanTable derives from (the map filtered to those keys), the runtime and environment
   of each span from its service's entry span in the trace (one more query, which reads the
   resource map in the entry spans' granules only), and decoded by the same derivation
   as the OTLP readers (`TraceDecoder.derive`), each statement with its `normalizedQueryHash`.
5. For the statements a sampled trace runs more than once (the only ones an N+1 finding can
   name), their per-trace repetitions over every trace of the window, in the store, reading
   only those services' granules and only the attribute maps of spans with a statement key.

Memory here grows with the sample (operations x traces per operation x spans per trace), not
with the table: the whole-window figures are a few rows per operation and statement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from analyzer.model import semconv as sc
from analyzer.model.spans import SpanTable
from analyzer.model.statement import normalize_sql
from analyzer.model.store_figures import OperationFigures, Repetition, StoreFigures
from analyzer.model.table import Batch, Repairs, TableBuilder
from collectors import clickhouse_queries as q
from collectors.clickhouse_schema import KIND_NAMES, STATUS_NAMES, TableRef, TableShape, check
from collectors.clickhouse_source import ClickHouseError, Source, Transport, open_source
from collectors.otlp_files import SourceStats
from collectors.otlp_traces import TraceDecoder
from collectors.sampling import Candidate, Sample, SamplingPlan, draw, weigh

# Trace ids per span fetch. Each fetch reads the attribute map of every table part holding one
# of its traces, which with ids spread over the window is nearly all of them: one fetch for the
# whole sample (parameters go in the request body over HTTP, so their size does not matter).
IDS_PER_QUERY = 1_000_000
# Spans of a sampled trace may start a little before the window or end after it.
TRACE_MARGIN_NS = 3600 * 10**9

COMPUTED_IN_STORE = [
    "hot-spot ranking: entry spans per (service, operation) with count, total time, p50/p95/p99 and errors",
    "the candidate listing for the stratified sample: root spans per root operation, uniform by trace-id hash",
    "N+1: per-trace repetitions over every trace of the window, for the statements a sampled trace repeats",
]
COMPUTED_ON_SAMPLE = [
    "critical-path breakdown, category shares and rule findings (weighted by the sample weights)",
]


@dataclass(frozen=True)
class Options:
    table: str = "otel.otel_traces"
    transport: Transport = Transport()
    bounds: q.Bounds = q.Bounds()
    plan: SamplingPlan = SamplingPlan()
    max_operations: int = 1_000  # hot spots ranked in the store; the sample's strata are the root ones among them
    listing: int = 4_000  # root spans listed per root operation for the sampler (hash-uniform)
    max_statements: int = 10_000
    min_repetitions: int = 5  # PF-DB001's default: a trace repeating a statement this often counts
    max_sample_spans: int = 5_000_000  # a sample larger than this is an error (raise it or sample less)


def options_from(section: Mapping[str, object], min_repetitions: int) -> Options:
    """Options from a `[sources.clickhouse]` table (collectors/store_settings.py) and flags merged into it."""
    get = section.get
    timeout = float(get("timeout") or 300.0)  # type: ignore[arg-type]
    return Options(
        table=str(get("table") or "otel.otel_traces"),
        transport=Transport(timeout=timeout, connect_timeout=float(get("connect_timeout") or 10.0),  # type: ignore[arg-type]
                            ca_bundle=get("ca_bundle") or None, insecure_skip_verify=bool(get("insecure_skip_verify")),  # type: ignore[arg-type]
                            password_file=get("password_file") or None),  # type: ignore[arg-type]
        bounds=q.Bounds(max_execution_time=max(1, math.ceil(timeout)),
                        max_result_rows=int(get("max_result_rows") or 1_000_000)),  # type: ignore[call-overload]
        plan=SamplingPlan(tail_cap=int(get("tail_cap", 100)), body_size=int(get("body_size", 100))),  # type: ignore[call-overload]
        max_operations=int(get("max_operations") or 1_000),  # type: ignore[call-overload]
        listing=int(get("listing") or 4_000),  # type: ignore[call-overload]
        min_repetitions=min_repetitions,
        max_sample_spans=int(get("max_sample_spans") or 5_000_000),  # type: ignore[call-overload]
    )


@dataclass
class LoadedStore:
    table: SpanTable
    sources: list[SourceStats]
    repairs: Repairs
    figures: StoreFigures


def load_clickhouse(spec: str, opts: Options = Options(), window: q.Window = q.Window()) -> LoadedStore:
    """Push the whole-window work down to the store at `spec` (a URL or `chdb:PATH`) and pull a
    weighted sample of whole traces. Raises ClickHouseError or SchemaError (user-facing)."""
    ref = TableRef.parse(opts.table)
    src = open_source(spec, opts.transport)
    try:
        return _load(src, ref, opts, window)
    finally:
        src.close()


def _load(src: Source, ref: TableRef, opts: Options, window: q.Window) -> LoadedStore:
    b = opts.bounds
    stats = SourceStats(path=f"{src.engine}:{src.where} {ref}", format=src.engine)
    queries = 0

    def rows(query: q.Query) -> list[dict[str, Any]]:
        nonlocal queries
        queries += 1
        out: list[dict[str, Any]] = []
        for batch in src.batches(*query):
            out.extend(batch.to_pylist())
        return out

    shape = check(ref, {r["name"]: r["type"] for r in rows(q.columns(ref, b))})
    if window.environments and not shape.has_resource_attributes:
        stats.note("the table has no ResourceAttributes column: spans are not filtered by deployment.environment")
        window = replace(window, environments=())
    total = rows(q.totals(shape, window, b))[0]
    figures = StoreFigures(engine=src.engine, min_repetitions=opts.min_repetitions)
    for r in rows(q.operations(shape, window, b, opts.max_operations)):
        figures.operations[(r["service"], r["operation"])] = OperationFigures(
            count=int(r["n"]), total_ns=int(r["total_ns"]), quantiles_ns=dict(zip(q.QUANTILES, map(float, r["q"]))),
            errors=int(r["errors"]), roots=int(r["roots"]))
    sample = _sample(figures, rows, shape, window, opts)
    builder = TableBuilder()
    decoder = TraceDecoder(builder)
    ids = sample.trace_ids
    t0 = window.start_ns - TRACE_MARGIN_NS if window.start_ns is not None else None
    t1 = window.end_ns + TRACE_MARGIN_NS if window.end_ns is not None else None
    pulled: set[str] = set()
    statements = SampleStatements()
    for i in range(0, len(ids), IDS_PER_QUERY):
        chunk = ids[i:i + IDS_PER_QUERY]
        resources = Resources(rows(q.resources(shape, chunk, t0, t1, list(figures.operations), b,
                                               opts.max_sample_spans))
                              if shape.has_resource_attributes else [])
        queries += 1
        for batch in src.batches(*q.spans(shape, chunk, t0, t1, b, opts.max_sample_spans)):
            _add_spans(builder, decoder, batch, stats, pulled, statements, resources)
            if stats.spans > opts.max_sample_spans:
                raise ClickHouseError(f"the sample holds more than {opts.max_sample_spans:,} spans; "
                                      f"lower the sample size ([sources.clickhouse] tail_cap, body_size)")
    repeated = statements.repeated()
    if repeated:
        services = sorted({s for s, _ in repeated})
        hashes = sorted({h for _, h in repeated})
        shapes = {k: normalize_sql(text) for k, text in statements.examples.items() if k in repeated}
        _repetitions(figures, shapes, rows(q.repetitions(shape, window, b, opts.min_repetitions, services, hashes,
                                                         opts.max_statements)))
    table = weigh(builder.finish(), sample.weights)
    stats.messages = queries
    stats.sampling = sample.report(pulled=len(pulled))
    stats.pushdown = {
        "engine": src.engine,
        "table": str(ref),
        "schema": shape.variant,
        "window_spans": int(total["spans"]),
        "window_traces": int(total["traces"]),
        "operations": len(figures.operations),
        "queries": queries,
        "computed_in_store": COMPUTED_IN_STORE,
        "computed_on_sample": COMPUTED_ON_SAMPLE,
    }
    return LoadedStore(table=table, sources=[stats], repairs=builder.repairs, figures=figures)


class SampleStatements:
    """The sample's statements by (trace, service, normalizedQueryHash): which of them a trace
    repeats, and an example of each hash's text."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.examples: dict[tuple[str, int], str] = {}

    def add(self, trace_id: str, service: str, h: int, text: str) -> None:
        key = (trace_id, service, h)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.examples.setdefault((service, h), text)

    def repeated(self) -> set[tuple[str, int]]:
        """(service, hash) of the statements some sampled trace runs more than once: the only ones
        an N+1 finding of the sample can name, so the only ones whose window figures are fetched."""
        return {(service, h) for (_, service, h), n in self.counts.items() if n > 1}


def _repetitions(figures: StoreFigures, shapes: dict[tuple[str, int], str], rows: list[dict[str, Any]]) -> None:
    """Per-trace repetition rows keyed by statement hash -> per normalized statement. Hashes the
    store groups apart can normalize to one shape here; they are summed (a trace is then counted
    once per hash, an upper bound of its traces)."""
    merged: dict[tuple[str, str, str], list[int]] = {}
    for r in rows:
        text = shapes.get((r["service"], r["h"]))
        if text is None:  # beyond the statements listed
            continue
        m = merged.setdefault((r["service"], r["operation"], text), [0, 0, 0, 0, 0])
        m[0] += int(r["traces"])
        m[1] += int(r["executions"])
        m[2] = max(m[2], int(r["most"]))
        m[3] += int(r["repeating"])
        m[4] += int(r["repeated"])
    for (service, operation, text), (traces, execs, most, rep_t, rep_e) in merged.items():
        figures.repetitions.setdefault((service, operation), []).append(
            Repetition(text, traces, execs, most, rep_t, rep_e))


def _sample(figures: StoreFigures, rows, shape: TableShape, window: q.Window, opts: Options) -> Sample:
    """Root spans listed per root operation (a uniform draw by trace-id hash, about `opts.listing`
    each), handed to the stratified sampler with the store's root counts as populations. Strata
    are root operations so that each trace has one chance of being drawn, and its weight is
    right for every hot spot it passes through; those hot spots' exact figures come from the
    store (`figures.operations`)."""
    roots = {k: f.roots for k, f in figures.operations.items() if f.roots}
    groups = list(roots)
    if not groups:
        return draw([], opts.plan)
    # The hash threshold aims at `listing` per operation; LIMIT BY at twice that is only a bound
    # (it would keep the first rows in table order, i.e. the earliest, so it must not cut in practice).
    thresholds = [min(q.HASH_RANGE, math.ceil(q.HASH_RANGE * opts.listing / n)) for n in roots.values()]
    listed = rows(q.candidates(shape, window, opts.bounds, groups, thresholds, 2 * opts.listing))
    cands = [Candidate(r["trace_id"], r["service"], r["operation"], int(r["dur"])) for r in listed]
    counted: dict[tuple[str, str], int] = {}
    for c in cands:
        counted[(c.service, c.operation)] = counted.get((c.service, c.operation), 0) + 1
    population = {k: n for k, n in roots.items() if counted.get(k)}
    return draw(cands, opts.plan, population=population)


class Resources:
    """Each sampled span's resource (runtime, environment): its service's entry span's in the
    same trace, else the one its service's entry spans carry most often."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        width = len(q.RESOURCE_KEYS)
        self.by_trace = {(r["trace_id"], r["service"]): tuple(r[f"r{i}"] for i in range(width)) for r in rows}
        counts: dict[str, dict[tuple[str, ...], int]] = {}
        for (_, service), values in self.by_trace.items():
            per = counts.setdefault(service, {})
            per[values] = per.get(values, 0) + 1
        self.by_service = {s: max(per, key=lambda v: (per[v], v)) for s, per in counts.items()}
        self.none = ("",) * width

    def of(self, trace_id: str, service: str) -> tuple[str, ...]:
        return self.by_trace.get((trace_id, service)) or self.by_service.get(service) or self.none


def _add_spans(builder: TableBuilder, decoder: TraceDecoder, batch: Any, stats: SourceStats, pulled: set[str],
               statements: SampleStatements, resources: Resources) -> None:
    """One Arrow batch of the `spans` query into the builder, attributes derived by the decoder."""
    cols = {name: batch.column(name).to_pylist()
            for name in ("trace_id", "span_id", "parent_id", "name", "kind", "service", "status")}
    tids, sids, pids = cols["trace_id"], cols["span_id"], cols["parent_id"]
    # Ids are checked for all rows at once; only a damaged row goes through Python.
    keep_mask = _hex_ids(tids, 32) & _hex_ids(sids, 16)
    for i in np.flatnonzero(~keep_mask).tolist():
        stats.skipped["bad_ids"] += 1
        stats.note(f"span {cols['name'][i]!r}: trace or span id is not non-zero hex of the right length; span skipped")
    parent_ok = _hex_ids(pids, 16, allow_zero=True) | (np.fromiter(map(len, pids), np.int64, len(pids)) == 0)
    for i in np.flatnonzero(keep_mask & ~parent_ok).tolist():
        stats.repaired["bad_parent_id"] += 1
        pids[i] = ""
    keep = np.flatnonzero(keep_mask)
    if not keep.shape[0]:
        return
    kinds = [KIND_NAMES.get(k, 0) for k in cols["kind"]]
    attrs = batch.column("attrs")  # per span, the wanted keys of its map: read from the flat arrays
    keys, values, offsets = attrs.keys.to_pylist(), attrs.items.to_pylist(), attrs.offsets.to_numpy().tolist()
    services: dict[tuple[str, str, str, str, str], tuple[int, int]] = {}
    svc = []
    for trace_id, service in zip(tids, cols["service"]):
        k = (service, *resources.of(trace_id, service))
        code = services.get(k)
        if code is None:
            name, r0, r1, r2, r3 = k
            code = services[k] = (builder.service(name or "unknown_service", r0 or None, r1 or None),
                                  builder.environment(dict(zip(sc.DEPLOYMENT_ENVIRONMENT, (r2, r3)))))
        svc.append(code)
    resource = np.asarray(svc, np.int32).reshape(-1, 2)[keep]
    rows = keep.tolist()
    hashes = batch.column("h").to_numpy()
    for i in np.flatnonzero(hashes[keep] != 0).tolist():
        r = rows[i]
        attrs_of = dict(zip(keys[offsets[r]:offsets[r + 1]], values[offsets[r]:offsets[r + 1]]))
        text = next((attrs_of[k] for k in sc.DB_STATEMENT if attrs_of.get(k)), "")
        statements.add(tids[r], cols["service"][r], int(hashes[r]), text)
    derived = np.array([decoder.derive(kinds[i], dict(zip(keys[offsets[i]:offsets[i + 1]],
                                                          values[offsets[i]:offsets[i + 1]])))
                        for i in rows], dtype=np.int32).reshape(-1, 6)
    ids = np.frombuffer(bytes.fromhex("".join([tids[i] for i in rows])), dtype=">u8").reshape(-1, 2)
    start = batch.column("start").to_numpy().astype(np.int64)[keep]
    dur = np.minimum(batch.column("dur").to_numpy().astype(np.uint64)[keep], np.uint64(1 << 62)).astype(np.int64)
    builder.add(Batch(
        service=resource[:, 0], environment=resource[:, 1], trace_hi=ids[:, 0].astype(np.uint64),
        trace_lo=ids[:, 1].astype(np.uint64),
        span_id=np.frombuffer(bytes.fromhex("".join([sids[i] for i in rows])), dtype=">u8").astype(np.uint64),
        parent_id=np.frombuffer(bytes.fromhex("".join([pids[i] or "0" * 16 for i in rows])),
                                dtype=">u8").astype(np.uint64),
        name=builder.names.codes_of([cols["name"][i] for i in rows]), kind=np.asarray(kinds, np.int8)[keep],
        start=start, end=start + dur, status=np.asarray([STATUS_NAMES.get(s, 0) for s in cols["status"]], np.int8)[keep],
        span_class=derived[:, 0].astype(np.int8), db_system=derived[:, 1].copy(), statement=derived[:, 2].copy(),
        peer=derived[:, 3].copy(), code_location=derived[:, 4].copy(), cache_key=derived[:, 5].copy(),
    ))
    stats.spans += len(rows)
    pulled.update(tids[i] for i in rows)


def _hex_ids(ids: list[str], width: int, allow_zero: bool = False) -> np.ndarray:
    """Which `ids` are `width` hex digits (any case; the exporter writes lowercase) and, unless
    `allow_zero`, not all zero (the OTLP readers refuse all-zero trace and span ids)."""
    ok = np.fromiter(map(len, ids), np.int64, len(ids)) == width
    if ok.any():
        # One character per byte ("?" for anything not ASCII), so each id stays `width` bytes.
        b = np.frombuffer("".join([i for i, o in zip(ids, ok.tolist()) if o]).encode("ascii", "replace"),
                          np.uint8).reshape(-1, width)
        lower = b | 0x20  # A-F -> a-f; digits are unchanged
        digit = ((b >= 0x30) & (b <= 0x39)) | ((lower >= 0x61) & (lower <= 0x66))
        valid = digit.all(axis=1)
        if not allow_zero:
            valid &= (b != 0x30).any(axis=1)
        ok[ok] = valid
    return ok
