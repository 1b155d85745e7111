"""Inputs for the report renderers' tests: a GC-heavy service exporting traces AND runtime
metrics over real OTLP/HTTP, and a service whose telemetry is hostile.

- `record_feed(dir, seconds)`: the demo's `feed` handler (a cyclic object graph per request over
  a large live heap: long full collections) runs in this process as service `feed`, instrumented
  exactly as the demo's processes are (analyzer/demo/telemetry.py: the SDK's OTLP/HTTP span and
  metric exporters, `process.cpu.time`, CPython GC pauses timed with gc.callbacks), exporting to
  profile-first's own receiver on loopback. Returns the capture's traces and metrics files.
- `hostile(rec)`: a service whose name, operation, SQL statements, peer and code location carry
  markup, quotes and `javascript:` URLs, as anyone able to send telemetry could. Its entry
  span runs the same statement eight times (an N+1 the rules report, quoting the statement).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from opentelemetry.trace import SpanKind

from analyzer.demo.services import feed_routes
from analyzer.demo.telemetry import setup
from collectors.capture import Capture, CaptureResult
from collectors.receiver import OtlpReceiver, ReceiverConfig
from tests.workloads.recording import Recorder

HOSTILE_SERVICE = "\"><svg onload=\"document.title='pwned-service'\">"
HOSTILE_OPERATION = "<script>document.title='pwned-span'</script>"
HOSTILE_STATEMENT = 'SELECT name FROM "</code><img src=x onerror=document.title=`pwned-sql`>" WHERE id = 1'
HOSTILE_FUNCTION = "javascript:document.title='pwned-code'"
HOSTILE_FILE = "app/<b onmouseover=alert(1)>.py"


def record_feed(workdir: Path, seconds: float) -> CaptureResult:
    """Run the GC-heavy `feed` handler for `seconds` under real OTLP export; the capture's files."""
    capture = Capture(workdir / "feed.otlp.jsonl").start()
    with OtlpReceiver(capture, ReceiverConfig(host="127.0.0.1", http_port=0, grpc_port=None)) as receiver:
        tel = setup("feed", receiver.http_endpoint)
        try:
            handler = feed_routes(tel, argparse.Namespace())[0].handler
            tracer = tel.tracer_provider.get_tracer("tests.workloads")
            deadline, user = time.monotonic() + seconds, 0
            while time.monotonic() < deadline:
                user += 1
                with tracer.start_as_current_span("GET /feed/{user}", kind=SpanKind.SERVER,
                                                  attributes={"http.route": "/feed/{user}",
                                                              "http.request.method": "GET"}):
                    handler(f"/feed/{user}", {})
                # The handler holds the GIL through each full collection, and the metric exporter
                # and the receiver run in this same process: without a pause between requests a
                # 4 s run delivered as few as one metric collection (no GC series to chart or
                # measure). 2 ms of idle per request leaves GC and CPU per request as they are.
                time.sleep(0.002)
        finally:
            tel.shutdown()  # flushes the last spans and the last metric collection
    return capture.close()


def hostile(rec: Recorder, requests: int = 10) -> None:
    """Markup in every string a report shows; see the module docstring."""
    tracer = rec.provider(HOSTILE_SERVICE).get_tracer("tests.workloads")
    for _ in range(requests):
        with tracer.start_as_current_span(HOSTILE_OPERATION, kind=SpanKind.SERVER,
                                          attributes={"http.route": HOSTILE_OPERATION}):
            for _ in range(8):
                with tracer.start_as_current_span("SELECT items", kind=SpanKind.CLIENT, attributes={
                    "db.system": "sqlite", "db.statement": HOSTILE_STATEMENT,
                    "code.function": HOSTILE_FUNCTION, "code.filepath": HOSTILE_FILE, "code.lineno": 7,
                }):
                    time.sleep(0.007)
