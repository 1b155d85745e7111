"""CPython GC pauses, measurable: time every collection with `gc.callbacks` and export it.

CPython exposes no GC-duration metric (prometheus_client and OpenTelemetry count collections,
not time). One call in the service makes it measurable:

    from analyzer.instrument import gc_pauses
    gc_pauses.install()

It records each collection, from the callback's "start" to its "stop", into

- the OpenTelemetry histogram `cpython.gc.pause.duration` (unit s, attribute
  `cpython.gc.generation`), through the global MeterProvider or the one passed in; and
- when `prometheus_client` is importable, the histogram `python_gc_pause_seconds`
  (label `generation`) in its default registry, or the registry passed in.

Those are the names the analyzer reads as GC seconds per second, pause quantiles and
collections. Only the OpenTelemetry API (a dependency of the SDK the service already uses) is
imported; prometheus_client is optional.

The callback only appends to a bounded deque: recording into a metrics SDK from inside a
collection could try to take a lock the interrupted code holds. `drain()` moves the timings
into the instruments from ordinary code: it runs when either exporter collects (an
observable callback for OpenTelemetry, a custom collector for Prometheus), so each export
carries every pause up to that moment.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

OTEL_NAME = "cpython.gc.pause.duration"
PROMETHEUS_NAME = "python_gc_pause_seconds"
BUCKETS_S = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_MAX_PENDING = 100_000  # pauses kept between two exports; older ones are dropped, never blocking


class GcPauseRecorder:
    """A `gc.callbacks` entry timing each collection; `drain()` hands the timings to the sinks."""

    def __init__(self, sinks: Iterable[Callable[[float, int], None]] = ()) -> None:
        self.sinks = list(sinks)
        self._started = 0.0
        self._done: deque[tuple[float, int]] = deque(maxlen=_MAX_PENDING)
        self._lock = threading.Lock()  # serializes drain(), never taken in the callback

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self._done.append((time.perf_counter() - self._started, int(info.get("generation", -1))))
            self._started = 0.0

    def drain(self) -> None:
        with self._lock:
            while self._done:
                seconds, generation = self._done.popleft()
                for sink in self.sinks:
                    sink(seconds, generation)


_installed: GcPauseRecorder | None = None


def otel_sink(meter_provider: Any = None) -> tuple[Callable[[float, int], None], Any]:
    """(sink, meter) recording into the `cpython.gc.pause.duration` histogram."""
    from opentelemetry import metrics

    meter = (meter_provider or metrics.get_meter_provider()).get_meter("analyzer.instrument.gc_pauses")
    hist = meter.create_histogram(OTEL_NAME, unit="s", description="Duration of CPython GC collections (gc.callbacks)",
                                  explicit_bucket_boundaries_advisory=BUCKETS_S)
    return (lambda s, g: hist.record(s, {"cpython.gc.generation": g})), meter


def prometheus_sink(rec: GcPauseRecorder, registry: Any = None) -> Callable[[float, int], None] | None:
    """A sink into the `python_gc_pause_seconds` histogram, or None without prometheus_client.
    A collector registered just before it drains `rec` at every scrape."""
    try:
        from prometheus_client import REGISTRY, Histogram
    except ImportError:
        return None
    registry = registry if registry is not None else REGISTRY

    class _Drain:  # yields no metric; runs first because the registry collects in order
        def collect(self) -> Iterable[Any]:
            rec.drain()
            return ()

    registry.register(_Drain())
    hist = Histogram(PROMETHEUS_NAME, "Duration of CPython GC collections (gc.callbacks)", ["generation"],
                     buckets=BUCKETS_S, registry=registry)
    return lambda s, g: hist.labels(generation=str(g)).observe(s)


def install(meter_provider: Any = None, prometheus_registry: Any = None, otel: bool = True,
            prometheus: bool = True) -> GcPauseRecorder:
    """Start timing collections (idempotent: a second call returns the first recorder)."""
    global _installed
    if _installed is not None:
        return _installed
    rec = GcPauseRecorder()
    if otel:
        sink, meter = otel_sink(meter_provider)
        rec.sinks.append(sink)

        def observe(_options: Any) -> Iterable[Any]:
            rec.drain()  # observable callbacks run before the reader collects the histogram
            return ()

        meter.create_observable_gauge("cpython.gc.pause.drain", [observe])
    if prometheus:
        sink = prometheus_sink(rec, prometheus_registry)
        if sink is not None:
            rec.sinks.append(sink)
    gc.callbacks.append(rec)
    _installed = rec
    return rec


def uninstall() -> None:
    """Stop timing collections; pending timings are recorded first."""
    global _installed
    if _installed is None:
        return
    if _installed in gc.callbacks:
        gc.callbacks.remove(_installed)
    _installed.drain()
    _installed = None
