"""The trace decoder's fast paths read what the full protobuf and JSON decoders would.

The protobuf reader finds the fields of spans laid out in field-number order with a few array
operations and reads any other layout field by field; damage stays local to a ResourceSpans or a
span. JSON is read a column at a time with a checked loop behind it. Each test builds input that
takes the unusual branch and compares the table with what the plain form of the same spans gives.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2 as t

from collectors import proto_traces
from collectors import protowire as pw
from collectors.otlp_files import InputError
from collectors.otlp_json import to_otlp_json_line
from benchmarks.gen_traces import main
from collectors.otlp_traces import load_traces

TID = bytes(range(1, 17))


def _kv(key: str, value: str | int) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value) if isinstance(value, str) else AnyValue(int_value=value))


def _spans(i: int) -> list[t.Span]:
    """Three spans of one request (trace i + 1)."""
    tid = TID[:-1] + bytes([i + 1])
    spans = [
        t.Span(trace_id=TID, span_id=b"\x00" * 7 + b"\x01", name="GET /orders", kind=2,
               start_time_unix_nano=1_000, end_time_unix_nano=9_000),
        t.Span(trace_id=TID, span_id=b"\x00" * 7 + b"\x02", parent_span_id=b"\x00" * 7 + b"\x01", name="SELECT",
               kind=3, start_time_unix_nano=2_000, end_time_unix_nano=5_000,
               attributes=[_kv("db.system", "postgresql"), _kv("http.route", "x"),
                           _kv("db.statement", "SELECT * FROM orders WHERE id = 42"),
                           _kv("server.address", "db"), _kv("server.port", 5432)],
               events=[t.Span.Event(name="e", time_unix_nano=3_000)], status=t.Status(code=2, message="boom")),
        t.Span(trace_id=TID, span_id=b"\x00" * 7 + b"\x03", parent_span_id=b"\x00" * 7 + b"\x01", name="GET",
               kind=3, start_time_unix_nano=5_000, end_time_unix_nano=8_000,
               attributes=[_kv("url.full", "http://users:8080/api/users/7?x=1")]),
    ]
    for s in spans:
        s.trace_id = tid
    return spans


def _request(n_resources: int = 1) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=[
        t.ResourceSpans(resource={"attributes": [_kv("service.name", f"svc{i}")]},
                        scope_spans=[t.ScopeSpans(scope={"name": "s"}, spans=_spans(i))])
        for i in range(n_resources)])


def _columns(path: Path) -> dict:
    tab = load_traces([str(path)]).table
    return {"n": len(tab), "statements": [tab.statements[c] if c >= 0 else None for c in tab.statement],
            "peers": [tab.peers[c] if c >= 0 else None for c in tab.peer], "class": tab.span_class.tolist(),
            "status": tab.status.tolist(), "parent": tab.parent.tolist(), "service": tab.service.tolist()}


def test_protobuf_reads_what_json_reads(tmp_path):
    req = _request()
    pb, js = tmp_path / "a.pb", tmp_path / "a.jsonl"
    pb.write_bytes(req.SerializeToString())
    js.write_text(to_otlp_json_line(req) + "\n")
    got = _columns(pb)
    assert got == _columns(js)
    assert got["statements"][1] == "SELECT * FROM orders WHERE id = ?" and got["peers"][1:] == ["db:5432", "users:8080"]
    assert got["status"] == [0, 2, 0]


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    n, out = len(payload), bytearray([field << 3 | 2])
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + payload


def _with_spans(req: ExportTraceServiceRequest, spans: list[bytes]) -> bytes:
    """`req` with its first ScopeSpans' spans replaced by these serialized ones."""
    rs = req.resource_spans[0]
    scope = _ld(1, rs.scope_spans[0].scope.SerializeToString()) + b"".join(_ld(2, s) for s in spans)
    return _ld(1, _ld(1, rs.resource.SerializeToString()) + _ld(2, scope))


def test_unusual_layouts_read_like_the_plain_encoding(tmp_path):
    req = _request()
    plain = tmp_path / "plain.pb"
    plain.write_bytes(req.SerializeToString())
    spans = req.resource_spans[0].scope_spans[0].spans
    # Span 1: attributes with the value field before the key (legal, if unusual) plus an empty
    # KeyValue, written after the status (out of field order), and its name sent twice (the
    # last one counts).
    s1 = t.Span()
    s1.CopyFrom(spans[1])
    del s1.attributes[:]
    attrs = b"".join(_ld(9, KeyValue(value=kv.value).SerializeToString() + KeyValue(key=kv.key).SerializeToString())
                     for kv in spans[1].attributes) + _ld(9, b"")
    first_name = _ld(5, b"stale name")
    s1_bytes = first_name + s1.SerializeToString() + attrs
    # Span 2: a name of 20,000 bytes (a three-byte length), then the real one again.
    s2 = spans[2].SerializeToString() + _ld(5, b"x" * 20_000) + _ld(5, spans[2].name.encode())
    odd = tmp_path / "odd.pb"
    odd.write_bytes(_with_spans(req, [spans[0].SerializeToString(), s1_bytes, s2]))
    assert _columns(odd) == _columns(plain)


def test_spans_found_at_once_and_one_by_one_read_alike(tmp_path):
    # The spans of a ScopeSpans are found together from where their trace ids begin (bytes 0A 10
    # after a span's tag and length); a ScopeSpans where that does not hold is walked span by
    # span. Every case must give the spans the plain encoding of the same request gives.
    req = _request()
    spans = req.resource_spans[0].scope_spans[0].spans
    # A 16-byte string value is serialized `12 12 0A 10 ...`, as a span's field would be.
    spans[1].attributes.append(_kv("db.name", "sixteen-bytes-ok"))
    # A trace id holding `12 7F 0A 10`: a span's tag and length followed by a trace id's tag, with
    # a length reaching into the next span.
    spans[2].trace_id = b"\x12\x7f\x0a\x10" + bytes(range(20, 32))
    plain = tmp_path / "plain.pb"
    plain.write_bytes(req.SerializeToString())
    want = _columns(plain)
    assert want["n"] == 3 and want["peers"][1:] == ["db:5432", "users:8080"]
    js = tmp_path / "plain.jsonl"
    js.write_text(to_otlp_json_line(req) + "\n")
    assert _columns(js) == want
    raw = [s.SerializeToString() for s in spans]
    rs = req.resource_spans[0]
    resource = _ld(1, rs.resource.SerializeToString())
    scope = _ld(1, rs.scope_spans[0].scope.SerializeToString())
    span_id_first = _ld(2, b"\x00" * 7 + b"\x01") + raw[0]  # span id sent twice, first before the trace id
    layouts = {
        # a schema_url after the spans, and a ScopeSpans without a scope
        "schema-after": _ld(1, resource + _ld(2, scope + b"".join(_ld(2, x) for x in raw) + _ld(3, b"https://x"))
                            + _ld(2, b"")),
        # a span that does not start with its trace id
        "span-id-first": _ld(1, resource + _ld(2, scope + _ld(2, span_id_first) + _ld(2, raw[1]) + _ld(2, raw[2]))),
        # a schema_url between spans, and the spans split over two ScopeSpans
        "schema-between": _ld(1, resource + _ld(2, scope + _ld(2, raw[0]) + _ld(3, b"u") + _ld(2, raw[1]))
                              + _ld(2, _ld(2, raw[2]))),
    }
    for name, data in layouts.items():
        path = tmp_path / f"{name}.binpb"
        path.write_bytes(struct.pack(">I", len(data)) + data)
        assert _columns(path) == want, name


def test_field_runs_leaves_what_does_not_tile_to_the_field_by_field_walk():
    span = b"\x0a\x10" + bytes(16) + b"\x12\x08" + bytes(8)
    inner = span + b"\x12\x12\x0a\x10" + bytes(16)  # a field inside the span that looks like a span
    garbage = b"\x0a\x10" + b"\x12\x7f\x0a\x10" + bytes(12)  # an id holding a tag, a length and 0A 10
    regions = [_ld(2, span) * 3,
               _ld(2, inner) + _ld(2, span),
               _ld(2, b"\x12\x08" + bytes(8) + span),  # a span that does not start with its trace id
               _ld(2, span) + b"\x1a\x01u",  # a field after the spans
               _ld(2, span * 8),  # a two-byte length
               _ld(2, garbage) + _ld(2, span)]  # the length in the id reaches past the next span
    data = b"".join(regions)
    buf, _ = pw.padded(data)
    cuts = np.cumsum([0] + [len(r) for r in regions])
    found, region, tiled, run_end = pw.field_runs(buf, len(data), 0x12, 0x100A, cuts[:-1], cuts[1:])
    assert tiled.tolist() == [True, True, False, True, True, True]
    assert region.tolist() == [0, 0, 0, 1, 1, 3, 4, 5]
    assert found.tolist() == [2, 32, 62, cuts[1] + 2, cuts[1] + 2 + len(inner) + 2, cuts[3] + 2, cuts[4] + 3,
                              cuts[5] + 2]
    # Where a run stops short of its region's end, the rest is walked field by field.
    assert run_end[3] == cuts[4] - 3 and run_end[5] == cuts[5] + 2 + len(garbage)
    assert run_end[0] == cuts[1] and run_end[4] == cuts[5]


def test_a_damaged_span_is_skipped_alone(tmp_path):
    req = _request()
    spans = [s.SerializeToString() for s in req.resource_spans[0].scope_spans[0].spans]
    # The length of the middle span's statement attribute now runs past the span: that span
    # cannot be read.
    middle = bytearray(spans[1])
    at = middle.index(b"\x0a\x0cdb.statement")
    assert len(middle) - at < 0x7F
    middle[at - 1] = 0x7F
    path = tmp_path / "damaged.pb"
    path.write_bytes(_with_spans(req, [spans[0], bytes(middle), spans[2]]))
    loaded = load_traces([str(path)])
    assert len(loaded.table) == 2 and loaded.sources[0].skipped["invalid_spans"] == 1
    assert loaded.table.names == ["GET /orders", "GET"]


@pytest.mark.parametrize("chunk_bytes", [proto_traces.CHUNK_BYTES, 64], ids=["small-message", "large-message"])
def test_damage_stays_in_its_resource_spans(tmp_path, monkeypatch, chunk_bytes):
    # A message larger than a chunk is cut into its ResourceSpans first: the same outcome.
    monkeypatch.setattr(proto_traces, "CHUNK_BYTES", chunk_bytes)
    req = _request(n_resources=3)
    whole = tmp_path / "whole.pb"
    whole.write_bytes(req.SerializeToString())
    assert _columns(whole)["n"] == 9
    # Corrupt the second ResourceSpans' content (not its framing): the other two are still read.
    data = bytearray(req.SerializeToString())
    second = data.index(b"svc1")
    data[second - 1] = 0x7F  # the service name's length now runs past its message
    damaged = tmp_path / "damaged.pb"
    damaged.write_bytes(bytes(data))
    loaded = load_traces([str(damaged)])
    assert len(loaded.table) == 6
    assert loaded.sources[0].skipped["invalid_messages"] == 1
    # A truncated file: the message is streamed by its ResourceSpans, so the two whole ones are
    # read and the cut one is counted.
    truncated = tmp_path / "truncated.pb"
    truncated.write_bytes(req.SerializeToString()[:-10])
    loaded = load_traces([str(truncated)])
    assert len(loaded.table) == 6 and loaded.sources[0].skipped["truncated_messages"] == 1


def test_json_columns_fall_back_to_the_checked_loop(tmp_path):
    req = _request()
    doc = json.loads(to_otlp_json_line(req))
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[2]["kind"] = "SPAN_KIND_CLIENT"  # enum names, as some producers write them
    spans[1]["status"] = {"code": "STATUS_CODE_ERROR"}
    spans[1]["attributes"].append({"key": "db.system", "value": {}})  # an empty value: skipped
    plain, odd = tmp_path / "plain.jsonl", tmp_path / "odd.jsonl"
    plain.write_text(to_otlp_json_line(req) + "\n")
    odd.write_text(json.dumps(doc) + "\n")
    assert _columns(odd) == _columns(plain)


def test_table_codes_follow_trace_id_order(tmp_path):
    req = _request()
    other = ExportTraceServiceRequest()
    other.CopyFrom(req)
    for s in other.resource_spans[0].scope_spans[0].spans:
        s.trace_id = bytes(15) + b"\x01"  # sorts before TID, but is read second
    path = tmp_path / "two.pb"
    path.write_bytes(req.SerializeToString() + other.SerializeToString())
    tab = load_traces([str(path)]).table
    assert tab.n_traces == 2 and tab.trace_id_hex(0) == "00" * 15 + "01" and len(tab) == 6
    assert np.all(np.diff(tab.trace) >= 0)


def _decoded(tab) -> dict:
    """Every column of a table, codes replaced by the strings they stand for."""
    cols = {c: getattr(tab, c).tolist() for c in ("trace", "span_id", "parent_id", "parent", "kind", "start", "end",
                                                   "status", "span_class", "service")}
    for c, names in (("name", "names"), ("statement", "statements"), ("peer", "peers"),
                     ("code_location", "code_locations"), ("db_system", "strings"), ("cache_key", "strings")):
        lut = getattr(tab, names)
        cols[c] = [lut[x] if x >= 0 else None for x in getattr(tab, c).tolist()]
    return cols


def test_a_generated_fleet_reads_the_same_from_protobuf_and_json(tmp_path, monkeypatch):
    # 30,000 spans of the benchmark fleet: every span class, old, new and duplicated
    # semantic-convention names, N+1 loops with literal ids in the statements; small chunks and
    # span groups, so that memos carry across many of them.
    monkeypatch.setattr(proto_traces, "CHUNK_BYTES", 1 << 20)
    monkeypatch.setattr(proto_traces, "SPAN_GROUP", 4096)
    main(["--spans", "30000", "--out", str(tmp_path), "--seed", "3"])
    tables = {form: load_traces([str(tmp_path / f"traces-30000.{form}")]).table for form in ("pb", "binpb", "jsonl")}
    want = _decoded(tables["jsonl"])
    assert len(want["span_id"]) == 30000
    assert sum(s is not None for s in want["statement"]) > 5000
    assert _decoded(tables["pb"]) == want
    assert _decoded(tables["binpb"]) == want


def test_random_damage_never_stops_a_run(orders_n_plus_one_proto_framed, tmp_path, monkeypatch):
    # 300 corruptions of a real SDK capture (bytes changed, cut out or inserted), read as a framed
    # file and as one message, in small and in large chunks: each is read without an exception
    # (or, a single message so damaged it is no longer OTLP, rejected with one clear error), and
    # what is kept is a consistent table.
    raw = orders_n_plus_one_proto_framed.read_bytes()
    frames, i = [], 0
    while i < len(raw):
        (n,) = struct.unpack(">I", raw[i:i + 4])
        frames.append(raw[i + 4:i + 4 + n])
        i += 4 + n
    rng = random.Random(11)
    path = tmp_path / "damaged.data"
    for trial in range(300):
        data = bytearray(rng.choice(frames))
        for _ in range(rng.randint(1, 12)):
            at, op = rng.randrange(len(data)), rng.random()
            if op < 0.6:
                data[at] = rng.randrange(256)
            elif op < 0.8:
                del data[at:at + rng.randint(1, 30)]
            else:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 10)))
        path.write_bytes(struct.pack(">I", len(data)) + bytes(data) if trial % 2 else bytes(data))
        monkeypatch.setattr(proto_traces, "CHUNK_BYTES", 64 if trial % 3 == 0 else 4 << 20)
        try:
            t = load_traces([str(path)]).table
        except InputError:
            continue
        assert (t.span_id != 0).all() and (t.end >= t.start).all()
        assert ((t.parent >= -1) & (t.parent < len(t))).all()


def test_a_kind_or_status_beyond_the_enums_skips_the_span(tmp_path):
    # Open enums let any int32 through; the table keeps kind and status in int8.
    req = _request()
    spans = req.resource_spans[0].scope_spans[0].spans
    spans[1].kind = 300
    spans[2].status.code = 1000
    path = tmp_path / "kinds.pb"
    path.write_bytes(req.SerializeToString())
    loaded = load_traces([str(path)])
    assert len(loaded.table) == 1 and loaded.sources[0].skipped["invalid_spans"] == 2


def test_memo_makes_each_hash_once_and_returns_its_codes():
    # Hashes spread and clustered (sharing their top or bottom bits), over batches that look up
    # earlier ones and add new ones: every lookup must find what was made for its hash.
    rng = np.random.default_rng(5)
    pool = np.unique(np.concatenate([rng.integers(0, 2**63, 4000, dtype=np.uint64) * np.uint64(2),
                                     np.arange(600, dtype=np.uint64), np.arange(300, dtype=np.uint64) << np.uint64(50)]))
    memo, made = proto_traces._Memo(2), {}
    for _ in range(15):
        h = rng.choice(pool, int(rng.integers(1, 3000)))
        order: list[int] = []

        def make(rows: np.ndarray) -> list[tuple[int, int]]:
            out = []
            for r in rows.tolist():
                key = int(h[r])
                assert key not in made  # made once per distinct hash, ever
                made[key] = (key % 1009, key % 7)
                out.append(made[key])
                order.append(r)
            return out

        codes = memo.resolve(h, make)
        assert order == sorted(order)  # first rows, in order of appearance
        assert [tuple(c) for c in codes.tolist()] == [made[int(x)] for x in h]
    assert len(made) > 3000


def test_cache_commands_split_like_the_json_reader(tmp_path):
    # Redis commands as clients write them, in one chunk with SQL: keys, no key, an already
    # normalized "?", tabs and runs of spaces, lower case, non-ASCII keys and white space, an
    # integer value. Each distinct command is split once, with array operations where ASCII.
    commands = ["GET user:42", "get user:42", "SET session:9 payload EX 60", "PING", "", "   ", "GET ?", "DEL ? x",
                "HGETALL\tcart:7", "  MGET  a  b  ", "GET clé:é", "GET a\u00a0b", "GET a\x1cb c", "EXPIRE k 10"]
    commands += [f"GET user:{i}" for i in range(300)]
    spans = []
    for i, command in enumerate(commands + [7]):
        attrs = [_kv("db.system", "redis"), _kv("db.statement", command)]
        spans.append(t.Span(trace_id=TID, span_id=(i + 1).to_bytes(8, "big"), name="redis", kind=3,
                            start_time_unix_nano=1_000 + i, end_time_unix_nano=2_000 + i, attributes=attrs))
        if i % 50 == 0:
            spans.append(t.Span(trace_id=TID, span_id=(10_000 + i).to_bytes(8, "big"), name="SELECT", kind=3,
                                start_time_unix_nano=1_000 + i, end_time_unix_nano=2_000 + i,
                                attributes=[_kv("db.system", "postgresql"),
                                            _kv("db.statement", f"SELECT * FROM t{i} WHERE id = {i}")]))
    req = ExportTraceServiceRequest(resource_spans=[t.ResourceSpans(
        resource={"attributes": [_kv("service.name", "cart")]}, scope_spans=[t.ScopeSpans(spans=spans)])])
    pb, js = tmp_path / "c.pb", tmp_path / "c.jsonl"
    pb.write_bytes(req.SerializeToString())
    js.write_text(to_otlp_json_line(req) + "\n")
    got, want = load_traces([str(pb)]).table, load_traces([str(js)]).table
    assert _decoded(got) == _decoded(want)
    shapes = {got.statements[c] for c in got.statement.tolist()}
    assert {"GET ?", "SET ? ...", "PING", "HGETALL ?", "MGET ? ...", "DEL ?", "7"} <= shapes
    keys = {got.strings[k] for k in got.cache_key.tolist() if k >= 0}
    assert {"user:42", "session:9", "cart:7", "clé:é", "a", "user:299"} <= keys
