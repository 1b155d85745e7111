"""Findings as metrics (analyzer/export_metrics.py): Prometheus text exposition checked by promtool
and scraped by a real Prometheus, and an OTLP/HTTP push received by profile-first's own receiver.

The report comes from real SDK traces: the N+1 orders service and the sequential gateway
(examples/), plus a service whose name holds a backslash, double quotes and a line break, as
telemetry may; every label must arrive exactly as it was sent.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from opentelemetry.trace import SpanKind

from analyzer.config import Config
from analyzer.export_metrics import ExportError, families, push_otlp, to_prometheus_text, write_textfile
from analyzer.pipeline import Inputs, analyze
from collectors.capture import Capture
from collectors.otlp_traces import load_traces
from collectors.receiver import OtlpReceiver, ReceiverConfig
from tests.prom import running
from tests.workloads.recording import Recorder, record, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [ROOT / "examples" / n for n in ("orders-n-plus-one.otlp.jsonl", "gateway-sequential.otlp.jsonl")]
ODD_SERVICE = 'billing\\eu "blue"\nline two'
ODD_OPERATION = 'GET /invoice/{id} "\\"'


def odd_names(rec: Recorder) -> None:
    tracer = rec.provider(ODD_SERVICE).get_tracer("tests.workloads")
    for _ in range(5):
        with tracer.start_as_current_span(ODD_OPERATION, kind=SpanKind.SERVER):
            time.sleep(0.002)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    odd = write_jsonl(record(odd_names), tmp_path_factory.mktemp("metrics") / "odd.otlp.jsonl")
    loaded = load_traces([str(p) for p in [*EXAMPLES, odd]])
    return analyze(Inputs(loaded.table, loaded.sources, loaded.repairs), Config())


def _service(report: dict, name: str) -> dict:
    return next(s for s in report["services"] if s["service"] == name)


def test_promtool_accepts_the_textfile(report: dict, tmp_path: Path) -> None:
    path = tmp_path / "profile_first.prom"
    write_textfile(report, str(path))
    res = subprocess.run(["promtool", "check", "metrics"], input=path.read_text(encoding="utf-8"),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout == "" and res.stderr == "", res.stdout + res.stderr


def test_names_follow_prometheus_conventions_and_series_are_unique(report: dict) -> None:
    series = [(f.name, tuple(sorted(labels.items()))) for f in families(report) for labels, _ in f.samples]
    assert len(series) == len(set(series))
    # gateway's GET /checkout has one PF-NET001 finding per slow downstream: one series, the largest.
    checkout = _service(report, "gateway")["hotspots"][0]
    net001 = [f for f in checkout["findings"] if f["rule"] == "PF-NET001"]
    assert len(net001) == 3
    shares = [v for f in families(report) if f.name == "profile_first_finding_share_ratio"
              for labels, v in f.samples if labels["service"] == "gateway" and labels["rule"] == "PF-NET001"]
    assert shares == [max(f["share"] for f in net001)]
    names = [f.name for f in families(report)]
    assert all(n.startswith("profile_first_") for n in names)
    assert not [n for n in names if n.endswith(("_ms", "_milliseconds", "_percent", "_total"))]
    text = to_prometheus_text(report)
    orders = _service(report, "orders")
    p99 = orders["hotspots"][0]["p99_ms"] / 1000
    assert f'profile_first_hotspot_latency_seconds{{service="orders",operation="GET /orders",percentile="p99"}} {p99!r}' \
        in text
    assert 'profile_first_verdict{service="orders",verdict="not_recommended"} 1' in text
    assert 'profile_first_verdict_cause{service="gateway",cause="network"} 1' in text


class _Serve(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def exposition(report: dict) -> Iterator[int]:
    handler = type("Handler", (_Serve,), {"body": to_prometheus_text(report).encode("utf-8")})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.prometheus
def test_a_real_prometheus_scrapes_the_same_labels_and_values(report: dict, exposition: int, tmp_path: Path) -> None:
    scrape = (f"  - job_name: profile_first\n    scrape_interval: 1s\n    static_configs:\n"
              f"      - targets: ['127.0.0.1:{exposition}']\n")
    with running(tmp_path / "data", scrape_configs=scrape, scrape_interval="1s") as prom:
        deadline, result = time.monotonic() + 30, []
        while time.monotonic() < deadline and not result:
            r = requests.get(f"{prom.url}/api/v1/query", params={"query": "profile_first_hotspot_latency_seconds"},
                             timeout=5)
            result = r.json()["data"]["result"]
            time.sleep(0.3)
        health = requests.get(f"{prom.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    assert health and health[0]["health"] == "up" and health[0]["lastError"] == ""
    got = {(m["metric"]["service"], m["metric"]["operation"], m["metric"]["percentile"]): float(m["value"][1])
           for m in result}
    odd = _service(report, ODD_SERVICE)["hotspots"][0]
    assert got[(ODD_SERVICE, ODD_OPERATION, "p95")] == pytest.approx(odd["p95_ms"] / 1000)
    assert got[("orders", "GET /orders", "p50")] == pytest.approx(_service(report, "orders")["hotspots"][0]["p50_ms"] / 1000)
    assert len(got) == 3 * sum(len(s["hotspots"]) for s in report["services"])


def _received_points(path: Path) -> dict[tuple[str, tuple], float]:
    """(metric name, sorted attributes) -> value, read from the capture's OTLP/JSON lines with plain json."""
    out = {}
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            for rm in json.loads(line)["resourceMetrics"]:
                for sm in rm["scopeMetrics"]:
                    for m in sm["metrics"]:
                        for dp in m["gauge"]["dataPoints"]:
                            attrs = tuple(sorted((a["key"], a["value"]["stringValue"]) for a in dp.get("attributes", [])))
                            out[(m["name"], attrs)] = float(dp.get("asDouble", dp.get("asInt", 0)))
    return out


def test_otlp_push_arrives_at_the_receiver_with_every_point(report: dict, tmp_path: Path) -> None:
    capture = Capture(tmp_path / "pushed.otlp.jsonl").start()
    with OtlpReceiver(capture, ReceiverConfig(host="127.0.0.1", http_port=0, grpc_port=None)) as receiver:
        sent = push_otlp(report, f"{receiver.http_endpoint}/v1/metrics")
    result = capture.close()
    assert result.metrics_path is not None
    got = _received_points(result.metrics_path)
    want = {(f.name, tuple(sorted(labels.items()))): value for f in families(report) for labels, value in f.samples}
    assert sent == len(want) == len(got)
    assert got == pytest.approx(want)
    assert (("profile_first_verdict", (("service", ODD_SERVICE), ("verdict", "not_recommended"))) in got)


def test_otlp_push_refused_is_an_error(report: dict, tmp_path: Path) -> None:
    """The receiver demands a bearer token the push does not carry: 401, not retried, ExportError."""
    capture = Capture(tmp_path / "refused.otlp.jsonl").start()
    with OtlpReceiver(capture, ReceiverConfig(host="127.0.0.1", http_port=0, grpc_port=None, token="s3cret")) as r:
        with pytest.raises(ExportError, match="OTLP metrics push to http://127.0.0.1:.* failed"):
            push_otlp(report, f"{r.http_endpoint}/v1/metrics", timeout_s=5)
        push_otlp(report, f"{r.http_endpoint}/v1/metrics", headers={"Authorization": "Bearer s3cret"}, timeout_s=5)
    capture.close()


def test_analyze_writes_the_textfile_and_pushes(tmp_path: Path) -> None:
    """`analyze --metrics-textfile F --push-metrics URL`: both arrive; a refused push is exit 5 with the
    report and textfile still written; credentials for the push come from the OTel environment variable."""
    argv = [sys.executable, "-m", "analyzer", "analyze", "--traces", str(EXAMPLES[0]), "--output",
            str(tmp_path / "r.json"), "--metrics-textfile", str(tmp_path / "pf.prom")]
    capture = Capture(tmp_path / "cli.otlp.jsonl").start()
    with OtlpReceiver(capture, ReceiverConfig(host="127.0.0.1", http_port=0, grpc_port=None, token="s3cret")) as r:
        url = f"{r.http_endpoint}/v1/metrics"
        refused = subprocess.run([*argv, "--push-metrics", url], cwd=ROOT, capture_output=True, text=True, timeout=120)
        ok = subprocess.run([*argv, "--push-metrics", url], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "Authorization=Bearer s3cret"})
    result = capture.close()
    assert refused.returncode == 5, refused.stderr
    assert f"OTLP metrics push to {url} failed" in refused.stderr and "the report was written" in refused.stderr
    assert ok.returncode == 0, ok.stderr
    assert 'profile_first_verdict{service="orders",verdict="not_recommended"} 1' in (tmp_path / "pf.prom").read_text()
    assert json.loads((tmp_path / "r.json").read_text())["services"][0]["service"] == "orders"
    got = _received_points(result.metrics_path)
    assert got[("profile_first_verdict", (("service", "orders"), ("verdict", "not_recommended")))] == 1.0
