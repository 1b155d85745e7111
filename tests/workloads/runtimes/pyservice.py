"""CPython services for the live runtime tests: `python -m tests.workloads.runtimes.pyservice KIND PORT SPANS`.

Each is a real process: a ThreadingHTTPServer whose requests are SERVER spans of the real
OpenTelemetry SDK (written to SPANS as OTLP protobuf on SIGTERM), with prometheus_client's
process collector, a request counter and the process's own wait for a core
(analyzer.instrument.core_wait) on /metrics for Prometheus to scrape.

- `gil`: every request runs ~15 ms of pure-Python arithmetic. Run pinned to one core under
  concurrent load: requests queue for the GIL behind each other's work.
- `pygc`: every request builds cyclic garbage that stays alive for a few requests while 300,000
  tracked objects stay live and the collector's thresholds are low, so survivors reach the old
  generation steadily and full collections, each walking the live set, run every few requests.
  GC is timed by analyzer.instrument.gc_pauses (python_gc_pause_seconds).
- `background`: a thread burns ~0.3 cores whatever the requests do (an exporter or cache
  warmer); requests are rare and wait 20 ms on I/O; /healthz is a probe that does nothing.
- `starved`: every request runs ~3 ms of arithmetic. Run at the lowest priority (SCHED_IDLE) on a
  core other processes keep busy: requests wait for the core, not for their own work.
"""

from __future__ import annotations

import gc
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, generate_latest

from analyzer.instrument import core_wait
from tests.workloads.recording import write_proto_single


def spin(seconds: float) -> int:
    """Pure-Python work for about `seconds` of CPU (measured on this thread's CPU clock)."""
    end, n = time.thread_time() + seconds, 0
    while time.thread_time() < end:
        for i in range(200):
            n += i * i % 7
    return n


_live: list[dict] = []
_recent: list[list[dict]] = []  # the last KEEP requests' cycles: they survive into the old generation
KEEP = 4


def garbage(cycles: int) -> int:
    """`cycles` reference cycles, kept alive for the next KEEP requests and then freed only by the
    cycle collector. Survivors reach the oldest generation at a steady pace, so full collections
    (each walking the large live set) run every few requests, whatever else the host does."""
    batch = []
    for i in range(cycles):
        a: dict = {"i": i}
        b: dict = {"a": a}
        a["b"] = b
        batch.append(a)
    _recent.append(batch)
    if len(_recent) > KEEP:
        _recent.pop(0)
    return cycles


def _warm_cache() -> None:
    """The background thread: 15 ms of CPU every 50 ms (~0.3 cores), whatever the requests do."""
    while True:
        spin(0.015)
        time.sleep(0.035)


def handler_for(kind: str):
    if kind == "gil":
        return {"/work": lambda: spin(0.015)}
    if kind == "pygc":
        return {"/work": lambda: garbage(3000)}
    if kind == "background":
        return {"/work": lambda: time.sleep(0.02), "/healthz": lambda: 0}
    if kind == "starved":
        return {"/work": lambda: spin(0.003)}
    raise SystemExit(f"unknown kind {kind!r}")


def main(kind: str, port: int, spans_path: str) -> None:
    exporter = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": f"py-{kind}"}))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = tp.get_tracer("tests.workloads.runtimes")
    requests = Counter("http_requests_total", "Requests served.")
    routes = handler_for(kind)
    core_wait.install(otel=False)  # process_cpu_wait_seconds_total: its own wait for a core
    if kind == "pygc":
        from analyzer.instrument import gc_pauses

        gc_pauses.install(otel=False)
        _live.extend({"k": i, "v": [i]} for i in range(300_000))
        gc.set_threshold(300, 2, 2)
    if kind == "background":
        threading.Thread(target=_warm_cache, daemon=True).start()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/metrics":
                return self._reply(generate_latest())
            route = routes.get(self.path)
            if route is None:
                return self._reply(b"not found", 404)
            with tracer.start_as_current_span(f"GET {self.path}", kind=SpanKind.SERVER,
                                              attributes={"http.request.method": "GET", "url.path": self.path,
                                                          "http.route": self.path}):
                route()
                requests.inc()
            self._reply(b"ok")

        def _reply(self, body: bytes, status: int = 200) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop.wait()
    server.shutdown()
    write_proto_single(exporter.get_finished_spans(), Path(spans_path))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
