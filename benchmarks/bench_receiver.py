"""Throughput of the OTLP/HTTP receiver: spans/s accepted from a load generator in another process.

    .venv/bin/python benchmarks/bench_receiver.py [--seconds 10] [--spans-per-request 1000]
        [--connections 2] [--gzip] [--buffer-spans 200000] [--write json|proto]
        [--transport http|grpc] [--server asyncio|stdlib] [--rate SPANS_PER_S]

The parent runs the receiver with the real `Capture` sink (buffer + spool thread); a child
process (this file with --generate) posts pre-encoded ExportTraceServiceRequests over
keep-alive HTTP/1.1 connections for a bounded time, retrying on 503 after Retry-After like an
OTLP exporter. At the end the child's acknowledged span count, the receiver's count and the
spans actually in the spool are compared: equal means none lost. `--write json|proto` also writes
the spool to the output file (`json`: OTLP/JSON lines, `proto`: framed protobuf) and reports that
rate separately (it is not on the request path).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

from collectors.capture import Capture  # noqa: E402
from collectors.otlp_ingest import TRACES  # noqa: E402
from collectors.receiver import OtlpReceiver, ReceiverConfig  # noqa: E402


def build_request(n_spans: int, seed: int) -> bytes:
    """A realistic-ish request: one resource, 1 scope, server spans with 6 attributes."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "bench"
    ss = rs.scope_spans.add()
    ss.scope.name = "bench"
    for i in range(n_spans):
        s = ss.spans.add(
            trace_id=(seed * 1_000_003 + i // 10 + 1).to_bytes(16, "big"),
            span_id=(seed * 1_000_003 + i + 1).to_bytes(8, "big"),
            name=f"GET /items/{i % 20}",
            kind=2,
            start_time_unix_nano=1_700_000_000_000_000_000 + i * 1000,
            end_time_unix_nano=1_700_000_000_000_000_000 + i * 1000 + 5_000_000,
        )
        if i % 10:
            s.parent_span_id = (seed * 1_000_003 + i - i % 10 + 1).to_bytes(8, "big")
        for k, v in (("http.request.method", "GET"), ("http.route", "/items/{id}"), ("url.scheme", "http"),
                     ("server.address", "localhost"), ("db.system.name", "postgresql")):
            s.attributes.add(key=k).value.string_value = v
        s.attributes.add(key="http.response.status_code").value.int_value = 200
    return req.SerializeToString()


def generate(port: int, seconds: float, spans_per_request: int, connections: int, use_gzip: bool,
             transport: str = "http", rate: float = 0.0) -> None:
    bodies = [build_request(spans_per_request, seed) for seed in range(8)]
    if transport == "grpc":
        return generate_grpc(port, seconds, spans_per_request, connections, use_gzip, bodies)
    if use_gzip:
        bodies = [gzip.compress(b, 5) for b in bodies]
    headers = {"Content-Type": "application/x-protobuf"}
    if use_gzip:
        headers["Content-Encoding"] = "gzip"
    acked = [0] * connections
    retries = [0] * connections
    errors: list[str] = []
    deadline = time.monotonic() + seconds

    # Paced mode: each connection sends on a fixed schedule so the total is `rate` spans/s.
    interval = spans_per_request * connections / rate if rate > 0 else 0.0

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = k
        due = time.monotonic()
        while time.monotonic() < deadline:
            if interval:
                due += interval
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
            conn.request("POST", "/v1/traces", bodies[i % len(bodies)], headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                acked[k] += spans_per_request
                i += 1
            elif resp.status in (429, 503):
                retries[k] += 1  # same body again, after the delay the server asked for
                time.sleep(float(resp.getheader("Retry-After", "1")))
            else:
                errors.append(f"HTTP {resp.status}")
                return
        conn.close()

    _run_workers(worker, connections, acked, retries, errors, len(bodies[0]))


def _run_workers(worker: Callable[[int], None], connections: int, acked: list[int], retries: list[int],
                 errors: list[str], request_bytes: int) -> None:
    """Run one worker thread per connection to the end, then print the load's figures as JSON."""
    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"acked_spans": sum(acked), "retries": sum(retries), "errors": errors,
                      "elapsed_s": time.monotonic() - t0, "request_bytes": request_bytes}))


def generate_grpc(port: int, seconds: float, spans_per_request: int, connections: int, use_gzip: bool,
                  bodies: list[bytes]) -> None:
    """The same load over OTLP/gRPC: one channel per connection, pre-encoded request bytes."""
    import grpc

    acked = [0] * connections
    retries = [0] * connections
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    compression = grpc.Compression.Gzip if use_gzip else grpc.Compression.NoCompression

    def worker(k: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}", compression=compression) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            i = k
            while time.monotonic() < deadline:
                try:
                    export(bodies[i % len(bodies)], timeout=30)
                except grpc.RpcError as e:
                    if e.code() == grpc.StatusCode.UNAVAILABLE:
                        retries[k] += 1
                        time.sleep(1)
                        continue
                    errors.append(str(e.code()))
                    return
                acked[k] += spans_per_request
                i += 1

    _run_workers(worker, connections, acked, retries, errors, len(bodies[0]))


def _stdlib_server(receiver: OtlpReceiver) -> Any:
    """The receiver's ingest behind the standard library's threading HTTP server."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {k.lower().encode(): v.encode() for k, v in self.headers.items()}
            status, raw = receiver.http_response(self.path, b"POST", headers, body)
            self.wfile.write(raw)  # raw already holds the status line and headers

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--spans-per-request", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=2)
    ap.add_argument("--gzip", action="store_true")
    ap.add_argument("--buffer-spans", type=int, default=200_000)
    ap.add_argument("--write", choices=("json", "proto"), help="also write the capture file: OTLP/JSON lines "
                    "(converted) or framed protobuf with zstd (copied; capture's default)")
    ap.add_argument("--transport", choices=("http", "grpc"), default="http")
    ap.add_argument("--rate", type=float, default=0.0, help="pace the load at this many spans/s (HTTP; 0: as fast as possible)")
    ap.add_argument("--server", choices=("asyncio", "stdlib"), default="asyncio",
                    help="stdlib: the same ingest behind http.server.ThreadingHTTPServer, for comparison")
    ap.add_argument("--generate", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generate:
        generate(args.generate, args.seconds, args.spans_per_request, args.connections, args.gzip, args.transport,
                 args.rate)
        return 0

    out_dir = Path(tempfile.mkdtemp(prefix="bench-receiver-"))
    name = "bench.binpb.zst" if args.write == "proto" else "bench.otlp.jsonl.gz"  # proto: capture's default
    capture = Capture(out_dir / name, buffer_spans=args.buffer_spans).start()
    if args.transport == "grpc":
        receiver = OtlpReceiver(capture, ReceiverConfig(http_port=None, grpc_port=0)).start()
        port = receiver.grpc_port
    elif args.server == "stdlib":
        receiver = OtlpReceiver(capture, ReceiverConfig(http_port=None, grpc_port=None))
        stdlib = _stdlib_server(receiver)
        port = stdlib.server_address[1]
    else:
        receiver = OtlpReceiver(capture, ReceiverConfig(http_port=0, grpc_port=None)).start()
        port = receiver.http_port
    cmd = [sys.executable, __file__, "--generate", str(port), "--seconds", str(args.seconds),
           "--spans-per-request", str(args.spans_per_request), "--connections", str(args.connections)]
    if args.gzip:
        cmd.append("--gzip")
    cmd += ["--transport", args.transport, "--rate", str(args.rate)]
    cpu0 = time.process_time()
    t0 = time.monotonic()
    child = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 120)
    receiver.stop()
    if args.server == "stdlib" and args.transport == "http":
        stdlib.shutdown()
    wall = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    if child.returncode != 0:
        print(child.stderr, file=sys.stderr)
        return 1
    gen = json.loads(child.stdout.strip().splitlines()[-1])
    stats = capture.stats()

    result: dict[str, object] = {
        "server": "grpcio" if args.transport == "grpc" else args.server,
        "generator": gen,
        "received_spans": stats.spans,
        "spans_per_s": round(gen["acked_spans"] / gen["elapsed_s"]),
        "receiver_cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2),
        "told_to_retry": stats.refused_full,
    }
    capture._stop_spooling()  # flush the spool so the spans in it can be counted
    spooled = 0
    for payload in capture.requests(TRACES):
        req = ExportTraceServiceRequest.FromString(payload)
        spooled += sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    result["spooled_spans"] = spooled
    if args.write:
        t1 = time.monotonic()
        res = capture.close()
        result["write_s"] = round(time.monotonic() - t1, 2)
        result["write_spans_per_s"] = round(res.spans / (time.monotonic() - t1))
        result["write"] = args.write
        result["output_bytes"] = res.traces_path.stat().st_size
    else:
        capture.discard()
    lost = gen["acked_spans"] - spooled
    result["none_lost"] = lost == 0 and stats.spans == gen["acked_spans"] and not gen["errors"]
    print(json.dumps(result, indent=2))
    for p in out_dir.iterdir():
        p.unlink()
    out_dir.rmdir()
    return 0 if result["none_lost"] else 1


if __name__ == "__main__":
    sys.exit(main())
