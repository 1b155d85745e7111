"""Reading OTLP trace files in every format the Collector's file exporter (and OTLP/HTTP) produces.

Valid content comes from the real SDK (spans encoded with the exporter's own encoder);
hand-written JSON appears only in the malformed-input tests."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import zstandard
from opentelemetry.trace import SpanKind

from analyzer.model.spans import SpanClass
from collectors.otlp_files import InputError
from collectors.otlp_json import to_otlp_json_line
from collectors.otlp_traces import load_traces
from tests.shared_data import SHARED_DATA
from tests.workloads.recording import (
    Recorder,
    batches,
    encode,
    write_jsonl,
    write_proto_framed,
    write_proto_single,
)

SHARED = SHARED_DATA
N_REQUESTS = 40
SPANS_PER_REQUEST = 4


def _workload(rec: Recorder) -> None:
    """40 requests of a checkout service, each: SERVER span -> db query, cache GET, http call."""
    tracer = rec.provider("checkout").get_tracer("t")
    for i in range(N_REQUESTS):
        with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER):
            with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes={
                    "db.system": "postgresql", "db.statement": f"SELECT * FROM carts WHERE id = {i}",
                    "net.peer.name": "db", "net.peer.port": 5432}):
                pass
            with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT, attributes={
                    "db.system.name": "redis", "db.query.text": f"GET cart:{i}"}):
                pass
            with tracer.start_as_current_span("POST", kind=SpanKind.CLIENT, attributes={
                    "http.request.method": "POST", "url.full": "http://payments:8080/charge",
                    "code.function.name": "charge", "code.file.path": "app/pay.py", "code.line.number": 42}):
                pass


@pytest.fixture(scope="module")
def spans():
    rec = Recorder()
    _workload(rec)
    out = rec.spans()
    rec.shutdown()
    return out


def _zstd_framed(spans, path: Path, as_json: bool) -> Path:
    cctx = zstandard.ZstdCompressor()
    with open(path, "wb") as f:
        for chunk in batches(spans, 50):
            msg = encode(chunk)
            raw = to_otlp_json_line(msg).encode() if as_json else msg.SerializeToString()
            data = cctx.compress(raw)
            f.write(struct.pack(">I", len(data)) + data)
    return path


def _gzip(path: Path) -> Path:
    out = path.with_name(path.name + ".gz")
    out.write_bytes(gzip.compress(path.read_bytes()))
    return out


WRITERS = {
    "jsonl": lambda s, p: write_jsonl(s, p, batch=50),
    "framed": lambda s, p: write_proto_framed(s, p, batch=50),
    "single": lambda s, p: write_proto_single(s, p),
    "zstd-framed-proto": lambda s, p: _zstd_framed(s, p, as_json=False),
    "zstd-framed-json": lambda s, p: _zstd_framed(s, p, as_json=True),
}


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("fmt", list(WRITERS))
def test_every_format_reads_the_same_spans(spans, tmp_path, fmt, compress):
    # The name says nothing about the format: detection is by content.
    path = WRITERS[fmt](spans, tmp_path / "capture.data")
    if compress:
        path = _gzip(path)
    loaded = load_traces([str(path)])
    t = loaded.table
    assert len(t) == N_REQUESTS * SPANS_PER_REQUEST
    assert t.n_traces == N_REQUESTS
    assert sum(s.spans for s in loaded.sources) == len(t)
    assert not any(s.skipped for s in loaded.sources)
    want_ids = sorted(s.context.span_id for s in spans)
    assert sorted(int(x) for x in t.span_id) == want_ids
    # Classes and derived columns from old and new semantic-convention names alike.
    counts = np.bincount(t.span_class, minlength=5)
    assert counts[SpanClass.DATABASE] == counts[SpanClass.CACHE] == counts[SpanClass.REMOTE] == N_REQUESTS
    db_rows = np.flatnonzero(t.span_class == SpanClass.DATABASE)
    assert {t.statements[c] for c in t.statement[db_rows]} == {"SELECT * FROM carts WHERE id = ?"}
    assert {t.peers[c] for c in t.peer[db_rows]} == {"db:5432"}
    cache_rows = np.flatnonzero(t.span_class == SpanClass.CACHE)
    assert {t.statements[c] for c in t.statement[cache_rows]} == {"GET ?"}
    assert len({t.strings[c] for c in t.cache_key[cache_rows]}) == N_REQUESTS
    remote = np.flatnonzero(t.span_class == SpanClass.REMOTE)
    assert {t.peers[c] for c in t.peer[remote]} == {"payments:8080"}
    assert {t.code_locations[c] for c in t.code_location[remote]} == {"app/pay.py:42 (charge)"}
    assert t.runtimes == {"checkout": "python"}
    # Every child found its parent: one root per trace.
    assert (t.parent < 0).sum() == N_REQUESTS


def test_directory_with_rotated_files(spans, tmp_path):
    # The file exporter's rotation leaves traces-<timestamp>.json beside the live file.
    d = tmp_path / "otel"
    d.mkdir()
    half = len(spans) // 2
    write_jsonl(spans[:half], d / "traces-2026-11-26T10-00-00.000.json")
    write_jsonl(spans[half:], d / "traces.json")
    _gzip(d / "traces-2026-11-26T10-00-00.000.json").rename(d / "traces-2026-11-25T10-00-00.000.json.gz")
    (d / "traces-2026-11-26T10-00-00.000.json").unlink()
    (d / "README.txt").write_text("captured by the staging collector\n")  # not OTLP: skipped, counted
    loaded = load_traces([str(d)])
    assert len(loaded.table) == len(spans)
    by_name = {Path(s.path).name: s for s in loaded.sources}
    assert by_name["README.txt"].skipped["files"] == 1 and by_name["README.txt"].format == "not-otlp"
    assert sum(s.spans for s in loaded.sources) == len(spans)


def test_otlp_example_from_the_spec_repository_parses():
    # opentelemetry-proto's examples/trace.json: one span whose parent is not in the file.
    loaded = load_traces([str(SHARED / "opentelemetry-proto-examples" / "trace.json")])
    t = loaded.table
    assert (len(t), t.n_traces) == (1, 1)
    assert t.services == ["my.service"]
    assert t.names == ["I'm a server span"]
    assert t.trace_id_hex(0) == "5b8efff798038103d269b633813fc60c"
    assert t.span_id_hex(0) == "eee19b7ec3c1b174"
    assert int(t.end[0] - t.start[0]) == 1_000_000_000
    assert loaded.repairs.orphans == 1


# Zipkin, Jaeger and span-table files are read since (tests/test_trace_formats.py, test_span_tables.py).
@pytest.mark.parametrize("name", ["prometheus-demo-scrape/alltypes.237mfs.prom.txt",
                                  "petshop/dataset/low_traffic/test/issue_0/metrics.csv",
                                  "nezha/rca_data/2022-08-22/metric/front_service.csv"])
def test_files_that_are_not_otlp_get_one_clear_error(name):
    with pytest.raises(InputError) as e:
        load_traces([str(SHARED / name)])
    assert "\n" not in str(e.value)
    assert "OTLP" in str(e.value)


# -- malformed input: hand-written JSON is allowed here ---------------------------------

def _span(tid: str, sid: str, parent: str = "", start: int = 1_000, end: int = 2_000, **extra) -> dict:
    return {"traceId": tid, "spanId": sid, "parentSpanId": parent, "name": "op", "kind": 2,
            "startTimeUnixNano": str(start), "endTimeUnixNano": end, **extra}


def _line(*spans: dict) -> str:
    return json.dumps({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "svc"}}]}, "scopeSpans": [{"spans": list(spans)}]}]})


T1, T2, T3 = "0" * 31 + "1", "0" * 31 + "2", "0" * 31 + "3"


def test_damage_is_counted_skipped_or_repaired_never_fatal(spans, tmp_path):
    good = to_otlp_json_line(encode(spans[:8]))
    lines = [
        good,
        good[: len(good) // 2],  # truncated line
        "not json at all",
        _line(_span("zz" * 16, "00000000000000aa"),  # trace id not hex
              _span(T1, "abc"),  # span id of the wrong length
              _span(T1, "00000000000000a1", start=5_000, end=4_000),  # end before start
              _span(T1, "00000000000000a2", parent="00000000000000a1"),
              _span(T1, "00000000000000a2", parent="00000000000000a1")),  # duplicate
        _line(_span(T2, "00000000000000b1", parent="00000000000000b2"),  # b1 <-> b2 loop
              _span(T2, "00000000000000b2", parent="00000000000000b1"),
              _span(T3, "00000000000000c1", parent="00000000000000ff"),  # orphan
              _span(T3, "00000000000000c2", parent="0102")),  # parent id of the wrong length
        _line(_span(T3, "00000000000000d1", start=2**64 - 1),  # a time past what int64 nanoseconds hold
              _span(T3, "00000000000000d2", kind=300)),  # a kind that is no SpanKind
        good,  # a retry that delivers the same 8 spans again
    ]
    path = tmp_path / "damaged.jsonl"
    path.write_text("\n".join(lines) + "\n")
    loaded = load_traces([str(path)])
    src = loaded.sources[0]
    assert src.skipped["invalid_lines"] == 2
    assert src.skipped["bad_ids"] == 2
    assert src.skipped["invalid_spans"] == 2
    assert src.repaired["bad_parent_id"] == 1
    r = loaded.repairs
    assert (r.negative_duration, r.duplicate_spans, r.parent_cycles, r.orphans) == (1, 1 + 8, 1, 1)
    t = loaded.table
    assert len(t) == 8 + 2 + 4  # good spans once; a1, a2; b1, b2, c1, c2
    assert (t.end >= t.start).all()
    assert src.errors and all("\n" not in e for e in src.errors)
    # After the cut, following parents always ends at a root.
    row = np.arange(len(t))
    for _ in range(len(t)):
        row = np.where(t.parent[row] >= 0, t.parent[row], row)
    assert (t.parent[row] < 0).all()


def test_truncated_framed_file_keeps_the_complete_messages(spans, tmp_path):
    path = write_proto_framed(spans, tmp_path / "t.binpb", batch=40)
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # the collector died mid-write
    loaded = load_traces([str(path)])
    assert loaded.sources[0].skipped["truncated_messages"] == 1
    assert len(loaded.table) == len(spans) - 40


def test_missing_path_and_empty_directory(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_traces([str(tmp_path / "nope.jsonl")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no files"):
        load_traces([str(tmp_path / "empty")])


def test_shared_sample_is_not_modified_by_reading(tmp_path):
    src = SHARED / "opentelemetry-proto-examples" / "trace.json"
    copy = tmp_path / "trace.json"
    shutil.copy(src, copy)
    load_traces([str(src)])
    assert src.read_bytes() == copy.read_bytes()


def _request_starting_like_json() -> bytes:
    """A valid request whose first ResourceSpans is 123 bytes long: its bytes start `0A 7B`,
    a newline then `{` when read as text."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1 import trace_pb2 as t

    for pad in range(120):
        rs = t.ResourceSpans(
            resource={"attributes": [KeyValue(key="service.name", value=AnyValue(string_value="svc" + "x" * pad))]},
            scope_spans=[t.ScopeSpans(spans=[t.Span(trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)),
                                                    name="GET", kind=2, start_time_unix_nano=1, end_time_unix_nano=5)])])
        if rs.ByteSize() == 123:
            data = ExportTraceServiceRequest(resource_spans=[rs]).SerializeToString()
            assert data[:2] == b"\n{"
            return data
    raise AssertionError("no padding gives a 123-byte ResourceSpans")


def test_protobuf_that_starts_like_json_is_read_as_protobuf(tmp_path):
    data = _request_starting_like_json()
    framed, single = tmp_path / "framed.binpb", tmp_path / "single.pb"
    framed.write_bytes(struct.pack(">I", len(data)) + data)
    single.write_bytes(data)
    for path in (framed, single):
        loaded = load_traces([str(path)])
        assert len(loaded.table) == 1 and not loaded.sources[0].skipped, path.name
