"""The benchmark trace generator writes valid, exact, realistic OTLP in every form."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks.gen_traces import generate, generate_traces, iter_framed, main, write_files
from collectors.otlp_json import to_otlp_json_line

N = 2000


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gen")
    main(["--spans", str(N), "--out", str(out), "--seed", "5"])
    return {p.name.removeprefix(f"traces-{N}."): p for p in out.iterdir()}


def _spans(req: ExportTraceServiceRequest):
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                yield rs, span


def _attrs(kvs) -> dict:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in kvs}


def test_single_message_parses_with_exact_count_unique_ids_and_resolving_parents(files):
    req = ExportTraceServiceRequest.FromString(files["pb"].read_bytes())
    spans = [s for _, s in _spans(req)]
    assert len(spans) == N
    ids = [(s.trace_id, s.span_id) for s in spans]
    assert len({sid for _, sid in ids}) == N
    assert all(len(t) == 16 and len(s) == 8 for t, s in ids)
    known = set(ids)
    parents = [(s.trace_id, s.parent_span_id) for s in spans if s.parent_span_id]
    assert parents and all(p in known for p in parents)
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == len({s.trace_id for s in spans})  # one root per trace
    assert all(s.end_time_unix_nano >= s.start_time_unix_nano > 0 for s in spans)


def test_framed_file_decodes_to_the_same_batches_and_gzip_holds_the_same_bytes(files):
    framed = files["binpb"].read_bytes()
    batches = [ExportTraceServiceRequest.FromString(m) for m in iter_framed(framed)]
    assert sum(1 for b in batches for _ in _spans(b)) == N
    assert all(len(b.resource_spans) == 1 for b in batches)  # one SDK process per request
    assert all(sum(len(ss.spans) for ss in b.resource_spans[0].scope_spans) <= 2048 for b in batches)
    single = files["pb"].read_bytes()
    assert b"".join(bytes(m) for m in iter_framed(framed)) == single
    for fmt in ("pb", "binpb", "jsonl"):
        assert gzip.decompress(files[f"{fmt}.gz"].read_bytes()) == files[fmt].read_bytes()
    manifest = json.loads(files["manifest.json"].read_text())
    assert manifest["spans"] == N and manifest["batches"] == len(batches)


def test_json_lines_hold_the_framed_batches_as_otlp_json(files):
    lines = files["jsonl"].read_text().splitlines()
    batches = [ExportTraceServiceRequest.FromString(m) for m in iter_framed(files["binpb"].read_bytes())]
    assert len(lines) == len(batches)
    for line, batch in zip(lines, batches):
        assert line == to_otlp_json_line(batch)
    doc = json.loads(lines[0])
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert re.fullmatch(r"[0-9a-f]{32}", span["traceId"]) and re.fullmatch(r"[0-9a-f]{16}", span["spanId"])
    assert isinstance(span["kind"], int) and isinstance(span["startTimeUnixNano"], str)
    n = 0
    for line in lines:
        for rs in json.loads(line)["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    n += 1
                    assert len(s["spanId"]) == 16 and len(s.get("parentSpanId", "0" * 16)) == 16
    assert n == N


def test_protobuf_bytes_are_canonical():
    gen = generate_traces(N, seed=9)
    for pb in gen.protobuf_batches():
        assert ExportTraceServiceRequest.FromString(pb).SerializeToString() == pb


def test_deterministic_per_seed(tmp_path):
    a = generate_traces(500, seed=3)
    b = generate_traces(500, seed=3)
    c = generate_traces(500, seed=4)
    assert list(a.protobuf_batches()) == list(b.protobuf_batches())
    assert list(a.protobuf_batches()) != list(c.protobuf_batches())
    assert sum(len(ss.spans) for r in generate(123, seed=1) for rs in r.resource_spans
               for ss in rs.scope_spans) == 123
    paths = write_files(a, tmp_path, formats=["jsonl"], json_encoder="reference")
    assert paths["jsonl"].read_text().splitlines() == list(a.json_lines())


def test_content_looks_like_a_real_fleet():
    reqs = generate(20_000, seed=2)
    spans = [(rs, s) for r in reqs for rs, s in _spans(r)]
    kinds = Counter(s.kind for _, s in spans)
    assert all(kinds[k] > 0 for k in (1, 2, 3, 4, 5))
    attrs = [_attrs(s.attributes) for _, s in spans]
    keys = Counter(k for a in attrs for k in a)
    for k in ("http.method", "http.request.method", "url.full", "server.address", "server.port",
              "http.status_code", "db.system", "db.system.name", "db.statement", "db.query.text",
              "db.operation", "net.peer.name", "messaging.system", "messaging.destination.name",
              "code.function", "code.filepath", "code.lineno"):
        assert keys[k] > 0, k
    systems = Counter(a.get("db.system", a.get("db.system.name")) for a in attrs)
    assert systems["redis"] and (systems["postgresql"] or systems["mysql"])
    assert any(re.fullmatch(r"GET \w+:\d+", a.get("db.statement", "")) for a in attrs)
    assert any(re.search(r"= \d+", a.get("db.statement", a.get("db.query.text", ""))) for a in attrs)
    assert any(s.status.code == 2 and s.events for _, s in spans)
    services = {_attrs(rs.resource.attributes)["service.name"] for rs, _ in spans}
    assert 10 <= len(services) <= 50
    res = _attrs(spans[0][0].resource.attributes)
    assert {"service.name", "telemetry.sdk.language", "process.runtime.name"} <= res.keys()
    # N+1: one parent with the same statement shape repeated 5+ times.
    shapes = Counter()
    for (_, s), a in zip(spans, attrs):
        stmt = a.get("db.statement", a.get("db.query.text"))
        if stmt and s.parent_span_id:
            shapes[(s.trace_id, s.parent_span_id, re.sub(r"\d+", "N", stmt))] += 1
    assert max(shapes.values()) >= 5
    per_trace = Counter(s.trace_id for _, s in spans)
    median = sorted(per_trace.values())[len(per_trace) // 2]
    assert 5 <= median <= 30


def test_floors_measure_each_form_in_a_subprocess(tmp_path):
    from benchmarks.bench_floor import available_floors, floor_figures
    from benchmarks.common import ratio_line

    figs = floor_figures(tmp_path, N)  # generates the inputs first
    assert len(figs) == len(available_floors()) >= 6
    for fig in figs:
        assert fig.spans == N and fig.bytes > 0 and fig.seconds > 0
        assert fig.peak_rss >= fig.base_rss > 0
    assert "time x" in ratio_line(figs[2], figs[0])


def test_growth_alternates_batches_of_the_sizes_and_keeps_each_best_batch(tmp_path):
    # make bench's growth figure: batches of the two sizes alternate (so a busy spell slows both),
    # a batch of the small size is several runs, the batch with the lowest mean CPU of each size is
    # kept, only the framed protobuf form is generated, and the exponent is the slope of log CPU
    # over log spans.
    import math

    from benchmarks.bench_analyze import growth

    lines: list[str] = []
    g = growth(tmp_path, 5_000, 50_000, rounds=2, emit=lines.append, batch=2, settle_s=0)
    assert [line.split(":")[1].split()[0] for line in lines] == ["5,000", "50,000"] * 2
    assert sorted(p.name.split(".", 1)[1] for p in tmp_path.glob("traces-50000.*")) == ["binpb", "binpb.gz", "manifest.json"]
    for n, size in ((5_000, 2), (50_000, 1)):
        assert len(g.runs[n]) == 2 and all(len(b) == size and all(f.spans == n for f in b) for b in g.runs[n])
        means = [sum(f.extra["cpu_s"] for f in b) / size for b in g.runs[n]]
        assert math.isclose(g.cpu(n) + g.startup.extra["cpu_s"], min(means))
        assert 0 < g.floor(n) <= max(f.extra["cpu_s"] for b in g.floors[n] for f in b) and g.bytes_per_span(n) > 0
        # The reader's CPU split into user and system time (first touches of memory are system time).
        for f in (f for b in g.runs[n] for f in b):
            assert math.isclose(f.extra["load_user_s"] + f.extra["load_sys_s"], f.extra["load_cpu_s"], abs_tol=0.02)
    assert g.ratio == g.cpu(50_000) / g.cpu(5_000)
    assert math.isclose(g.exponent, math.log(g.ratio) / math.log(10))
    assert "exponent" in g.lines()[-1] and g.to_dict()["large"] == 50_000
    assert "its user time x" in g.lines()[1] and set(g.to_dict()["reader_sys_s"]) == {5_000, 50_000}
