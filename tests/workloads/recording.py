"""Record workloads with the real OpenTelemetry SDK and write them in the Collector's file formats.

A workload is a function that takes a `Recorder` and runs requests against real code (SQLite,
redis, HTTP servers on loopback). Each simulated service gets its own `TracerProvider`, so spans
carry the `service.name` and `telemetry.sdk.*` resource attributes a real process would send.
Finished spans are encoded with the OTLP exporter's own encoder, so the files are exactly what a
Collector would receive and then write.
"""

from __future__ import annotations

import contextlib
import random
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import INVALID_SPAN_ID, INVALID_TRACE_ID, Span, SpanKind

from collectors.otlp_json import to_otlp_json_line

#: Spans per export request (one JSON line / one framed message). The Collector's batch
#: processor defaults to 8192; a smaller default makes traces straddle lines, as they do in
#: real files, so readers have to join them.
DEFAULT_BATCH = 512

#: Instrumentation scope of the spans workloads create by hand (entry and internal spans).
WORKLOAD_SCOPE = "tests.workloads"


class SeededIdGenerator(IdGenerator):
    """Trace and span ids drawn from a seeded `random.Random`: the same workload, run again with
    the same seed, gets the same ids. Anything keyed on trace ids (a stratified draw, a store's
    listing order) then sees the same recording every run instead of a new one."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def generate_span_id(self) -> int:
        span_id = self._rng.getrandbits(64)
        while span_id == INVALID_SPAN_ID:
            span_id = self._rng.getrandbits(64)
        return span_id

    def generate_trace_id(self) -> int:
        trace_id = self._rng.getrandbits(128)
        while trace_id == INVALID_TRACE_ID:
            trace_id = self._rng.getrandbits(128)
        return trace_id

    def is_trace_id_random(self) -> bool:
        return True  # uniformly random bits, as the SDK's own generator's


class Recorder:
    """One `TracerProvider` per service, each exporting to its own in-memory exporter.

    Exporters are not shared because shutting a provider down shuts its exporter down too.
    With `id_seed`, every provider draws its ids from one seeded generator (`SeededIdGenerator`),
    so a workload whose timings are given explicitly records the same spans, ids included, every
    run; without it ids are the SDK's usual random ones.
    """

    def __init__(self, id_seed: int | None = None) -> None:
        self._providers: dict[str, TracerProvider] = {}
        self._exporters: dict[str, InMemorySpanExporter] = {}
        self._ids: IdGenerator = SeededIdGenerator(id_seed) if id_seed is not None else RandomIdGenerator()
        self._discarded: set[int] = set()

    def provider(self, service: str) -> TracerProvider:
        """The tracer provider of `service`, created on first use."""
        if service not in self._providers:
            exporter = InMemorySpanExporter()
            # Resource.create merges in telemetry.sdk.{language,name,version} like a real process.
            provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}), id_generator=self._ids)
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            self._providers[service] = provider
            self._exporters[service] = exporter
        return self._providers[service]

    def spans(self) -> list[ReadableSpan]:
        """All finished spans of all services, in end-time order (the order a Collector gets them)."""
        spans = [s for e in self._exporters.values() for s in e.get_finished_spans()
                 if s.context.trace_id not in self._discarded]
        spans.sort(key=lambda s: s.end_time or 0)
        return spans

    def discard(self, trace_id: int) -> None:
        """Leave every span of `trace_id` out of `spans()` (a request done again: see `unstalled`)."""
        self._discarded.add(trace_id)

    def shutdown(self) -> None:
        """Shut every provider down (after reading `spans()`)."""
        for provider in self._providers.values():
            provider.shutdown()


class Workload(Protocol):
    """A workload: runs its requests, creating spans through `rec`'s providers."""

    def __call__(self, rec: Recorder, /, **kwargs: Any) -> None: ...


def record(workload: Workload | Callable[..., None], id_seed: int | None = None, **kwargs: Any) -> list[ReadableSpan]:
    """Run `workload(recorder, **kwargs)` and return every span it produced, in end-time order
    (ids from `id_seed` when given: see `Recorder`)."""
    rec = Recorder(id_seed)
    try:
        workload(rec, **kwargs)
        return rec.spans()
    finally:
        rec.shutdown()


class OffCpu:
    """Wall time this thread spent off the CPU (waiting to be scheduled, or blocked) inside
    `with clock:` blocks, summed."""

    def __init__(self) -> None:
        self.ns = 0

    def __enter__(self) -> OffCpu:
        self._cpu, self._wall = time.thread_time_ns(), time.perf_counter_ns()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ns += (time.perf_counter_ns() - self._wall) - (time.thread_time_ns() - self._cpu)


def unstalled(rec: Recorder, request: Callable[[OffCpu], Span], max_stall_ms: float = 2.0, attempts: int = 50) -> None:
    """Run `request` (it makes one request, timing the calls that matter inside `with clock:`,
    and returns its entry span) until those calls spent at most `max_stall_ms` off the CPU;
    earlier attempts' traces are discarded.

    For near-misses of sub-millisecond work (an indexed query, a cache hit on loopback): the
    rules' floors on tail latency (5-10 ms) are below the stalls a busy machine puts into a
    request (10-50 ms seen with two CPU hogs on two cores), and a stalled call measures the
    scheduler, not the workload. Only time off the CPU counts, so work that is itself slow (a
    scan, a big value to decode) is recorded as it is and the near-miss still fails on it; a
    server that keeps the calls waiting every time ends the workload with an error.
    """
    for _ in range(attempts):
        clock = OffCpu()
        span = request(clock)
        if clock.ns <= max_stall_ms * 1e6:
            return
        rec.discard(span.get_span_context().trace_id)
    raise RuntimeError(f"each of {attempts} attempts of a request spent over {max_stall_ms:g} ms off the CPU: "
                       "the machine is too busy to record it, or the request waits on a slow server")


@contextlib.contextmanager
def instrumented(instrumentor: BaseInstrumentor, **kwargs: Any) -> Iterator[None]:
    """Globally instrument a library for the duration of the block, then uninstrument it.

    Instrumentors are process-wide singletons; leaving one instrumented would make later
    workloads emit spans through an earlier workload's provider.
    """
    instrumentor.instrument(**kwargs)
    try:
        yield
    finally:
        instrumentor.uninstrument()


def batches(spans: Sequence[ReadableSpan], batch: int = DEFAULT_BATCH) -> Iterator[Sequence[ReadableSpan]]:
    """Consecutive slices of at most `batch` spans, as a batching exporter would send them."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    for i in range(0, len(spans), batch):
        yield spans[i : i + batch]


def encode(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """One ExportTraceServiceRequest, grouped by resource and scope by the exporter's encoder."""
    return encode_spans(spans)


def write_jsonl(spans: Sequence[ReadableSpan], path: Path, batch: int = DEFAULT_BATCH) -> Path:
    """Write the Collector file exporter's `json` format: one OTLP/JSON request per line."""
    with open(path, "w", encoding="utf-8") as f:
        for chunk in batches(spans, batch):
            f.write(to_otlp_json_line(encode(chunk)))
            f.write("\n")
    return path


def write_proto_framed(spans: Sequence[ReadableSpan], path: Path, batch: int = DEFAULT_BATCH) -> Path:
    """Write the Collector file exporter's `proto` format: each message after a 4-byte big-endian length."""
    with open(path, "wb") as f:
        for chunk in batches(spans, batch):
            data = encode(chunk).SerializeToString()
            f.write(struct.pack(">I", len(data)))
            f.write(data)
    return path


def write_proto_single(spans: Sequence[ReadableSpan], path: Path) -> Path:
    """Write all spans as one serialized ExportTraceServiceRequest (an OTLP/HTTP request body)."""
    path.write_bytes(encode(spans).SerializeToString())
    return path


@contextlib.contextmanager
def entry_span(provider: TracerProvider, route: str, path: str, method: str = "GET") -> Iterator[Span]:
    """The SERVER span of one incoming request, with stable HTTP server attributes.

    Downstream calls made inside the block become its children through the current context.
    """
    tracer = provider.get_tracer(WORKLOAD_SCOPE)
    attrs = {"http.request.method": method, "http.route": route, "url.path": path, "url.scheme": "http"}
    with tracer.start_as_current_span(f"{method} {route}", kind=SpanKind.SERVER, attributes=attrs) as span:
        yield span
        span.set_attribute("http.response.status_code", 200)


@contextlib.contextmanager
def internal_span(provider: TracerProvider, name: str) -> Iterator[Span]:
    """A small INTERNAL span for in-process work (serialization, formatting)."""
    with provider.get_tracer(WORKLOAD_SCOPE).start_as_current_span(name, kind=SpanKind.INTERNAL) as span:
        yield span


def leaked_instrumentations() -> list[str]:
    """Names of the global instrumentors workloads use that are still instrumented (should be empty)."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
    from opentelemetry.instrumentation.urllib import URLLibInstrumentor

    instrumentors = (RequestsInstrumentor, URLLibInstrumentor, RedisInstrumentor, SQLite3Instrumentor)
    return [cls.__name__ for cls in instrumentors if cls().is_instrumented_by_opentelemetry]
