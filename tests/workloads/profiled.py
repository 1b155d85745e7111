"""Two CPU-bound HTTP services to profile with a real profiler: `python -m tests.workloads.profiled KIND
--endpoint URL`. Each is the demo's instrumented HTTP server (SERVER spans, process CPU time and
GC pauses over OTLP) with one kind of CPU work:

- `json`: builds a report of a few hundred records and encodes it with the standard json module.
  Cause a human would name: JSON serialization; the fix is a faster serializer, not Rust.
- `checksum`: a pure-Python checksum loop over a byte buffer, in the service's own function.
  Cause a human would name: the service's own CPU work, all in `checksum`: the rewrite target.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from analyzer.demo.services import Route, serve
from analyzer.demo.telemetry import setup


def build_records(n: int) -> list[dict]:
    return [{"id": i, "sku": f"SKU-{i:06d}", "tags": ["a", "b", "c", str(i % 7)], "price": i * 1.25,
             "stock": {"eu": i % 13, "us": i % 17, "apac": i % 5}} for i in range(n)]


def encode_report(records: list[dict]) -> bytes:
    return json.dumps({"items": records, "count": len(records)}, indent=1, sort_keys=True).encode()


def checksum(data: bytes, rounds: int) -> int:
    h = 0
    for _ in range(rounds):
        for b in data:
            h = (h * 31 + b) & 0xFFFFFFFF
    return h


def routes(kind: str) -> list[Route]:
    if kind == "json":
        records = build_records(400)

        def report(path: str, q: dict[str, str]) -> bytes:
            body = b""
            for _ in range(6):
                body = encode_report(records)
            return body[:64]

        return [Route("/report/{id}", "/report/", report)]
    payload = bytes(range(256)) * 8

    def check(path: str, q: dict[str, str]) -> bytes:
        return str(checksum(payload, 150)).encode()

    return [Route("/checksum/{id}", "/checksum/", check)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=("json", "checksum"))
    p.add_argument("--endpoint", required=True)
    p.add_argument("--max-seconds", type=float, default=60.0)
    args = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tel = setup(args.kind, args.endpoint)
    try:
        server = serve(tel.tracer_provider, routes(args.kind))
        print(f"READY {server.server_address[1]}", flush=True)
        deadline = time.monotonic() + args.max_seconds
        while not stop.wait(0.1) and time.monotonic() < deadline:
            pass
        server.shutdown()
    finally:
        tel.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
