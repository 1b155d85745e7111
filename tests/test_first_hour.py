"""A new user's first hour (issue 11): what was asked for but is not in the data says so and
exits 2; a window cuts traces and metrics alike and the header counts what is in it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from analyzer.report_schema import validate_report
from collectors.capture import Capture
from collectors.receiver import OtlpReceiver, ReceiverConfig
from tests.workloads.servers import wait_for_listener

ROOT = Path(__file__).resolve().parents[1]
# Recorded with the real SDK on 2026-11-27 (examples/README.md): long before any metrics this test records.
OLD_TRACES = ROOT / "examples" / "gateway-sequential.otlp.jsonl"


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", "analyze", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def one_line_exit_2(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, p.stderr
    assert p.stdout == "" and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    return p.stderr


@pytest.fixture(scope="module")
def ledger_metrics(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float, float]:
    """Process CPU of a `ledger` service that sends metrics but no traces, exported now by the real
    SDK over OTLP/HTTP to profile-first's receiver; returns the metrics file and when it ran."""
    capture = Capture(tmp_path_factory.mktemp("metrics") / "m.otlp.jsonl").start()
    cpu = [1.0]
    t0 = time.time()
    with OtlpReceiver(capture, ReceiverConfig(http_port=0, grpc_port=0)) as r:
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{r.http_endpoint}/v1/metrics"),
                                               export_interval_millis=3_600_000)
        provider = MeterProvider(resource=Resource({"service.name": "ledger", "telemetry.sdk.language": "python"}),
                                 metric_readers=[reader])
        provider.get_meter("runtime").create_observable_counter(
            "process.cpu.time", [lambda _: [Observation(cpu[0], {"cpu.mode": "user"})]], unit="s")
        for step in range(3):
            cpu[0] += 0.5
            reader.force_flush()
            time.sleep(0.3)
        provider.shutdown()
    result = capture.close()
    assert result.metrics_path is not None
    return result.metrics_path, t0, time.time()


def test_a_service_not_in_the_data_lists_the_known_ones_and_exits_2():
    err = one_line_exit_2(analyze("--traces", str(OLD_TRACES), "--service", "Gateway"))
    assert "'Gateway'" in err and "did you mean 'gateway'?" in err
    assert "gateway" in err and "pricing" in err  # what the data does hold
    err = one_line_exit_2(analyze("--traces", str(OLD_TRACES), "--service", "gateway", "--service", "invetnory"))
    assert "did you mean 'inventory'?" in err


def test_a_window_without_spans_says_so_and_exits_2(ledger_metrics):
    metrics, t0, t1 = ledger_metrics
    err = one_line_exit_2(analyze("--traces", str(OLD_TRACES), "--metrics", str(metrics),
                                  "--start", str(int(t0) - 5), "--end", str(int(t1) + 5)))
    assert "no spans start in the window" in err and "the traces read cover 2026-11-27" in err


def test_metrics_are_cut_to_the_window_and_the_header_counts_what_is_in_it(ledger_metrics):
    """The window covers the first half of the traces and none of ledger's metrics (recorded
    today): ledger is not reported as 'seen only in metrics', and the header counts the spans of
    the window, not all read."""
    metrics, _, _ = ledger_metrics
    full = json.loads(analyze("--traces", str(OLD_TRACES), "--format", "json").stdout)
    start = datetime.fromisoformat(full["window"]["start"]).timestamp()
    end = datetime.fromisoformat(full["window"]["end"]).timestamp()
    half = f"{(start + end) / 2:.3f}"
    p = analyze("--traces", str(OLD_TRACES), "--metrics", str(metrics), "--start", f"{start:.3f}", "--end", half,
                "--format", "json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    validate_report(report)
    assert "ledger" not in [s["service"] for s in report["services"]]
    assert 0 < report["window"]["spans"] < report["input"]["spans"]
    assert 0 < report["window"]["traces"] < report["input"]["traces"]
    text = analyze("--traces", str(OLD_TRACES), "--start", f"{start:.3f}", "--end", half).stdout
    assert (f"{report['window']['spans']:,} spans in {report['window']['traces']:,} traces in the window "
            f"({report['input']['spans']:,} spans read)") in " ".join(text.split("\n\n")[0].split())
    # Without a window, ledger's metrics are in it: the service is reported from metrics alone.
    everything = json.loads(analyze("--traces", str(OLD_TRACES), "--metrics", str(metrics), "--format", "json").stdout)
    assert "ledger" in [s["service"] for s in everything["services"]]


def test_a_web_server_that_is_not_prometheus_is_named_as_such(tmp_path):
    """Python's own http.server (a real web server, serving a directory) answers the query API
    with an HTML error page: said in one line with the URL tried, not as raw bytes."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    (tmp_path / "index.html").write_text("<!DOCTYPE html><html><body>intranet</body></html>")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/wiki"
        err = one_line_exit_2(analyze("--traces", str(OLD_TRACES), "--prometheus", url, "--retries", "0"))
    finally:
        server.shutdown()
        server.server_close()
    assert "this URL does not look like a Prometheus query API (got an HTML page" in err
    assert f"{url}/api/v1/query_range" in err
    assert "<!DOCTYPE" not in err and "<html" not in err


def test_listen_with_nothing_received_says_where_it_listened_and_how_to_send():
    p = analyze("--listen", "--duration", "2s", "--http-port", "0", "--grpc-port", "0")
    assert p.returncode == 2 and p.stdout == "" and "Traceback" not in p.stderr
    first, err = p.stderr.strip().splitlines()  # the "capturing for 2 s on ..." line, then the error
    assert first.startswith("capturing for 2 s on ")
    m = re.search(r"nothing was received on (http://127\.0\.0\.1:\d+) \(OTLP/HTTP\) or 127\.0\.0\.1:\d+ \(OTLP/gRPC\) "
                  r"in 2 s; point an SDK at it with OTEL_EXPORTER_OTLP_ENDPOINT=(\S+) ", err)
    assert m and m.group(2) == m.group(1), err
    assert "otlphttp" in err and "/tmp" not in err


def test_listen_bind_is_loopback_unless_remote_is_allowed():
    err = one_line_exit_2(analyze("--listen", "--duration", "2s", "--bind", "0.0.0.0"))
    assert "refusing to listen on '0.0.0.0'" in err and "--allow-remote" in err


def test_listen_bind_takes_another_address(tmp_path):
    """--bind 127.0.0.2: the receiver listens there (and only there), and a real SDK exporter's
    spans sent to it are analyzed."""
    import socket

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind

    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "analyzer", "analyze", "--listen", "--duration", "5s", "--bind",
                             "127.0.0.2", "--http-port", str(port), "--grpc-port", "0", "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        wait_for_listener("127.0.0.2", port, proc)
        with pytest.raises(OSError):  # not on 127.0.0.1
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        tp = TracerProvider(resource=Resource.create({"service.name": "bound"}))
        tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.2:{port}/v1/traces")))
        for _ in range(3):
            with tp.get_tracer("t").start_as_current_span("GET /b", kind=SpanKind.SERVER):
                time.sleep(0.005)
        tp.shutdown()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert [s["service"] for s in json.loads(out)["services"]] == ["bound"]
