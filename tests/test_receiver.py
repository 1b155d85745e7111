"""The OTLP receiver and capture, driven by the real OpenTelemetry exporters.

Well-formed traffic comes from the SDK's OTLP/HTTP and OTLP/gRPC exporters; malformed,
oversized and unauthorized requests are sent by hand with `requests`/`http.client`. After
every bad request the receiver must still accept a good one.
"""

from __future__ import annotations

import gzip
import http.client
import json
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
from click.testing import CliRunner
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from analyzer.commands.capture import TOKEN_ENV, capture
from collectors.capture import Capture, CaptureResult, capture_window, metrics_path_for
from collectors.receiver import OtlpReceiver, ReceiverConfig, is_loopback
from tests.workloads.servers import free_port

PB = {"Content-Type": "application/x-protobuf"}


def _config(**kw: object) -> ReceiverConfig:
    return ReceiverConfig(**{"http_port": 0, "grpc_port": 0, **kw})  # type: ignore[arg-type]


@pytest.fixture
def capture_obj(tmp_path: Path) -> Iterator[Capture]:
    c = Capture(tmp_path / "capture.otlp.jsonl.gz")
    yield c
    c.discard() if c._spool_path.exists() else None


def _send_spans(exporter: object, n: int, service: str, batch: int = 512) -> set[str]:
    """Create n spans through the SDK with a BatchSpanProcessor; the hex span ids it produced."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    # The queue holds every span, so any loss is the receiver's, not the SDK dropping on overflow.
    bsp = BatchSpanProcessor(exporter, max_queue_size=max(2 * n, batch), max_export_batch_size=batch,  # type: ignore[arg-type]
                             schedule_delay_millis=50)
    provider.add_span_processor(bsp)
    tracer = provider.get_tracer("test")
    for i in range(n):
        with tracer.start_as_current_span(f"op-{i % 7}"):
            with tracer.start_as_current_span("child"):
                pass
    assert provider.force_flush(timeout_millis=30_000)
    provider.shutdown()
    return {f"{s.context.span_id:016x}" for s in memory.get_finished_spans()}


def _captured_span_ids(result: CaptureResult) -> list[str]:
    """Every span id in the written capture, by plain JSON parsing (duplicates kept)."""
    ids = []
    with gzip.open(result.traces_path, "rt") as f:
        for line in f:
            for rs in json.loads(line)["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    for span in ss["spans"]:
                        assert len(span["traceId"]) == 32 and len(span["spanId"]) == 16
                        ids.append(span["spanId"])
    return ids


def _good_request(n: int = 3, seed: int = 1) -> bytes:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(n):
        ss.spans.add(trace_id=(seed << 64 | i + 1).to_bytes(16, "big"), span_id=(seed << 32 | i + 1).to_bytes(8, "big"),
                     name="op", start_time_unix_nano=1, end_time_unix_nano=2)
    return req.SerializeToString()


def _still_running(r: OtlpReceiver) -> None:
    resp = requests.post(f"{r.http_endpoint}/v1/traces", data=_good_request(), headers=PB, timeout=5)
    assert resp.status_code == 200


# -- every span exactly once -------------------------------------------------------------------


def test_http_and_grpc_exporters_every_span_arrives_exactly_once(capture_obj: Capture) -> None:
    capture_obj.start()
    with OtlpReceiver(capture_obj, _config()) as r:
        sent = _send_spans(HttpSpanExporter(endpoint=f"{r.http_endpoint}/v1/traces"), 1500, "http-plain")
        sent |= _send_spans(HttpSpanExporter(endpoint=f"{r.http_endpoint}/v1/traces", compression=Compression.Gzip),
                            1500, "http-gzip")
        sent |= _send_spans(GrpcSpanExporter(endpoint=r.grpc_endpoint, insecure=True), 1500, "grpc")
        sent |= _send_spans(GrpcSpanExporter(endpoint=r.grpc_endpoint, insecure=True, compression=grpc.Compression.Gzip),
                            1500, "grpc-gzip")
        counts = r.status_counts()
    result = capture_obj.close()
    ids = _captured_span_ids(result)
    assert len(ids) == len(sent) == 12000 and set(ids) == sent
    assert result.spans == 12000 and result.metrics_path is None
    assert counts.get("200", 0) >= 2 and counts.get("OK", 0) >= 1 and set(counts) <= {"200", "OK"}


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_full_buffer_makes_exporters_retry_and_nothing_is_lost_or_doubled(capture_obj: Capture, transport: str) -> None:
    # Buffer of 100 spans and no spooling yet: the first batch fills it, the next ones are
    # refused with 503 + Retry-After (UNAVAILABLE + RetryInfo on gRPC) until the drain starts.
    capture_obj.buffer_spans = 100
    with OtlpReceiver(capture_obj, _config()) as r:
        exporter = (HttpSpanExporter(endpoint=f"{r.http_endpoint}/v1/traces", timeout=20) if transport == "http"
                    else GrpcSpanExporter(endpoint=r.grpc_endpoint, insecure=True, timeout=20))
        refused = "503" if transport == "http" else "UNAVAILABLE"

        def drain_after_refusal() -> None:
            deadline = time.monotonic() + 20
            while r.status_counts().get(refused, 0) == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            capture_obj.start()

        drainer = threading.Thread(target=drain_after_refusal)
        drainer.start()
        sent = _send_spans(exporter, 200, "backpressure", batch=100)  # 400 spans in 4 batches
        drainer.join()
        counts = r.status_counts()
    result = capture_obj.close()
    assert counts.get(refused, 0) >= 1, counts
    assert result.refused_full >= 1
    ids = _captured_span_ids(result)
    assert len(ids) == len(sent) == 400 and set(ids) == sent


def test_retry_after_header_when_full(capture_obj: Capture) -> None:
    capture_obj.buffer_spans = 3
    with OtlpReceiver(capture_obj, _config(grpc_port=None)) as r:
        url = f"{r.http_endpoint}/v1/traces"
        assert requests.post(url, data=_good_request(3, 1), headers=PB, timeout=5).status_code == 200
        full = requests.post(url, data=_good_request(3, 2), headers=PB, timeout=5)
        assert full.status_code == 503 and int(full.headers["Retry-After"]) >= 1
        assert "buffer full" in status_pb2.Status.FromString(full.content).message
        capture_obj.start()
        time.sleep(0.2)
        assert requests.post(url, data=_good_request(3, 2), headers=PB, timeout=5).status_code == 200
    assert len(_captured_span_ids(capture_obj.close())) == 6


# -- request validation ------------------------------------------------------------------------


def test_partial_success_rejects_spans_with_invalid_ids(capture_obj: Capture) -> None:
    capture_obj.start()
    req = ExportTraceServiceRequest.FromString(_good_request(3))
    ss = req.resource_spans[0].scope_spans[0]
    ss.spans.add(trace_id=b"\x01" * 8, span_id=b"\x02" * 8, name="short trace id")
    ss.spans.add(trace_id=b"\x01" * 16, span_id=bytes(8), name="zero span id")
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "ok", "kind": 2},
        {"traceId": "not-hex", "spanId": "eee19b7ec3c1b175", "name": "bad"},
    ]}]}]}
    with OtlpReceiver(capture_obj, _config(grpc_port=None)) as r:
        url = f"{r.http_endpoint}/v1/traces"
        resp = requests.post(url, data=req.SerializeToString(), headers=PB, timeout=5)
        assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/x-protobuf"
        partial = ExportTraceServiceResponse.FromString(resp.content).partial_success
        assert partial.rejected_spans == 2 and "span id" in partial.error_message
        resp = requests.post(url, json=doc, timeout=5)
        assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
        assert resp.json()["partialSuccess"]["rejectedSpans"] == "1"
        ok = requests.post(url, data=_good_request(2, 9), headers=PB, timeout=5)
        assert ok.status_code == 200 and ok.content == b""  # full success: an empty response message
    ids = _captured_span_ids(capture_obj.close())
    assert sorted(ids) == sorted(["0000000100000001", "0000000100000002", "0000000100000003", "eee19b7ec3c1b174",
                                  "0000000900000001", "0000000900000002"])


def test_bad_requests_get_the_right_status_and_the_receiver_keeps_running(capture_obj: Capture) -> None:
    capture_obj.start()
    config = _config(grpc_port=None, max_request_bytes=256 * 1024, max_decompressed_bytes=1024 * 1024)
    with OtlpReceiver(capture_obj, config) as r:
        url = f"{r.http_endpoint}/v1/traces"
        cases = [
            ("malformed protobuf", dict(data=b"\xff\xff\xff\xff", headers=PB), 400),
            ("malformed JSON", dict(data=b"{not json", headers={"Content-Type": "application/json"}), 400),
            ("JSON that is not OTLP", dict(data=b'{"resourceSpans": 3}', headers={"Content-Type": "application/json"}), 400),
            ("truncated gzip", dict(data=gzip.compress(_good_request())[:-12],
                                    headers={**PB, "Content-Encoding": "gzip"}), 400),
            ("oversized body", dict(data=b"\0" * (300 * 1024), headers=PB), 413),
            ("wrong content type", dict(data=_good_request(), headers={"Content-Type": "text/plain"}), 415),
            ("unknown encoding", dict(data=_good_request(), headers={**PB, "Content-Encoding": "br"}), 415),
        ]
        for what, kwargs, status in cases:
            resp = requests.post(url, timeout=10, **kwargs)  # type: ignore[arg-type]
            assert resp.status_code == status, what
            _still_running(r)
        assert requests.post(f"{r.http_endpoint}/v1/logs", data=b"", headers=PB, timeout=5).status_code == 404
        wrong_method = requests.get(url, timeout=5)
        assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "POST"
        # Chunked transfer encoding (what a streaming exporter sends) works too.
        chunked = requests.post(url, data=iter([_good_request(2, 7)[:10], _good_request(2, 7)[10:]]), headers=PB,
                                timeout=5)
        assert chunked.status_code == 200
        _still_running(r)


def test_gzip_bomb_is_rejected_without_inflating_it(capture_obj: Capture) -> None:
    capture_obj.start()
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    bomb = b"".join(z.compress(zeros) for _ in range(256)) + z.flush()  # 256 MiB inflated
    assert len(bomb) < 1024 * 1024
    config = _config(grpc_port=None, max_decompressed_bytes=4 * 1024 * 1024)
    with OtlpReceiver(capture_obj, config) as r:
        tracemalloc.start()  # the receiver runs in this process: its buffers are traced too
        try:
            resp = requests.post(f"{r.http_endpoint}/v1/traces", data=bomb,
                                 headers={**PB, "Content-Encoding": "gzip"}, timeout=10)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert resp.status_code == 413
        assert "decompressed" in status_pb2.Status.FromString(resp.content).message
        assert peak < 32 * 1024 * 1024  # the 4 MiB limit and the 1 MiB body, not the 256 MiB inflated
        _still_running(r)


def test_connection_survives_rejections_and_declared_oversize_gets_413(capture_obj: Capture) -> None:
    capture_obj.start()
    with OtlpReceiver(capture_obj, _config(grpc_port=None, max_request_bytes=64 * 1024)) as r:
        conn = http.client.HTTPConnection("127.0.0.1", r.http_port, timeout=5)
        conn.request("POST", "/v1/traces", _good_request(), {"Content-Type": "text/plain"})
        resp = conn.getresponse()
        assert resp.status == 415 and resp.read() and not resp.will_close
        # A body over the limit is answered from its Content-Length and read off, not reset.
        conn.request("POST", "/v1/traces", b"\0" * (200 * 1024), PB)
        resp = conn.getresponse()
        assert resp.status == 413 and resp.read() and not resp.will_close
        conn.request("POST", "/v1/traces", _good_request(), PB)  # same connection, still usable
        assert conn.getresponse().status == 200
        conn.close()


def test_bearer_token_http_and_grpc(capture_obj: Capture) -> None:
    capture_obj.start()
    with OtlpReceiver(capture_obj, _config(token="s3cret")) as r:
        url = f"{r.http_endpoint}/v1/traces"
        assert requests.post(url, data=_good_request(), headers=PB, timeout=5).status_code == 401
        wrong = requests.post(url, data=_good_request(), headers={**PB, "Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
        ok = requests.post(url, data=_good_request(), headers={**PB, "Authorization": "Bearer s3cret"}, timeout=5)
        assert ok.status_code == 200

        provider = TracerProvider()
        span = provider.get_tracer("t").start_span("x")
        span.end()
        bad = GrpcSpanExporter(endpoint=r.grpc_endpoint, insecure=True, headers={"authorization": "Bearer nope"}, timeout=3)
        assert bad.export([span]) == SpanExportResult.FAILURE
        good = GrpcSpanExporter(endpoint=r.grpc_endpoint, insecure=True, headers={"authorization": "Bearer s3cret"})
        assert good.export([span]) == SpanExportResult.SUCCESS
        counts = r.status_counts()
        assert counts["401"] == 2 and counts["UNAUTHENTICATED"] >= 1
    assert capture_obj.close().spans == 3 + 1


def test_non_loopback_bind_needs_allow_remote(tmp_path: Path) -> None:
    c = Capture(tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="allow_remote"):
        OtlpReceiver(c, ReceiverConfig(host="0.0.0.0"))
    with pytest.raises(ValueError, match="allow_remote"):
        OtlpReceiver(c, ReceiverConfig(host="192.168.1.10"))
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    ReceiverConfig(host="0.0.0.0", allow_remote=True).check()  # explicit opt-in passes the check
    c.discard()


# -- capture window, files and the command ---------------------------------------------------------


def test_capture_window_writes_atomically_named_files(tmp_path: Path) -> None:
    out = tmp_path / "win.otlp.jsonl.gz"
    stop = threading.Event()
    ready = threading.Event()
    box: dict[str, object] = {}

    def listening(r: OtlpReceiver) -> None:
        box["r"] = r
        ready.set()

    t = threading.Thread(target=lambda: box.update(result=capture_window(60, out, _config(), stop=stop,
                                                                            on_listening=listening)))
    t.start()
    assert ready.wait(10)
    r = box["r"]
    assert isinstance(r, OtlpReceiver)
    sent = _send_spans(HttpSpanExporter(endpoint=f"{r.http_endpoint}/v1/traces"), 50, "window")
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".spool")] == []  # nothing final yet
    stop.set()
    t.join(30)
    result = box["result"]
    assert isinstance(result, CaptureResult) and not result.interrupted
    assert set(_captured_span_ids(result)) == sent and result.endpoints["http"] == r.http_endpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["win.otlp.jsonl.gz"]  # spool and temp files gone
    assert metrics_path_for(out).name == "win.metrics.otlp.jsonl.gz"
    assert metrics_path_for(tmp_path / "plain").name == "plain.metrics.jsonl"


def test_capture_command_with_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    out = tmp_path / "cli.otlp.jsonl"
    port = free_port()
    sent: set[str] = set()

    def client() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait for the listener
            try:
                requests.post(f"http://127.0.0.1:{port}/v1/traces", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        exporter = HttpSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", headers={"Authorization": "Bearer t0ken"})
        sent.update(_send_spans(exporter, 20, "cli"))

    th = threading.Thread(target=client)
    th.start()
    res = CliRunner().invoke(capture, ["--duration", "3s", "--output", str(out), "--http-port", str(port), "--no-grpc",
                                       "--token-file", str(token)])
    th.join()
    assert res.exit_code == 0, res.output
    assert "40 spans" in res.output and str(out) in res.output
    ids = [s["spanId"] for line in out.read_text().splitlines() for rs in json.loads(line)["resourceSpans"]
           for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert set(ids) == sent and len(ids) == 40

    refused = CliRunner().invoke(capture, ["--duration", "1s", "--bind", "0.0.0.0", "-o", str(tmp_path / "r.jsonl")])
    assert refused.exit_code == 2 and "allow-remote" in refused.output


def test_grpc_malformed_and_oversized_requests(capture_obj: Capture) -> None:
    capture_obj.start()
    with OtlpReceiver(capture_obj, _config(http_port=None, max_decompressed_bytes=64 * 1024)) as r:
        with grpc.insecure_channel(r.grpc_endpoint) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                         request_serializer=None, response_deserializer=ExportTraceServiceResponse.FromString)
            with pytest.raises(grpc.RpcError) as bad:
                export(b"\xff\xff\xff\xff", timeout=5)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as big:
                export(_good_request(5000), timeout=5)  # 260 KB > 64 KiB
            assert big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert export(_good_request(3), timeout=5).partial_success.rejected_spans == 0
    assert capture_obj.close().spans == 3


def test_ctrl_c_ends_the_window_early_and_still_writes(tmp_path: Path) -> None:
    box: dict[str, OtlpReceiver] = {}
    sent: set[str] = set()

    def listening(r: OtlpReceiver) -> None:
        box["r"] = r
        sent.update(_send_spans(HttpSpanExporter(endpoint=f"{r.http_endpoint}/v1/traces"), 10, "early"))

    calls: list[object] = []

    def progress(stats: object) -> None:
        calls.append(stats)
        if len(calls) == 1:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread while the window runs

    result = capture_window(600, tmp_path / "early.otlp.jsonl.gz", _config(), on_progress=progress,
                            on_listening=listening)
    assert result.interrupted and result.duration_s < 60
    assert [getattr(c, "phase") for c in calls[1:]] == ["writing", "done"]
    assert set(_captured_span_ids(result)) == sent and len(sent) == 20


def test_sigterm_ends_a_capture_process_and_still_writes(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    port = free_port()
    out = tmp_path / "term.otlp.jsonl.gz"
    proc = subprocess.Popen([sys.executable, "-m", "analyzer", "capture", "--duration", "60s", "--http-port", str(port),
                             "--no-grpc", "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                resp = requests.post(f"http://127.0.0.1:{port}/v1/traces", data=_good_request(4), headers=PB, timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.1)
        assert resp.status_code == 200
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "4 spans" in stdout and "stopped early" in stdout
    assert len([line for line in gzip.open(out, "rt")]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["term.otlp.jsonl.gz"]


def test_binpb_output_is_framed_protobuf_without_conversion(tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    from collectors.otlp_files import SourceStats, iter_messages
    from collectors.otlp_metrics import read_metric_requests

    capture_obj = Capture(tmp_path / "cap.binpb.gz").start()
    with OtlpReceiver(capture_obj, _config(grpc_port=None)) as r:
        sent = _send_spans(HttpSpanExporter(endpoint=f"{r.http_endpoint}/v1/traces"), 100, "proto-out")
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{r.http_endpoint}/v1/metrics"),
                                               export_interval_millis=3_600_000)
        provider = MeterProvider(metric_readers=[reader])
        provider.get_meter("m").create_counter("process.cpu.time", unit="s").add(1.0)
        provider.shutdown()
    result = capture_obj.close()
    assert result.metrics_path is not None and result.metrics_path.name == "cap.metrics.binpb.gz"
    stats = SourceStats(path=str(result.traces_path))
    ids = []
    for kind, msg in iter_messages(result.traces_path, stats):
        assert kind == "proto" and isinstance(msg, bytes)
        req = ExportTraceServiceRequest.FromString(msg)
        ids += [s.span_id.hex() for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert stats.format == "otlp-proto-framed" and sorted(ids) == sorted(sent)
    (metrics_req,) = list(read_metric_requests(result.metrics_path))
    assert metrics_req.resource_metrics[0].scope_metrics[0].metrics[0].name == "process.cpu.time"
