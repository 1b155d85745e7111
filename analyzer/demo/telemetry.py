"""OpenTelemetry set-up of one demo service process: traces and runtime metrics over OTLP/HTTP.

Runtime metrics are measured, never made up:
- `process.cpu.time` (s, `cpu.mode` user/system): the process's CPU time from `os.times()`,
  read by an ObservableCounter at each collection.
- `cpython.gc.pause.duration` (s, histogram, `cpython.gc.generation`): CPython exposes no GC
  timing, so every collection is timed between `gc.callbacks` "start" and "stop".
"""

from __future__ import annotations

import gc
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from analyzer.instrument import core_wait
from analyzer.instrument.gc_pauses import GcPauseRecorder, otel_sink

#: Short intervals: a demo phase lasts seconds, and rates need several points inside it.
SPAN_DELAY_MS = 500
METRIC_INTERVAL_MS = 500
SCOPE = "analyzer.demo"


def resource(service: str) -> Resource:
    """service.name plus the runtime attributes the analysis reads to pick the runtime."""
    return Resource.create({
        "service.name": service,
        "service.namespace": "profile-first-demo",
        "process.pid": os.getpid(),
        "process.runtime.name": platform.python_implementation().lower(),  # "cpython"
        "process.runtime.version": platform.python_version(),
    })


def _cpu_time() -> list[Observation]:
    t = os.times()
    return [Observation(t.user, {"cpu.mode": "user"}), Observation(t.system, {"cpu.mode": "system"})]


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    gc_pauses: GcPauseRecorder

    def shutdown(self) -> None:
        """Flush and stop both providers (the last metric collection is exported too)."""
        if self.gc_pauses in gc.callbacks:
            gc.callbacks.remove(self.gc_pauses)
        self.gc_pauses.drain()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def setup(service: str, endpoint: str) -> Telemetry:
    """Providers for `service` exporting to the OTLP/HTTP receiver at `endpoint` (http://host:port)."""
    res = resource(service)
    tp = TracerProvider(resource=res)
    tp.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", timeout=10),
        schedule_delay_millis=SPAN_DELAY_MS, max_export_batch_size=512, max_queue_size=20_000,
    ))
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics", timeout=10),
        export_interval_millis=METRIC_INTERVAL_MS,
    )
    mp = MeterProvider(resource=res, metric_readers=[reader])
    meter = mp.get_meter(SCOPE)
    pauses = GcPauseRecorder([otel_sink(mp)[0]])  # the helper services install (analyzer.instrument)

    def observe(_: CallbackOptions) -> Iterable[Observation]:
        # Callbacks run before the reader collects synchronous instruments (and without a lock
        # that recording takes), so pauses drained here are in this very export.
        pauses.drain()
        return _cpu_time()

    meter.create_observable_counter("process.cpu.time", [observe], unit="s",
                                    description="CPU seconds used by the process (os.times)")
    gc.callbacks.append(pauses)
    core_wait.otel_counter(core_wait.CoreWait(), mp)  # its own wait for a core, apart from its CPU
    return Telemetry(tp, mp, pauses)
