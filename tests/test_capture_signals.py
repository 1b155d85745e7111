"""`capture` as a real process receiving from the real SDK, signalled while it writes: a second
Ctrl-C lets the write finish, a third stops it and says where the acknowledged spans are,
`--recover` writes them, and the next capture reports what a killed one left behind."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

from tests.test_receiver import _send_spans

ROOT = Path(__file__).resolve().parents[1]
SPANS = 25_000  # each with a child: 50,000, a few seconds of OTLP/JSON conversion


def start_capture(out: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "analyzer", "capture", "--duration", "300s", "--output", str(out),
                             "--http-port", "0", "--no-grpc"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert m, line
    return proc, int(m.group(1))


def fill(port: int) -> set[str]:
    return _send_spans(HttpSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=30), SPANS, "shop",
                       batch=512)


def wait_for_write_phase(out: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while not list(out.parent.glob(f".{out.name}.*.tmp")):
        assert proc.poll() is None and time.monotonic() < deadline, "the write phase never started"
        time.sleep(0.02)


def span_ids(path: Path) -> list[str]:
    ids = []
    with gzip.open(path, "rt") as f:
        for line in f:
            for rs in json.loads(line)["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    ids += [s["spanId"] for s in ss["spans"]]
    return ids


def test_second_ctrl_c_while_writing_lets_the_write_finish(tmp_path: Path) -> None:
    out = tmp_path / "cap.otlp.jsonl.gz"
    proc, port = start_capture(out)
    sent = fill(port)
    proc.send_signal(signal.SIGINT)
    wait_for_write_phase(out, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "still writing" in stderr and "Ctrl-C again" in stderr
    assert sorted(span_ids(out)) == sorted(sent)
    assert not list(tmp_path.glob(".*"))  # no spool, no temporary file


def test_third_signal_stops_the_write_and_recover_writes_every_acknowledged_span(tmp_path: Path) -> None:
    out = tmp_path / "cap.otlp.jsonl.gz"
    proc, port = start_capture(out)
    sent = fill(port)
    proc.send_signal(signal.SIGINT)
    wait_for_write_phase(out, proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    (spool,) = tmp_path.glob(".*.spool")
    last = stderr.strip().splitlines()[-1]
    assert f"{len(sent):,} spans" in last and str(spool) in last and f"--recover {spool}" in last
    assert "Traceback" not in stderr and "Aborted" not in stderr
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))

    p = subprocess.run([sys.executable, "-m", "analyzer", "capture", "--recover", str(spool)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"{len(sent):,} spans" in p.stdout and str(out) in p.stdout
    assert sorted(span_ids(out)) == sorted(sent) and not spool.exists()


def test_the_next_capture_reports_what_a_killed_one_left(tmp_path: Path) -> None:
    out = tmp_path / "cap.otlp.jsonl.gz"
    proc, port = start_capture(out)
    sent = fill(port)
    proc.send_signal(signal.SIGINT)
    wait_for_write_phase(out, proc)
    proc.kill()
    proc.wait(timeout=30)
    (spool,) = tmp_path.glob(".*.spool")
    (partial,) = tmp_path.glob(".*.tmp")
    old = time.time() - 3600
    os.utime(partial, (old, old))  # as it would be an hour later
    other = tmp_path / ".notes.txt.abcdefgh.tmp"  # not ours: left alone
    other.write_text("x")
    os.utime(other, (old, old))

    p = subprocess.run([sys.executable, "-m", "analyzer", "capture", "--duration", "1s", "--http-port", "0",
                        "--no-grpc", "--output", str(tmp_path / "next.binpb.zst")], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert f"{spool} holds" in p.stderr and f"--recover {spool}" in p.stderr
    assert f"removed {partial}" in p.stderr and not partial.exists() and other.exists()
    assert spool.exists()  # acknowledged data is never deleted
    p = subprocess.run([sys.executable, "-m", "analyzer", "capture", "--recover", str(spool), "--output",
                        str(tmp_path / "recovered.otlp.jsonl.gz")], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert sorted(span_ids(tmp_path / "recovered.otlp.jsonl.gz")) == sorted(sent)


def test_default_output_is_framed_protobuf_with_zstd_that_analyze_reads(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "analyzer", "capture", "--duration", "300s", "--http-port", "0",
                             "--no-grpc"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    port = int(re.search(r"http://127\.0\.0\.1:(\d+)", proc.stderr.readline()).group(1))
    sent = _send_spans(HttpSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=30), 500, "shop")
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    out = tmp_path / "capture.binpb.zst"
    assert out.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    assert f"{len(sent):,} spans" in stdout and "capture.binpb.zst" in stdout
    p = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--traces", str(out), "--format", "json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert [s["service"] for s in report["services"]] == ["shop"]
    assert report["input"]["sources"][0]["spans"] == len(sent)


def test_an_impatient_triple_ctrl_c_keeps_every_acknowledged_span(tmp_path: Path) -> None:
    out = tmp_path / "cap.binpb.zst"
    proc, port = start_capture(out)
    sent = _send_spans(HttpSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=30), 2000, "shop")
    for _ in range(3):  # faster than the receiver shuts down
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=60)
    assert "Traceback" not in stderr and "Aborted" not in stderr, stderr
    if proc.returncode == 0:  # the machine was quick enough to finish the write anyway
        assert f"{len(sent):,} spans" in stdout
        return
    assert proc.returncode == 130, stderr
    (spool,) = tmp_path.glob(".*.spool")
    assert f"--recover {spool}" in stderr.strip().splitlines()[-1]
    p = subprocess.run([sys.executable, "-m", "analyzer", "capture", "--recover", str(spool)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and f"{len(sent):,} spans" in p.stdout, p.stdout + p.stderr
