"""More workloads for the database, network and caching heuristics (the rest are in the sibling modules).

Same rules as the other workloads: real SQLite files, real redis-server, real HTTP servers on
127.0.0.1, spans from the real OpenTelemetry SDK and instrumentations.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import redis
import requests
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind

from analyzer.breakdown import compute
from analyzer.classify import category_shares, pick
from analyzer.config import Config
from analyzer.model.findings import Finding
from analyzer.hotspots import find_hotspots
from analyzer.model.signals import Series, Signals
from collectors.otlp_traces import load_traces
from heuristics.context import HotspotContext
from heuristics.engine import run_rules
from tests.workloads.orders import (
    ITEMS_BY_ORDER, ORDERS, ORDERS_PER_PAGE, TOP_SKUS_BY_CUSTOMER, CUSTOMERS, connect,
    orders_n_plus_one, query,
)
from tests.workloads.recording import Recorder, entry_span, instrumented, leaked_instrumentations, record, write_jsonl
from tests.workloads.servers import DownstreamService

WORKLOADS_DIR = os.path.dirname(os.path.abspath(__file__))


class CodeLocationProcessor(SpanProcessor):
    """Sets `code.file.path`, `code.line.number` and `code.function.name` on CLIENT spans at start.

    The location is the first frame of the application (here: tests/workloads) below the
    instrumentation, skipping the helpers named in `skip` (thin wrappers such as `query`), the
    way an APM agent attributes a query to the line that issued it.
    """

    def __init__(self, skip: Iterable[str] = ("query",)) -> None:
        self._skip = frozenset(skip)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            if (code.co_filename.startswith(WORKLOADS_DIR) and code.co_name not in self._skip
                    and not code.co_filename.endswith(("recording.py", "servers.py", "more.py"))):
                span.set_attribute("code.file.path", code.co_filename)
                span.set_attribute("code.line.number", frame.f_lineno)
                span.set_attribute("code.function.name", code.co_name)
                return
            frame = frame.f_back

    def on_end(self, span: ReadableSpan) -> None:
        pass


def orders_n_plus_one_located(rec: Recorder, *, db_path: Path, requests_n: int = 8, seed: int = 7) -> None:
    """`orders` GET /orders: the N+1 of `orders.orders_n_plus_one`, with code location attributes on its spans.

    Cause a human would name: N+1 queries (database) at the item query's line in
    `orders.load_orders_one_by_one`.
    """
    rec.provider("orders").add_span_processor(CodeLocationProcessor())
    orders_n_plus_one(rec, db_path=db_path, requests=requests_n, seed=seed)


def orders_n_plus_one_orm(rec: Recorder, *, db_path: Path, requests_n: int = 6, seed: int = 7) -> None:
    """`orders` GET /orders/orm: the N+1 loop through an ORM-like layer that makes its own CLIENT span
    (db.system, db.statement, as SQLAlchemy's instrumentation does) around a `load` INTERNAL span
    around the sqlite3-instrumented driver call: each query appears as two nested database spans.

    Cause a human would name: N+1 queries (database), 20 per request, not 40.
    """
    tp = rec.provider("orders")
    tracer = tp.get_tracer("orm")
    rng = random.Random(seed)
    conn = connect(db_path, tp)
    try:
        for _ in range(requests_n):
            after = rng.randrange(ORDERS - ORDERS_PER_PAGE)
            with entry_span(tp, "/orders/orm", f"/orders/orm?after={after}"):
                for oid in range(after, after + ORDERS_PER_PAGE):
                    attrs = {"db.system": "sqlite", "db.statement": ITEMS_BY_ORDER}
                    with tracer.start_as_current_span("SELECT order_items", kind=SpanKind.CLIENT, attributes=attrs):
                        with tracer.start_as_current_span("load", kind=SpanKind.INTERNAL):
                            query(conn, ITEMS_BY_ORDER, (oid,))
    finally:
        conn.close()


def orders_split_loops(rec: Recorder, *, db_path: Path, requests_n: int = 8, seed: int = 7) -> None:
    """Near-miss of N+1: 4 item queries, one slow unrelated statement (~36 ms), then 4 more item queries.

    The slow statement in the middle is not a short interleaved span, so the loop is two runs
    of 4 (below 5). Cause a human would name: the slow statement, not an N+1.
    """
    tp = rec.provider("orders")
    rng = random.Random(seed)
    conn = connect(db_path, tp)
    try:
        for _ in range(requests_n):
            after = rng.randrange(ORDERS - ORDERS_PER_PAGE)
            with entry_span(tp, "/orders/split", f"/orders/split?after={after}"):
                for oid in range(after, after + 4):
                    query(conn, ITEMS_BY_ORDER, (oid,))
                query(conn, TOP_SKUS_BY_CUSTOMER, (rng.randrange(CUSTOMERS),))
                for oid in range(after + 4, after + 8):
                    query(conn, ITEMS_BY_ORDER, (oid,))
    finally:
        conn.close()


def orders_items_concurrent(rec: Recorder, *, db_path: Path, requests_n: int = 6, workers: int = 4,
                            seed: int = 7) -> None:
    """Near-miss of N+1: the 20 item queries of a page issued from a pool of `workers` connections at once.

    Still 20 queries per request (load on the database), but they overlap: the request waits for
    about a quarter of their sum, so it is not a sequential N+1 loop.
    """
    tp = rec.provider("orders")
    rng = random.Random(seed)
    conns = [connect_any_thread(db_path, tp) for _ in range(workers)]
    free: list[sqlite3.Connection] = list(conns)

    def run(ctx: Context, order_id: int) -> None:
        conn = free.pop()  # list.pop/append are atomic under the GIL: one connection per worker
        token = otel_context.attach(ctx)
        try:
            query(conn, ITEMS_BY_ORDER, (order_id,))
        finally:
            otel_context.detach(token)
            free.append(conn)

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in range(requests_n):
                after = rng.randrange(ORDERS - ORDERS_PER_PAGE)
                with entry_span(tp, "/orders/concurrent", f"/orders/concurrent?after={after}"):
                    ctx = otel_context.get_current()
                    for f in [pool.submit(run, ctx, oid) for oid in range(after, after + ORDERS_PER_PAGE)]:
                        f.result()
    finally:
        for c in conns:
            c.close()


#: Three independent aggregates of a dashboard, each a scan of `order_items` (~10-30 ms unindexed).
DASHBOARD_QUERIES: tuple[tuple[str, tuple[object, ...]], ...] = (
    ("SELECT count(*), sum(qty * price_cents) FROM order_items WHERE price_cents > ?", (5000,)),
    ("SELECT sku, sum(qty) FROM order_items WHERE qty >= ? GROUP BY sku ORDER BY 2 DESC LIMIT 5", (3,)),
    ("SELECT count(DISTINCT order_id) FROM order_items WHERE sku LIKE ?", ("SKU-1%",)),
)


def dashboard_sequential(rec: Recorder, *, db_path: Path, requests_n: int = 8) -> None:
    """`reports` GET /dashboard runs three independent aggregate queries one after another.

    Cause a human would name: sequential independent queries (database): run concurrently, the
    request would wait for the slowest only.
    """
    tp = rec.provider("reports")
    conn = connect(db_path, tp)
    try:
        for r in range(requests_n):
            with entry_span(tp, "/dashboard", f"/dashboard?r={r}"):
                for sql, params in DASHBOARD_QUERIES:
                    query(conn, sql, params)
    finally:
        conn.close()


def dashboard_parallel(rec: Recorder, *, db_path: Path, requests_n: int = 8) -> None:
    """Near-miss of `dashboard_sequential`: the same three queries on three connections, concurrently.

    SQLite releases the GIL while it runs a statement, so the spans overlap. Cause a human would
    name: none beyond the slowest query itself.
    """
    tp = rec.provider("reports")
    # check_same_thread=False: each connection is used by one worker thread at a time.
    conns = [connect_any_thread(db_path, tp) for _ in DASHBOARD_QUERIES]
    try:
        with ThreadPoolExecutor(max_workers=len(conns)) as pool:
            def run(ctx: Context, conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> None:
                token = otel_context.attach(ctx)
                try:
                    query(conn, sql, params)
                finally:
                    otel_context.detach(token)

            for r in range(requests_n):
                with entry_span(tp, "/dashboard", f"/dashboard?r={r}"):
                    ctx = otel_context.get_current()
                    futures = [pool.submit(run, ctx, c, sql, p) for c, (sql, p) in zip(conns, DASHBOARD_QUERIES)]
                    for f in futures:
                        f.result()
    finally:
        for c in conns:
            c.close()


def connect_any_thread(db_path: Path, provider: TracerProvider) -> sqlite3.Connection:
    from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

    return SQLite3Instrumentor().instrument_connection(sqlite3.connect(db_path, check_same_thread=False),
                                                       tracer_provider=provider)


#: Same rows for every request: no filter parameter (paging only).
BESTSELLERS = "SELECT sku, sum(qty) AS n FROM order_items GROUP BY sku ORDER BY n DESC LIMIT 10"


def bestsellers_per_request(rec: Recorder, *, db_path: Path, requests_n: int = 10, seed: int = 19) -> None:
    """`shop` GET /home: a PK lookup of the customer, then the bestseller list computed again (~60 ms).

    Cause a human would name: a repeated identical fetch a cache would serve (caching): every
    request gets the same ten rows.
    """
    tp = rec.provider("shop")
    rng = random.Random(seed)
    conn = connect(db_path, tp)
    try:
        for _ in range(requests_n):
            customer = rng.randrange(CUSTOMERS)
            with entry_span(tp, "/home", f"/home?c={customer}"):
                query(conn, "SELECT id, status FROM orders WHERE id = ?", (customer,))
                query(conn, BESTSELLERS)
    finally:
        conn.close()


def catalog_big_values(rec: Recorder, *, redis_port: int, requests_n: int = 12, size_mb: float = 8.0) -> None:
    """`catalog` GET /catalog: one redis GET of a pre-rendered catalog blob of `size_mb` MB (always a hit).

    Cause a human would name: the cache itself is slow (caching): the value is so big that
    transferring and parsing it takes milliseconds.
    """
    tp = rec.provider("catalog")
    admin = redis.Redis(host="127.0.0.1", port=redis_port)
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    blob = json.dumps([{"sku": f"SKU-{i:05d}", "name": "x" * 60, "price": i} for i in range(int(size_mb * 1e6 / 100))])
    try:
        admin.set("catalog:v1", blob)
        RedisInstrumentor.instrument_client(client, tracer_provider=tp)
        for r in range(requests_n):
            with entry_span(tp, "/catalog", f"/catalog?r={r}"):
                client.get("catalog:v1")
    finally:
        RedisInstrumentor.uninstrument_client(client)
        admin.delete("catalog:v1")
        client.close()
        admin.close()


class LatencyProxy:
    """A TCP relay on 127.0.0.1 that holds every chunk for `delay_ms` in each direction (a distant
    network, as toxiproxy's latency toxic does). Use as a context manager; `port` is where to connect."""

    def __init__(self, upstream_port: int, delay_ms: float) -> None:
        self._upstream = upstream_port
        self._delay = delay_ms / 1000.0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> LatencyProxy:
        threading.Thread(target=self._accept, daemon=True, name="latency-proxy").start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        for s in self._sockets:
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # listener closed
            upstream = socket.create_connection(("127.0.0.1", self._upstream))
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                time.sleep(self._delay)
                dst.sendall(data)
        except OSError:
            pass


def downstream_call(rec: Recorder, *, latency_ms: tuple[float, float], local_ms: float = 0.0,
                    requests_n: int = 10, seed: int = 23, traced: bool = True, wire_delay_ms: float = 0.0) -> None:
    """`web` GET /recommendations calls `recommender` once (`latency_ms`), after `local_ms` of in-process work.

    With `latency_ms=(120, 160)`: cause a human would name: a slow downstream (network), whose
    own server time is the cause. With `(1, 3)` and `local_ms=30`: near-miss, the call is a small
    part of the request. `traced=False` gives the downstream a provider nobody exports, like a
    third-party service: only the client span is seen. `wire_delay_ms` puts a `LatencyProxy` in
    between: with a fast downstream the cause a human would name is the network path itself.
    """
    web = rec.provider("web")
    with ExitStack() as stack:
        provider = rec.provider("recommender") if traced else TracerProvider()
        svc = stack.enter_context(DownstreamService(provider, "/recs", latency_ms, seed=seed))
        stack.enter_context(instrumented(RequestsInstrumentor(), tracer_provider=web))
        session = stack.enter_context(requests.Session())
        url = svc.url
        if wire_delay_ms:
            proxy = stack.enter_context(LatencyProxy(int(url.rsplit(":", 1)[1]), wire_delay_ms))
            url = f"http://127.0.0.1:{proxy.port}"
        for r in range(requests_n):
            with entry_span(web, "/recommendations", f"/recommendations?u={r}"):
                if local_ms:
                    time.sleep(local_ms / 1000.0)
                session.get(f"{url}/recs?u={r}", timeout=5).raise_for_status()


@dataclass
class Analyzed:
    """One hot spot after the rules ran, as the pipeline sees it."""

    ctx: HotspotContext
    findings: list[Finding]
    shares: dict[str, float]
    category: str

    def rule(self, code: str) -> list[Finding]:
        return [f for f in self.findings if f.rule == code]


def analyze_hotspots(paths: Sequence[Path | str], signals: Signals | None = None,
                     config: Config | None = None) -> dict[tuple[str, str], Analyzed]:
    """Load trace files, run every registered rule per hot spot and classify: {(service, operation): Analyzed}."""
    config = config or Config()
    table = load_traces([str(p) for p in paths]).table
    b = compute(table)
    hotspots = find_hotspots(table, b)
    out = {}
    for h in hotspots:
        ctx = HotspotContext(table=table, breakdown=b, hotspot=h,
                             signals=signals.for_service(h.service) if signals else None, all_hotspots=tuple(hotspots))
        findings = run_rules(ctx, config)
        shares = category_shares(h, findings)
        out[(h.service, h.operation)] = Analyzed(ctx, findings, shares, pick(shares, config.classify)[0])
    return out


def constant_signal(service: str, name: str, value: float, source: str, points: int = 30) -> Signals:
    """Signals holding one series of `value` (e.g. from a Prometheus query) for `service`."""
    sig = Signals()
    t = np.arange(points, dtype=np.float64) * 15.0 + 1.7e9
    sig.service(service).series[name] = Series(t=t, v=np.full(points, value), source=source)
    return sig


_RECORDED: dict[str, Path] = {}


def recorded(name: str, directory: Path, workload: Callable[..., None], **kwargs: Any) -> Path:
    """Record `workload` once per test session (several test modules share a recording) as OTLP JSON lines."""
    if name not in _RECORDED:
        spans = record(workload, **kwargs)
        leaked = leaked_instrumentations()
        assert not leaked, f"{workload.__name__} left {leaked} instrumented"
        _RECORDED[name] = write_jsonl(spans, directory / f"{name}.otlp.jsonl")
    return _RECORDED[name]


@dataclass
class RawSpan:
    """A span read back with plain `json`, for checks that must not go through the project's reader."""

    trace: str
    parent: str
    span: str
    service: str
    name: str
    kind: int
    start: int
    end: int
    attrs: dict[str, Any]

    @property
    def ms(self) -> float:
        return (self.end - self.start) / 1e6


def raw_spans(path: Path) -> dict[str, list[RawSpan]]:
    """{trace id: spans by start time} of an OTLP JSON lines file."""
    def value(v: dict[str, Any]) -> Any:
        (kind, raw), = v.items()
        return int(raw) if kind == "intValue" else raw

    out: dict[str, list[RawSpan]] = {}
    for line in Path(path).read_text().splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            res = {a["key"]: value(a["value"]) for a in rs["resource"]["attributes"]}
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    out.setdefault(s["traceId"], []).append(RawSpan(
                        s["traceId"], s.get("parentSpanId", ""), s["spanId"], res["service.name"], s["name"],
                        int(s.get("kind", 0)), int(s["startTimeUnixNano"]), int(s["endTimeUnixNano"]),
                        {a["key"]: value(a["value"]) for a in s.get("attributes", [])}))
    for spans in out.values():
        spans.sort(key=lambda s: s.start)
    return out


def sequential_runs(calls: Sequence[RawSpan], max_gap_ms: float) -> list[list[RawSpan]]:
    """`calls` (one request's, in start order) cut into sequences as PF-DB003 and PF-NET002 define
    them: a call joins the sequence when it starts at most `max_gap_ms` after the previous one
    ends; a longer gap, or a start before that end (the calls overlap), begins a new sequence.

    A loaded machine can stall the caller between two calls for longer than the gap; the
    rules then see two sequences, and so does this."""
    runs: list[list[RawSpan]] = []
    for c in calls:
        if runs and 0 <= (c.start - runs[-1][-1].end) / 1e6 <= max_gap_ms:
            runs[-1].append(c)
        else:
            runs.append([c])
    return runs


def sum_minus_max_ms(calls: Sequence[RawSpan], key: Callable[[RawSpan], Any], max_gap_ms: float) -> float:
    """What running each sequence of `calls` concurrently would save: per sequence, the sum of its
    units' time (calls grouped by `key`: one statement, one downstream) minus the longest unit's."""
    saving = 0.0
    for run in sequential_runs(calls, max_gap_ms):
        units: dict[Any, float] = {}
        for c in run:
            units[key(c)] = units.get(key(c), 0.0) + c.ms
        saving += sum(units.values()) - max(units.values())
    return saving
