"""Load for the live runtime tests: `python -m tests.workloads.runtimes.drive URL SECONDS [options]`.

Open loop (`--rate`, Poisson arrivals) or closed loop (`--concurrency` clients back to back).
With `--spans SERVICE:LANGUAGE:PATH`, each request is also recorded as a SERVER span of
SERVICE by the real OpenTelemetry SDK, timed around the HTTP call on loopback: the latency a
client sees, which includes any wait before the server's handler runs (event loop blocked,
threads stopped by GC). Used for the Node, Go and JVM services, which have no OTel SDK here.
"""

from __future__ import annotations

import argparse
import http.client
import random
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.workloads.recording import write_proto_single


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("seconds", type=float)
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--concurrency", type=int, default=0)
    ap.add_argument("--spans", default="")
    ap.add_argument("--once", default="", help="a path requested once at the start (a probe)")
    a = ap.parse_args()
    u = urlsplit(a.url)
    tracer, exporter, tp = None, None, None
    if a.spans:
        service, language, path = a.spans.split(":", 2)
        exporter = InMemorySpanExporter()
        tp = TracerProvider(resource=Resource.create({"service.name": service, "telemetry.sdk.language": language}))
        tp.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = tp.get_tracer("tests.workloads.runtimes.drive")
    deadline = time.monotonic() + a.seconds

    def call(conn: http.client.HTTPConnection, path: str) -> None:
        def go() -> None:
            conn.request("GET", path)
            conn.getresponse().read()
        if tracer is None:
            return go()
        with tracer.start_as_current_span(f"GET {path}", kind=SpanKind.SERVER,
                                          attributes={"http.request.method": "GET", "http.route": path}):
            go()

    def client(pace: float) -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        rnd = random.Random(threading.get_ident())
        nxt = time.monotonic()
        while time.monotonic() < deadline:
            if pace:
                nxt += rnd.expovariate(pace)
                time.sleep(max(0.0, nxt - time.monotonic()))
                if time.monotonic() >= deadline:
                    break
            try:
                call(conn, u.path or "/work")
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
                time.sleep(0.05)

    if a.once:
        call(http.client.HTTPConnection(u.hostname, u.port, timeout=30), a.once)
    threads = [threading.Thread(target=client, args=(a.rate,)) for _ in range(max(1, a.concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if exporter is not None:
        tp.shutdown()
        write_proto_single(exporter.get_finished_spans(), Path(path))


if __name__ == "__main__":
    main()
