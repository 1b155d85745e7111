"""Network workloads: a gateway calling real downstream HTTP services on 127.0.0.1.

Client spans come from opentelemetry-instrumentation-requests / -urllib; each downstream is a
`DownstreamService` with its own TracerProvider, so one trace spans several services.
"""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import requests
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.urllib import URLLibInstrumentor

from tests.workloads.recording import Recorder, entry_span, instrumented
from tests.workloads.servers import DownstreamService

#: (service, route, path, latency range in ms) of the checkout's three downstream calls.
CHECKOUT_CALLS: tuple[tuple[str, str, str, tuple[float, float]], ...] = (
    ("inventory", "/stock/{sku}", "/stock/SKU-00042", (30.0, 50.0)),
    ("pricing", "/quote", "/quote?cart=7", (50.0, 80.0)),
    ("shipping", "/rates", "/rates?zip=10115", (35.0, 60.0)),
)


def _start_checkout_services(rec: Recorder, stack: ExitStack, seed: int) -> list[tuple[DownstreamService, str]]:
    out = []
    for i, (service, route, path, latency) in enumerate(CHECKOUT_CALLS):
        svc = stack.enter_context(DownstreamService(rec.provider(service), route, latency, seed=seed + i))
        out.append((svc, path))
    return out


def gateway_sequential(rec: Recorder, *, requests_n: int = 10, seed: int = 3) -> None:
    """`gateway` GET /checkout calls inventory, pricing and shipping one after another (~150 ms total).

    Cause a human would name: a sequential call chain (network); the three calls are independent
    and could run in parallel, so the request waits for the sum instead of the max.
    """
    gw = rec.provider("gateway")
    with ExitStack() as stack:
        services = _start_checkout_services(rec, stack, seed)
        stack.enter_context(instrumented(RequestsInstrumentor(), tracer_provider=gw))
        session = stack.enter_context(requests.Session())
        for _ in range(requests_n):
            with entry_span(gw, "/checkout", "/checkout"):
                for svc, path in services:
                    session.get(svc.url + path, timeout=5).raise_for_status()


def gateway_parallel(rec: Recorder, *, requests_n: int = 10, seed: int = 3) -> None:
    """Near-miss of `gateway_sequential`: the same three calls, issued concurrently from a thread pool.

    The trace context is attached in each worker thread, so the CLIENT spans are still children of
    the entry span. Cause a human would name: none; the request takes about the slowest call.
    """
    gw = rec.provider("gateway")
    with ExitStack() as stack:
        services = _start_checkout_services(rec, stack, seed)
        stack.enter_context(instrumented(RequestsInstrumentor(), tracer_provider=gw))
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=len(services)))

        def call(ctx: otel_context.Context, url: str) -> None:
            # Thread pools do not carry contextvars over; attach the caller's context explicitly.
            token = otel_context.attach(ctx)
            try:
                requests.get(url, timeout=5).raise_for_status()
            finally:
                otel_context.detach(token)

        for _ in range(requests_n):
            with entry_span(gw, "/checkout", "/checkout"):
                ctx = otel_context.get_current()
                futures = [pool.submit(call, ctx, svc.url + path) for svc, path in services]
                for f in futures:
                    f.result()


def chatty_calls(rec: Recorder, *, requests_n: int = 10, calls: int = 30, seed: int = 5) -> None:
    """`catalog` GET /catalog/page makes `calls` small calls (1-3 ms each) to `inventory` via urllib.

    Cause a human would name: chatty calls (network); one batch endpoint would replace 30
    round trips.
    """
    cat = rec.provider("catalog")
    with ExitStack() as stack:
        inv = stack.enter_context(DownstreamService(rec.provider("inventory"), "/stock/{sku}", (1.0, 3.0), seed=seed))
        stack.enter_context(instrumented(URLLibInstrumentor(), tracer_provider=cat))
        for r in range(requests_n):
            with entry_span(cat, "/catalog/page", f"/catalog/page?n={r}"):
                for c in range(calls):
                    with urllib.request.urlopen(f"{inv.url}/stock/SKU-{(r * calls + c) % 10_000:05d}", timeout=5) as resp:
                        resp.read()
