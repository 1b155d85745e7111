"""The command line as users script it: stdout purity, exit codes, formats, windows, filters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.report_schema import validate_report
from tests.workloads.servers import wait_for_listener

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_json_on_stdout_validates_and_nothing_else_is_printed(orders_n_plus_one_jsonl):
    p = run("analyze", "--traces", str(orders_n_plus_one_jsonl), "--format", "json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)  # the whole of stdout is one JSON document
    validate_report(report)
    (orders,) = [s for s in report["services"] if s["service"] == "orders"]
    assert orders["runtime"] == "python"
    hot = orders["hotspots"][0]
    assert hot["operation"] == "GET /orders"
    # The N+1 endpoint spends most of its time in SQLite.
    assert hot["breakdown"]["database"] > hot["breakdown"]["self"]
    assert orders["verdict"]["rust_rewrite"] == "not_recommended"


@pytest.mark.parametrize("fmt,marker", [("md", "# profile-first report"), ("text", "profile-first")])
def test_markdown_and_text_lead_with_the_verdict(gateway_sequential_jsonl, fmt, marker):
    p = run("analyze", "--traces", str(gateway_sequential_jsonl), "--format", fmt)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(marker)
    first_service = p.stdout.index("gateway")
    assert "Rust rewrite" in p.stdout[first_service: first_service + 300]


def test_output_file_format_from_extension_and_no_temp_files_left(orders_n_plus_one_jsonl, tmp_path):
    out = tmp_path / "weekly.json"
    p = run("analyze", "--traces", str(orders_n_plus_one_jsonl), "--output", str(out))
    assert p.returncode == 0, p.stderr
    assert p.stdout == ""
    validate_report(json.loads(out.read_text()))
    assert [f.name for f in tmp_path.iterdir()] == ["weekly.json"]


def test_window_selects_entry_spans_by_start_time(orders_n_plus_one_jsonl):
    from datetime import datetime

    full = json.loads(run("analyze", "--traces", str(orders_n_plus_one_jsonl), "--format", "json").stdout)
    (hot,) = [h for s in full["services"] for h in s["hotspots"] if h["operation"] == "GET /orders"]
    start = datetime.fromisoformat(full["window"]["start"]).timestamp()
    end = datetime.fromisoformat(full["window"]["end"]).timestamp()

    def count(*window: str) -> int:
        p = run("analyze", "--traces", str(orders_n_plus_one_jsonl), "--format", "json", *window)
        assert p.returncode == 0, p.stderr
        return sum(h["count"] for s in json.loads(p.stdout)["services"] for h in s["hotspots"]
                   if h["operation"] == "GET /orders")

    # A window ending before the data begins selects nothing (RFC 3339 end, unix-seconds start):
    # said, with exit 2, rather than an empty report (issue 11).
    p = run("analyze", "--traces", str(orders_n_plus_one_jsonl), "--start", "0", "--end", full["window"]["start"])
    assert p.returncode == 2 and "no spans start in the window" in p.stderr
    # The requests run one after another, so the second half of the time holds some but not all.
    middle = count("--start", f"{(start + end) / 2:.3f}", "--end", f"{end + 1:.3f}")
    assert 0 < middle < hot["count"]
    assert count("--start", f"{start - 1:.3f}", "--end", f"{end + 1:.3f}") == hot["count"]


def test_service_filter(gateway_sequential_jsonl):
    p = run("analyze", "--traces", str(gateway_sequential_jsonl), "--format", "json", "--service", "pricing")
    assert [s["service"] for s in json.loads(p.stdout)["services"]] == ["pricing"]


@pytest.mark.parametrize("args,message", [
    (["--traces", "/nonexistent/file.jsonl"], "no such file"),
    (["--traces", str(Path(__file__))], "not an OTLP file"),
    (["--traces", "README.md", "--start", "yesterday"], "neither RFC 3339"),
    (["--traces", "README.md", "--start", "2026-01-01T00:00:00"], "no time zone"),
    (["--traces", "README.md", "--start", "20", "--end", "10"], "window is empty"),
    ([], "give --traces"),
])
def test_unusable_input_is_one_line_on_stderr_and_exit_2(args, message):
    p = run("analyze", *args)
    assert p.returncode == 2
    assert p.stdout == ""
    assert message in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_bad_config_is_exit_2(orders_n_plus_one_jsonl, tmp_path):
    cfg = tmp_path / "pf.toml"
    cfg.write_text("[classify\nmin_share = 0.3\n")
    p = run("analyze", "--traces", str(orders_n_plus_one_jsonl), "--config", str(cfg))
    assert p.returncode == 2 and "invalid TOML" in p.stderr


def test_listen_captures_then_analyzes_what_arrived(tmp_path):
    """analyze --listen: a real OTLP/HTTP exporter sends spans during the window; the report has them."""
    import socket
    import time

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "analyzer", "analyze", "--listen", "--duration", "6s",
                             "--http-port", str(port), "--grpc-port", "0", "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        wait_for_listener("127.0.0.1", port, proc)
        tp = TracerProvider(resource=Resource.create({"service.name": "listened"}))
        tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")))
        tracer = tp.get_tracer("t")
        for _ in range(7):
            with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER):
                with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes={"db.system": "sqlite"}):
                    time.sleep(0.01)
        tp.shutdown()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    report = json.loads(out)
    validate_report(report)
    (svc,) = report["services"]
    assert svc["service"] == "listened" and svc["hotspots"][0]["count"] == 7
    assert report["input"]["spans"] == 14
    assert svc["hotspots"][0]["category"] == "database"
