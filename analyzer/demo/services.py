"""The demo's services, one per process: `python -m analyzer.demo.services NAME --endpoint URL ...`.

Each is a real HTTP server on 127.0.0.1 that makes one SERVER span per request (joining the
caller's trace when it sends `traceparent`) and carries exactly one cause:

- orders:  N+1 queries against an unindexed SQLite table (sqlite3 instrumentation).
- gateway: three slow downstream services called one after another (requests instrumentation).
- inventory / pricing / shipping: the gateway's downstreams, each sleeping a few tens of ms.
- profile: cache-aside (memcached protocol) whose 1 s TTL is shorter than the time between two
  requests for the same profile, so nearly every request misses and pays a SQLite aggregate.
- render:  pure-Python escape-time fractal, CPU-bound; profiles its own CPU (`--profile-out`).
- feed:    a large live heap, plus a cyclic object graph per request kept for pagination: the
  graphs survive into the old generation and trigger long full (gen-2) collections.

The process prints `READY <port>` once it serves, and stops (flushing its telemetry) on
SIGTERM, when its parent goes away, or after `--max-seconds`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from analyzer.demo import data
from analyzer.demo.sampler import CpuSampler
from analyzer.demo.telemetry import SCOPE, Telemetry, setup

Handler = Callable[[str, dict[str, str]], bytes]  # (path, query) -> response body


@dataclass(frozen=True)
class Route:
    template: str  # "/profile/{id}": the span name and http.route
    prefix: str  # "/profile/": what a request path starts with
    handler: Handler


# -- HTTP plumbing ------------------------------------------------------------------------------


def serve(tp: TracerProvider, routes: list[Route], port: int = 0) -> ThreadingHTTPServer:
    """Start a threaded HTTP/1.1 server on 127.0.0.1 whose requests are SERVER spans of `tp`."""
    tracer = tp.get_tracer(SCOPE)
    bound_port = 0  # set once listening; read by requests

    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the load generator reuses its connection
        # Headers and body go out in two writes; with Nagle on, the second waits for the
        # client's delayed ACK (~40 ms), a fake network delay.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            parts = urlsplit(self.path)
            route = next((r for r in routes if parts.path == r.prefix or parts.path.startswith(r.prefix)), None)
            if route is None:
                self._reply(404, b"not found")
                return
            # Header names are case-insensitive, the propagator's getter is not.
            ctx = propagate.extract({k.lower(): v for k, v in self.headers.items()})
            attrs: dict[str, str | int] = {
                "http.request.method": "GET", "http.route": route.template, "url.path": parts.path,
                "url.scheme": "http", "server.address": "127.0.0.1", "server.port": bound_port}
            with tracer.start_as_current_span(f"GET {route.template}", context=ctx, kind=SpanKind.SERVER,
                                              attributes=attrs) as span:
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                try:
                    body, status = route.handler(parts.path, query), 200
                except Exception as e:  # a demo bug must show up as an error span, not a hang
                    span.record_exception(e)
                    span.set_status(Status(StatusCode.ERROR, str(e)))
                    body, status = f"error: {e}".encode(), 500
                span.set_attribute("http.response.status_code", status)
                self._reply(status, body)

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep stderr quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), RequestHandler)
    server.daemon_threads = True
    bound_port = int(server.server_address[1])
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server


def _last_segment(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


# -- orders: N+1 queries ------------------------------------------------------------------------


def orders_routes(tel: Telemetry, args: argparse.Namespace) -> list[Route]:
    from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

    local = threading.local()

    def conn() -> sqlite3.Connection:
        if not hasattr(local, "conn"):  # sqlite3 connections stay in the thread that made them
            local.conn = SQLite3Instrumentor().instrument_connection(
                sqlite3.connect(args.db), tracer_provider=tel.tracer_provider)
        return local.conn

    def query(sql: str, params: tuple = ()) -> list[tuple]:
        # Through a cursor: the instrumentation times `Cursor.execute`; `Connection.execute`
        # is a C shortcut it never sees.
        cur = conn().cursor()
        try:
            cur.execute(sql, params)
            return cur.fetchall()
        finally:
            cur.close()

    def list_orders(path: str, q: dict[str, str]) -> bytes:
        after = int(q.get("after", "0"))
        orders = query(data.ORDERS_PAGE, (after, data.ORDERS_PER_PAGE))
        out = []
        for order_id, customer, status in orders:  # the N+1: one item query per order
            items = query(data.ITEMS_BY_ORDER, (order_id,))
            out.append({"id": order_id, "customer": customer, "status": status, "items": len(items)})
        return json.dumps(out).encode()

    return [Route("/orders", "/orders", list_orders)]


# -- gateway and its downstreams: a sequential call chain ---------------------------------------


def gateway_routes(tel: Telemetry, args: argparse.Namespace) -> list[Route]:
    import requests
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    # Process-wide, and this process makes no other requests calls (the OTLP exporter's
    # own calls run with instrumentation suppressed by the SDK).
    RequestsInstrumentor().instrument(tracer_provider=tel.tracer_provider)
    local = threading.local()
    downstreams: list[str] = args.downstream

    def checkout(path: str, q: dict[str, str]) -> bytes:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        parts = {}
        for url in downstreams:  # independent calls, awaited one after another
            r = local.session.get(url, timeout=10)
            r.raise_for_status()
            parts[urlsplit(url).path] = r.json()
        return json.dumps(parts).encode()

    return [Route("/checkout", "/checkout", checkout)]


def downstream_routes(tel: Telemetry, args: argparse.Namespace) -> list[Route]:
    lo, hi = (float(x) for x in args.latency_ms.split(","))
    rng = random.Random(args.seed)
    lock = threading.Lock()

    def work(path: str, q: dict[str, str]) -> bytes:
        with lock:
            delay = rng.uniform(lo, hi) / 1000
        time.sleep(delay)  # stands in for this service's own (slow) work
        return json.dumps({"ok": True, "took_ms": round(delay * 1000, 1)}).encode()

    template = args.route
    return [Route(template, template.split("{", 1)[0], work)]


# -- profile: a cache that (almost) never hits --------------------------------------------------

#: Shorter than the time between two requests for the same profile (500 profiles at ~20-40
#: requests/s): entries expire before anyone reads them again.
PROFILE_TTL_S = 1


def profile_routes(tel: Telemetry, args: argparse.Namespace) -> list[Route]:
    from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

    from analyzer.demo.cache import CacheClient

    host, port = args.cache.rsplit(":", 1)
    tracer = tel.tracer_provider.get_tracer(SCOPE)
    local = threading.local()

    def clients() -> tuple[CacheClient, sqlite3.Connection]:
        if not hasattr(local, "cache"):
            local.cache = CacheClient(host, int(port), tracer)
            local.conn = SQLite3Instrumentor().instrument_connection(
                sqlite3.connect(args.db), tracer_provider=tel.tracer_provider)
        return local.cache, local.conn

    def profile(path: str, q: dict[str, str]) -> bytes:
        customer = int(_last_segment(path))
        cache, conn = clients()
        key = f"profile:{customer}"
        cached = cache.get(key)
        if cached is not None:
            return cached
        cur = conn.cursor()
        try:
            cur.execute(data.CUSTOMER_TOTALS, (customer,))
            count, total = cur.fetchone()
        finally:
            cur.close()
        body = json.dumps({"id": customer, "orders": count, "total_cents": total or 0}).encode()
        cache.set(key, body, PROFILE_TTL_S)
        return body

    return [Route("/profile/{id}", "/profile/", profile)]


# -- render: CPU-bound ----------------------------------------------------------------------------


def mandelbrot(width: int, height: int, max_iter: int) -> int:
    """Pure-Python escape-time loop; returns the iteration sum so the work cannot be skipped."""
    total = 0
    for y in range(height):
        ci = -1.2 + 2.4 * y / height
        for x in range(width):
            cr = -2.0 + 3.0 * x / width
            zr = zi = 0.0
            n = 0
            while n < max_iter and zr * zr + zi * zi < 4.0:
                zr, zi = zr * zr - zi * zi + cr, 2.0 * zr * zi + ci
                n += 1
            total += n
    return total


def render_routes(tel: Telemetry, args: argparse.Namespace) -> list[Route]:
    def render(path: str, q: dict[str, str]) -> bytes:
        tile = int(_last_segment(path)) % 7
        # Tiles differ a little in size, so latency varies with the work done.
        return json.dumps({"tile": tile, "iterations": mandelbrot(160 + 10 * tile, 90, 80)}).encode()

    return [Route("/render/{tile}", "/render/", render)]


# -- feed: GC pauses ------------------------------------------------------------------------------


class _Node:
    __slots__ = ("parent", "children", "payload")

    def __init__(self, parent: _Node | None) -> None:
        self.parent = parent
        self.children: list[_Node] = []
        self.payload: object = None


#: The live index: ~250k GC-tracked objects that every full collection has to traverse.
INDEX_SHARDS, INDEX_SHARD_SIZE = 5_000, 50
#: Nodes in each request's feed graph, and how many recent feeds are kept for pagination.
FEED_NODES, FEEDS_KEPT = 6_000, 4


def feed_routes(tel: Telemetry, args: argparse.Namespace) -> list[Route]:
    index = [[_Node(None) for _ in range(INDEX_SHARD_SIZE)] for _ in range(INDEX_SHARDS)]
    recent: deque[_Node] = deque(maxlen=FEEDS_KEPT)
    lock = threading.Lock()

    def feed(path: str, q: dict[str, str]) -> bytes:
        user = int(_last_segment(path))
        shard = index[user % INDEX_SHARDS]
        root = _Node(None)
        level = [root]
        for i in range(FEED_NODES):
            # Each node points to its parent and the parent to it: a reference cycle that only
            # the cyclic GC can free, and kept alive long enough to reach the old generation.
            parent = level[i % len(level)]
            node = _Node(parent)
            parent.children.append(node)
            node.payload = [shard[i % INDEX_SHARD_SIZE], i]
            level.append(node)
        with lock:
            recent.append(root)
        return json.dumps({"user": user, "items": FEED_NODES}).encode()

    return [Route("/feed/{user}", "/feed/", feed)]


SERVICES: dict[str, Callable[[Telemetry, argparse.Namespace], list[Route]]] = {
    "orders": orders_routes,
    "gateway": gateway_routes,
    "downstream": downstream_routes,
    "profile": profile_routes,
    "render": render_routes,
    "feed": feed_routes,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="One profile-first demo service (started by `profile-first demo`).")
    p.add_argument("kind", choices=sorted(SERVICES))
    p.add_argument("--endpoint", required=True, help="OTLP/HTTP base URL, e.g. http://127.0.0.1:4318")
    p.add_argument("--name", help="service.name (default: the kind)")
    p.add_argument("--db", type=Path, help="SQLite database (orders, profile)")
    p.add_argument("--cache", help="host:port of the cache server (profile)")
    p.add_argument("--downstream", action="append", default=[], help="URL the gateway calls, in order (repeat)")
    p.add_argument("--route", default="/", help="route template (downstream)")
    p.add_argument("--latency-ms", default="20,40", help="lo,hi sleep per request (downstream)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=600.0, help="exit after this long, whatever happens")
    p.add_argument("--profile-out", type=Path, help="write a CPU profile of this process here (speedscope JSON)")
    args = p.parse_args(argv)
    sampler = CpuSampler().start() if args.profile_out else None

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tel = setup(args.name or args.kind, args.endpoint)
    try:
        server = serve(tel.tracer_provider, SERVICES[args.kind](tel, args))
        print(f"READY {server.server_address[1]}", flush=True)
        parent = os.getppid()
        deadline = time.monotonic() + args.max_seconds
        # Exit with the demo: on SIGTERM, when it died (re-parented), or when overrunning.
        while not stop.wait(0.25):
            if os.getppid() != parent or time.monotonic() > deadline:
                break
        server.shutdown()
    finally:
        if sampler is not None:
            sampler.stop(args.profile_out)
        tel.shutdown()  # exports what is still buffered: the demo waits for it
    return 0


if __name__ == "__main__":
    sys.exit(main())
