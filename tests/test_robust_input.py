"""Hostile trace files too large to keep in tests/corpus, made at run time: memory and time stay
bounded by what is kept (issue 10 §3), one bad file inside a directory never stops the others,
and the limits leave real exports alone (a ~5 MiB request from the real SDK reads whole).
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import socket
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from analyzer.breakdown import compute
from collectors.otlp_files import Limits
from collectors.otlp_traces import load_traces
from tests.workloads import orders
from tests.workloads.recording import encode, entry_span, record

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "profile-cache-miss.otlp.jsonl"  # a real SDK capture
CORPUS_GOOD = ROOT / "tests" / "corpus" / "good.jsonl"
MiB = 1 << 20


def _cli(*args: str, memory_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        if memory_limit:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    return subprocess.run([sys.executable, "-m", "analyzer", "analyze", *args, "--format", "json"], capture_output=True,
                          cwd=ROOT, timeout=300, preexec_fn=limit)


def _input(run: subprocess.CompletedProcess) -> dict:
    assert b"Traceback" not in run.stderr, run.stderr.decode()
    assert run.returncode == 0, run.stderr.decode()
    return json.loads(run.stdout)["input"]


def _frame(message: bytes) -> bytes:
    return struct.pack(">I", len(message)) + message


def _sample_request() -> bytes:
    """The first line of the real capture as one serialized ExportTraceServiceRequest."""
    from google.protobuf import json_format
    import base64
    import binascii

    doc = json.loads(SAMPLE.read_text().splitlines()[0])
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                for k in ("traceId", "spanId", "parentSpanId"):
                    if s.get(k):
                        s[k] = base64.b64encode(binascii.unhexlify(s[k])).decode()
    return json_format.ParseDict(doc, ExportTraceServiceRequest()).SerializeToString()


def test_a_truncated_gzip_over_a_megabyte_keeps_what_came_before(tmp_path):
    # Once, the whole run ended with "Aborted!" (EOFError is what click takes for Ctrl-C).
    lines = SAMPLE.read_bytes()
    data = gzip.compress(lines * 12, mtime=0)
    assert len(lines) * 12 > MiB
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) * 3 // 4])
    got = _input(_cli("--traces", str(path)))
    assert got["spans"] > 0 and got["skipped"]["damaged_files"] == 1
    assert "truncated" in got["sources"][0]["errors"][-1]


def test_a_small_framed_zstd_declaring_a_huge_frame_costs_little_memory(tmp_path):
    # 8 KB declaring 256 MiB (a 23 KB file declaring 512 MiB once took more than 12 GB). Under a
    # 1.5 GB address-space limit (the interpreter with numpy needs ~0.6) the run must still
    # finish, the good frame read.
    bomb = zstandard.ZstdCompressor(level=1).compress(b"{" + b" " * (256 * MiB))
    path = tmp_path / "bomb.binpb"
    path.write_bytes(_frame(_sample_request()) + _frame(bomb))
    assert path.stat().st_size < 64 << 10
    got = _input(_cli("--traces", str(path), memory_limit=1536 * MiB))
    assert got["spans"] > 0 and got["skipped"] == {"over_message_limit": 1}
    assert "declaring 268435457 bytes" in got["sources"][0]["errors"][0]


def test_a_gzip_bomb_line_stops_at_the_ratio_limit(tmp_path):
    # 1 MB of gzip inflating to a 1 GiB line (1,024 gzip members of 1 MiB each, which decompress
    # as one stream): stopped once past the message limit at 200x.
    member = gzip.compress(b"a" * MiB, compresslevel=9, mtime=0)
    head = gzip.compress(SAMPLE.read_bytes() + b'{"resourceSpans":[{"x":"', mtime=0)
    path = tmp_path / "bomb.jsonl.gz"
    path.write_bytes(head + member * 1024)
    started = time.monotonic()
    got = _input(_cli("--traces", str(path), memory_limit=1536 * MiB))
    assert time.monotonic() - started < 60
    assert got["spans"] > 0 and got["skipped"] == {"over_ratio_limit": 1}
    assert "decompression ratio limit" in got["sources"][0]["errors"][0]


def test_a_line_over_the_message_limit_is_stepped_over(tmp_path):
    lines = SAMPLE.read_bytes().splitlines(keepends=True)
    path = tmp_path / "long-line.jsonl"
    path.write_bytes(lines[0] + b'{"resourceSpans":[{"x":"' + b"a" * (3 * MiB) + b'"}]}\n' + lines[0])
    got = _input(_cli("--traces", str(path), "--max-message", "2MiB"))
    assert got["skipped"] == {"over_message_limit": 1}
    both = load_traces([str(path)], Limits(message=2 * MiB))
    assert both.sources[0].messages == 2 and len(both.table) == got["spans"] > 0


def test_a_pretty_printed_document_over_the_message_limit_is_skipped(tmp_path):
    doc = json.loads(SAMPLE.read_text().splitlines()[0])
    path = tmp_path / "pretty.json"
    path.write_text(json.dumps(doc, indent=2))
    assert path.stat().st_size > 128 << 10
    assert len(load_traces([str(path)]).table) > 0
    refused = load_traces([str(path)], Limits(message=64 << 10))
    assert len(refused.table) == 0 and refused.sources[0].skipped == {"over_message_limit": 1}


def test_an_unreadable_subdirectory_is_counted(tmp_path, monkeypatch):
    # Root reads every directory, so the permission error is made up: os.walk reports it through
    # the scandir call it makes for each directory.
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.jsonl").write_bytes(SAMPLE.read_bytes())
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "b.jsonl").write_bytes(SAMPLE.read_bytes())
    real = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    loaded = load_traces([str(tmp_path)])
    skipped = {Path(s.path).name: dict(s.skipped) for s in loaded.sources}
    assert skipped == {"a.jsonl": {}, "locked": {"unreadable": 1}}
    assert len(loaded.table) > 0


def test_a_single_protobuf_request_is_streamed_by_its_resource_spans(tmp_path):
    # A ResourceSpans over the limit is skipped alone; the others in the same request are read.
    good = ExportTraceServiceRequest.FromString(_sample_request())
    big = ExportTraceServiceRequest()
    big.CopyFrom(good)
    big.resource_spans[0].scope_spans[0].spans[0].name = "n" * (3 * MiB)
    path = tmp_path / "one.pb"
    path.write_bytes(big.SerializeToString() + good.SerializeToString())
    loaded = load_traces([str(path)], Limits(message=2 * MiB))
    assert loaded.sources[0].skipped == {"over_message_limit": 1}
    whole = load_traces([str(path)])  # the default keeps it, the name cut to 64 KiB
    assert whole.sources[0].repaired["truncated_strings"] == 1 and max(map(len, whole.table.names)) == 64 << 10


@pytest.mark.parametrize("where", ["name", "statement"])
def test_a_long_string_in_protobuf_costs_linear_time(tmp_path, where):
    # A 60 MB string took 84-97 s (hashing chained one word per array step); now well under that.
    req = ExportTraceServiceRequest.FromString(_sample_request())
    span = next(s for s in req.resource_spans[0].scope_spans[0].spans if s.kind == 3)
    text = "SELECT " + "x" * (20 * MiB)
    if where == "name":
        span.name = text
    else:
        next(a for a in span.attributes if a.key == "db.statement").value.string_value = text
    path = tmp_path / "long.pb"
    path.write_bytes(req.SerializeToString())
    started = time.process_time()
    loaded = load_traces([str(path)])
    assert time.process_time() - started < 5
    assert loaded.sources[0].repaired["truncated_strings"] == 1


def _chain(n: int) -> Path:
    """One trace, each span the parent of the next: n levels deep."""
    from analyzer.model.table import Batch, TableBuilder
    import numpy as np

    b = TableBuilder()
    rows = np.arange(n, dtype=np.uint64)
    b.add(Batch(service=np.zeros(n, np.int32), trace_hi=np.ones(n, np.uint64), trace_lo=np.ones(n, np.uint64),
                span_id=rows + np.uint64(1), parent_id=rows, name=np.zeros(n, np.int32),
                kind=np.where(rows == 0, 2, 1).astype(np.int8), start=(10**18 + rows).astype(np.int64),
                end=(10**18 + 2 * n - rows).astype(np.int64), status=np.zeros(n, np.int8),
                span_class=np.zeros(n, np.int8), db_system=np.full(n, -1, np.int32),
                statement=np.full(n, -1, np.int32), peer=np.full(n, -1, np.int32),
                code_location=np.full(n, -1, np.int32), cache_key=np.full(n, -1, np.int32)))
    b.services.code("deep")
    b.names.code("f")
    return b.finish()


def test_a_deep_trace_costs_linear_time():
    # A million levels took 109 s against 6 s at 100k: the critical-path pass was O(n) per level.
    times = {}
    for n in (25_000, 100_000):
        table = _chain(n)
        started = time.process_time()
        bd = compute(table)
        times[n] = time.process_time() - started
        assert bd.entries.shape[0] == 1 and bd.parts.sum() == 2 * n  # the root's duration, all of it
    assert times[100_000] < 6 * times[25_000]  # x4 is linear, x16 quadratic


def test_one_bad_file_in_a_directory_never_stops_the_others(tmp_path):
    d = tmp_path / "captures"
    (d / "sub").mkdir(parents=True)
    good = SAMPLE.read_bytes()
    (d / "a-good.jsonl").write_bytes(good)
    data = gzip.compress(good, mtime=0)
    (d / "b-cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    (d / "sub" / "c-bad-crc.jsonl.gz").write_bytes(data[:-8] + bytes(8))
    os.mkfifo(d / "d-fifo.jsonl")  # opening it would block forever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "e.sock"))
    (d / "f-dangling.jsonl").symlink_to(d / "missing")
    (d / os.fsdecode(b"g-name-\xff.jsonl")).write_bytes(b"{not json\n")
    (d / "loop").symlink_to(d)  # a link back up the tree is walked once
    try:
        run = _cli("--traces", str(d))
    finally:
        sock.close()
    out, err = run.stdout.decode("utf-8"), run.stderr.decode("utf-8")  # valid UTF-8 despite the \xff name
    got = _input(run)
    alone = load_traces([str(d / "a-good.jsonl")])
    assert got["spans"] >= len(alone.table)
    assert got["skipped"]["damaged_files"] == 2
    assert got["skipped"]["special_files"] == 2 and got["skipped"]["unreadable"] == 1
    assert got["skipped"]["invalid_lines"] == 1
    paths = [s["path"] for s in got["sources"]]
    assert any(p.endswith("g-name-\\xff.jsonl") for p in paths)
    assert sum("loop" in p for p in paths) == 0 and err == "" and out


def _item_lookups(rec, *, db_path: Path, requests: int) -> None:
    """An N+1 loop without the workloads' pacing: 20 instrumented SQLite lookups per request."""
    provider = rec.provider("orders")
    conn = orders.connect(db_path, provider)
    try:
        for r in range(requests):
            with entry_span(provider, "/orders/{id}", f"/orders/{r}"):
                for i in range(20):
                    orders.query(conn, "SELECT id, name FROM items WHERE id = ?", (r * 20 + i,))
    finally:
        conn.close()


def test_the_limits_leave_a_real_5_mib_export_whole(tmp_path):
    # The Collector sends up to 4 MiB per gRPC request by default, more when configured: a ~5 MiB
    # request from the real SDK reads whole with the default limit, and only a limit below its
    # size skips it (so the limit, not anything else, decides).
    db = tmp_path / "items.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO items VALUES (?, ?)", [(i, f"item {i}") for i in range(40_000)])
    spans = record(_item_lookups, db_path=db, requests=1600)
    message = encode(spans).SerializeToString()
    assert 4 * MiB < len(message) < 8 * MiB
    framed, single = tmp_path / "big.binpb", tmp_path / "big.pb"
    framed.write_bytes(_frame(message))
    single.write_bytes(message)
    for path in (framed, single):
        loaded = load_traces([str(path)])
        assert len(loaded.table) == len(spans) and not loaded.sources[0].skipped
    refused = load_traces([str(framed)], Limits(message=4 * MiB))
    assert len(refused.table) == 0 and refused.sources[0].skipped == {"over_message_limit": 1}


def test_damage_in_a_metrics_file_is_counted_in_the_report(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_bytes(b"{not json\n" + b'{"resourceMetrics":' + b"[" * 5000 + b"]" * 5000 + b"}\n")
    got = _input(_cli("--traces", str(CORPUS_GOOD), "--metrics", str(metrics)))
    by_path = {s["path"]: s for s in got["sources"]}
    assert by_path[str(metrics)]["skipped"] == {"invalid_lines": 2}
    assert got["skipped"] == {"invalid_lines": 2}


def test_a_bad_message_limit_is_one_line_and_exit_2():
    run = _cli("--traces", str(CORPUS_GOOD), "--max-message", "12")
    assert run.returncode == 2
    assert run.stderr.decode().strip().splitlines() == [
        "profile-first: error: --max-message '12' is not a size of at least 1KiB like 64MiB, 4MB or 1048576"]
