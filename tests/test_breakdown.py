"""Critical-path breakdown on spans made by the real OpenTelemetry SDK with explicit timestamps.

Every expected number below is worked out by hand from the span timings in the test."""

from __future__ import annotations

import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from analyzer.breakdown import PARTS, _critical_chains, compute
from analyzer.hotspots import find_hotspots
from collectors.otlp_traces import load_traces
from tests.workloads.recording import Recorder, write_proto_single

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


class Services(Recorder):
    """The workloads' recorder, plus spans with explicit start and end times."""

    def span(self, service: str, name: str, start_ms: float, end_ms: float, parent=None,
             kind: SpanKind = SpanKind.INTERNAL, attributes: dict | None = None):
        ctx = trace.set_span_in_context(parent) if parent is not None else None
        tracer = self.provider(service).get_tracer("test")
        s = tracer.start_span(name, context=ctx, kind=kind, attributes=attributes, start_time=T0 + int(start_ms * MS))
        s.end(end_time=T0 + int(end_ms * MS))
        return s

    def write(self, path) -> str:
        return str(write_proto_single(self.spans(), path))


def parts_of(table, b, service: str, operation: str) -> dict[str, float]:
    (h,) = [h for h in find_hotspots(table, b) if h.service == service and h.operation == operation]
    return {k: v / MS for k, v in zip(PARTS, h.parts.sum(axis=0))}


@pytest.fixture
def svc():
    s = Services()
    yield s
    s.shutdown()


def test_parallel_children_and_downstream_split(svc, tmp_path):
    # gateway GET /checkout [0, 100] ms:
    #   validate (internal)      [0, 5]
    #   SELECT (postgresql)      [5, 25]
    #   GET inventory (client)   [25, 60] -> inventory server [30, 55] -> SELECT [35, 50]
    #   GET pricing (client)     [25, 45]   (parallel to inventory, ends first: off the path)
    #   GET user:1 (redis)       [60, 62]
    #   nothing                  [62, 100]
    root = svc.span("gateway", "GET /checkout", 0, 100, kind=SpanKind.SERVER)
    svc.span("gateway", "validate", 0, 5, parent=root)
    svc.span("gateway", "SELECT", 5, 25, parent=root, kind=SpanKind.CLIENT,
             attributes={"db.system": "postgresql", "db.statement": "SELECT * FROM carts WHERE id = 7"})
    inv = svc.span("gateway", "GET", 25, 60, parent=root, kind=SpanKind.CLIENT,
                   attributes={"http.request.method": "GET", "server.address": "inventory", "server.port": 80})
    inv_srv = svc.span("inventory", "GET /stock", 30, 55, parent=inv, kind=SpanKind.SERVER)
    svc.span("inventory", "SELECT", 35, 50, parent=inv_srv, kind=SpanKind.CLIENT,
             attributes={"db.system.name": "mysql", "db.query.text": "SELECT n FROM stock WHERE sku = 'a'"})
    svc.span("gateway", "GET", 25, 45, parent=root, kind=SpanKind.CLIENT, attributes={"http.method": "GET"})
    svc.span("gateway", "GET", 60, 62, parent=root, kind=SpanKind.CLIENT,
             attributes={"db.system": "redis", "db.statement": "GET user:1"})
    table = load_traces([svc.write(tmp_path / "t.pb")]).table
    b = compute(table)

    gw = parts_of(table, b, "gateway", "GET /checkout")
    # self = validate 5 + uncovered 38; remote gap = 35 - 25 of inventory server time.
    assert gw == pytest.approx({"self": 43, "database": 20, "cache": 2, "remote_server": 25,
                                "remote_gap": 10, "messaging": 0})
    assert sum(gw.values()) == pytest.approx(100)
    assert parts_of(table, b, "inventory", "GET /stock") == pytest.approx(
        {"self": 10, "database": 15, "cache": 0, "remote_server": 0, "remote_gap": 0, "messaging": 0})


def test_clock_skew_moves_the_server_span_inside_its_client(svc, tmp_path):
    # Client [10, 30]; its server span was recorded 62 ms early on a skewed host: [-52, -40].
    # It lasts 12 ms, so it is centred in the 20 ms client span: server 12, gap 8.
    root = svc.span("a", "GET /a", 0, 40, kind=SpanKind.SERVER)
    client = svc.span("a", "GET", 10, 30, parent=root, kind=SpanKind.CLIENT, attributes={"http.method": "GET"})
    svc.span("b", "GET /b", -52, -40, parent=client, kind=SpanKind.SERVER)
    table = load_traces([svc.write(tmp_path / "t.pb")]).table
    b = compute(table)
    assert parts_of(table, b, "a", "GET /a") == pytest.approx(
        {"self": 20, "database": 0, "cache": 0, "remote_server": 12, "remote_gap": 8, "messaging": 0})


def test_async_child_is_clipped_and_orphans_become_roots(svc, tmp_path):
    # A producer span that outlives its parent: [90, 130] under [0, 100] counts 10 ms.
    root = svc.span("a", "POST /order", 0, 100, kind=SpanKind.SERVER)
    svc.span("a", "orders publish", 90, 130, parent=root, kind=SpanKind.PRODUCER,
             attributes={"messaging.system": "kafka"})
    # An orphan: its parent span (id 0xdead) was never exported.
    missing = NonRecordingSpan(SpanContext(trace_id=0xABC, span_id=0xDEAD, is_remote=True,
                                           trace_flags=TraceFlags(TraceFlags.SAMPLED)))
    orphan = svc.span("c", "GET /c", 0, 50, parent=missing, kind=SpanKind.SERVER)
    svc.span("c", "SELECT", 10, 40, parent=orphan, kind=SpanKind.CLIENT, attributes={"db.system": "sqlite"})
    loaded = load_traces([svc.write(tmp_path / "t.pb")])
    table = loaded.table
    b = compute(table)
    assert parts_of(table, b, "a", "POST /order") == pytest.approx(
        {"self": 90, "database": 0, "cache": 0, "remote_server": 0, "remote_gap": 0, "messaging": 10})
    assert loaded.repairs.orphans == 1
    assert parts_of(table, b, "c", "GET /c") == pytest.approx(
        {"self": 20, "database": 30, "cache": 0, "remote_server": 0, "remote_gap": 0, "messaging": 0})


def test_waiting_rows_are_the_outermost_waiting_spans_of_each_entry(svc, tmp_path):
    # gateway GET /x [0, 100]:
    #   orm.query (sqlite)            [0, 30] -> hydrate (internal) [1, 29] -> SELECT (sqlite) [2, 28]
    #   GET user (redis)              [30, 32]
    #   GET stock (http client)       [40, 80] -> stock GET /stock [45, 75] -> SELECT (sqlite) [50, 70]
    db = {"db.system": "sqlite", "db.statement": "SELECT 1"}
    root = svc.span("gateway", "GET /x", 0, 100, kind=SpanKind.SERVER)
    orm = svc.span("gateway", "orm.query", 0, 30, parent=root, kind=SpanKind.CLIENT, attributes=db)
    hydrate = svc.span("gateway", "hydrate", 1, 29, parent=orm)
    svc.span("gateway", "SELECT", 2, 28, parent=hydrate, kind=SpanKind.CLIENT, attributes=db)
    svc.span("gateway", "GET", 30, 32, parent=root, kind=SpanKind.CLIENT,
             attributes={"db.system": "redis", "db.statement": "GET user"})
    call = svc.span("gateway", "GET", 40, 80, parent=root, kind=SpanKind.CLIENT,
                    attributes={"http.request.method": "GET", "server.address": "stock", "server.port": 80})
    stock = svc.span("stock", "GET /stock", 45, 75, parent=call, kind=SpanKind.SERVER)
    svc.span("stock", "SELECT", 50, 70, parent=stock, kind=SpanKind.CLIENT, attributes=db)
    table = load_traces([svc.write(tmp_path / "t.pb")]).table
    b = compute(table)

    def names(entry_names):
        entries = np.array([r for r in b.entries if table.names[table.name[r]] in entry_names])
        rows, request = b.waiting_rows(entries)
        return [(table.names[table.name[r]], table.names[table.name[entries[i]]]) for r, i in zip(rows, request)]

    # The driver span under the ORM span (through an internal span) is not counted again.
    assert names({"GET /x"}) == [("orm.query", "GET /x"), ("GET", "GET /x"), ("GET", "GET /x")]
    assert names({"GET /x", "GET /stock"}) == [("orm.query", "GET /x"), ("GET", "GET /x"), ("GET", "GET /x"),
                                              ("SELECT", "GET /stock")]


def test_parts_always_add_up_to_the_entry_duration(svc, tmp_path):
    # Overlapping, nested and out-of-bounds children in many shapes: the parts must still
    # partition each entry span's duration exactly.
    rng = np.random.default_rng(7)
    for i in range(30):
        root = svc.span("s", f"op{i % 3}", 0, 100, kind=SpanKind.SERVER)
        for _ in range(8):
            a, d = rng.uniform(-20, 110), rng.uniform(0, 60)
            kind = [SpanKind.INTERNAL, SpanKind.CLIENT][int(rng.integers(2))]
            attrs = {"db.system": "redis"} if rng.random() < 0.3 else None
            child = svc.span("s", "c", a, a + d, parent=root, kind=kind, attributes=attrs)
            if kind == SpanKind.CLIENT and rng.random() < 0.5:
                svc.span("t", "srv", a + 1, a + d + rng.uniform(-5, 5), parent=child, kind=SpanKind.SERVER)
    table = load_traces([svc.write(tmp_path / "t.pb")]).table
    b = compute(table)
    durations = table.end[b.entries] - table.start[b.entries]
    np.testing.assert_array_equal(b.parts.sum(axis=1), durations)
    assert (b.parts >= 0).all()


def _chains_by_walking(parent, cs, ce):
    """The critical chains child by child: per parent, the child ending last (the later start, then
    the later row, on a tie), then the latest-ending sibling that ends at or before it starts, ..."""
    on = np.zeros(parent.shape[0], dtype=bool)
    for p in set(parent.tolist()) - {-1}:
        kids = sorted((int(ce[c]), int(cs[c]), int(c)) for c in np.flatnonzero((parent == p) & (ce > cs)))
        while kids:
            end, start, row = kids[-1]
            on[row] = True
            kids = [k for k in kids if k[0] <= start]
    return on


@pytest.mark.parametrize("frame_offsets", [True, False])
def test_critical_chains_match_a_walk_with_equal_ends(frame_offsets):
    # Times on a coarse grid, so siblings often end (and start) together. With frame offsets the
    # times are keyed as offsets into the parent's frame; without, an offset is negative and the
    # keys are ranks of the times.
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(2, 40))
        parent = np.array([-1] + [int(rng.integers(-1, i)) for i in range(1, n)], dtype=np.int32)
        cs = T0 + rng.integers(0, 4, n) * MS
        ce = cs + rng.integers(0, 4, n) * MS
        base = np.full(n, T0 if frame_offsets else T0 + 10 * MS)
        assert np.array_equal(_critical_chains(parent, cs, ce, base), _chains_by_walking(parent, cs, ce))


def test_breakdown_per_range_of_traces_equals_the_whole_table(tmp_path, monkeypatch):
    # Past RANGE_ROWS rows the walk runs per range of whole traces: with a small range, 20k spans of
    # the benchmark fleet (nested calls, clock skew, parallel children) make ~80 ranges, and every
    # figure must be what one range over the whole table gives.
    from analyzer import breakdown
    from benchmarks.gen_traces import generate_traces, write_files

    paths = write_files(generate_traces(20_000, seed=5), tmp_path, formats=("binpb",))
    table = load_traces([str(paths["binpb"])]).table
    whole = compute(table)
    monkeypatch.setattr(breakdown, "RANGE_ROWS", 256)
    assert len(breakdown._trace_ranges(table.trace, table.parent)) > 50
    ranged = compute(table)
    for name in ("entries", "parts", "owner", "on_path", "entry_index", "clip_start", "clip_end",
                 "effective_class"):
        assert np.array_equal(getattr(ranged, name), getattr(whole, name)), name
    # the indexes the rules read, built per range too
    for a, b in zip(ranged.waiting_rows(whole.entries), whole.waiting_rows(whole.entries)):
        assert np.array_equal(a, b)
    for a, b in zip(ranged.callees(np.arange(len(table))), whole.callees(np.arange(len(table)))):
        assert np.array_equal(a, b)
    assert whole.parts.sum(axis=1).tolist() == (table.end - table.start)[whole.entries].tolist()


@pytest.mark.parametrize("keys", [50, 70_000])
def test_entry_order_is_by_operation_then_start_with_ties_in_row_order(keys):
    # Few operation keys take the 16-bit radix sort, many the 64-bit one; start times on a coarse
    # grid tie often, and a tie keeps the rows' order, as lexsort does.
    from analyzer.breakdown import _by_key_then_start

    rng = np.random.default_rng(7)
    key = rng.integers(0, keys, 20_000)
    start = T0 + rng.integers(0, 50, 20_000) * MS
    assert np.array_equal(_by_key_then_start(key, start), np.lexsort((start, key)))
