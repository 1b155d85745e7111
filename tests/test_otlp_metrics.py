"""OTLP metrics → Signals, with metrics produced by the real SDK and sent by the real exporters.

Each test records known values, exports them through OTLPMetricExporter (HTTP or gRPC) into
the receiver and a Capture, then reads the written metrics file back with
`signals_from_file`. Expected rates use the data points' own timestamps, read from the file
with plain `json` (independently of the code under test).
"""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, ObservableCounter, UpDownCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from analyzer.model.signals import Signal
from collectors.capture import Capture, CaptureResult
from collectors.otlp_files import InputError
from collectors.otlp_metrics import read_metric_requests, signals_from_file
from collectors.receiver import OtlpReceiver, ReceiverConfig

DELTA = {c: AggregationTemporality.DELTA for c in (Counter, UpDownCounter, Histogram, ObservableCounter)}


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[OtlpReceiver, Capture]]:
    capture = Capture(tmp_path / "capture.otlp.jsonl.gz").start()
    with OtlpReceiver(capture, ReceiverConfig(http_port=0, grpc_port=0)) as r:
        yield r, capture


def _provider(exporter: Any, attrs: dict[str, str], views: list[View] = ()) -> tuple[MeterProvider, PeriodicExportingMetricReader]:
    # An hour-long interval: exports happen exactly when the test calls force_flush().
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    return MeterProvider(resource=Resource(attrs), metric_readers=[reader], views=list(views)), reader


def _points(result: CaptureResult, name: str) -> list[dict]:
    assert result.metrics_path is not None and result.metrics_path.name == "capture.metrics.otlp.jsonl.gz"
    out = []
    with gzip.open(result.metrics_path, "rt") as f:
        for line in f:
            for rm in json.loads(line)["resourceMetrics"]:
                for sm in rm["scopeMetrics"]:
                    for m in sm["metrics"]:
                        if m["name"] == name:
                            kind = next(k for k in ("sum", "gauge", "histogram", "exponentialHistogram") if k in m)
                            out += m[kind]["dataPoints"]
    return out


def _times(points: list[dict]) -> list[int]:
    return sorted({int(p["timeUnixNano"]) for p in points})


def test_cumulative_http_jvm_cpu_and_explicit_gc_histogram(receiver: tuple[OtlpReceiver, Capture]) -> None:
    r, capture = receiver
    cpu = [10.0]

    def cpu_time(_: CallbackOptions) -> list[Observation]:
        return [Observation(cpu[0], {"cpu.mode": "user"})]

    exporter = HttpMetricExporter(endpoint=f"{r.http_endpoint}/v1/metrics")
    provider, reader = _provider(
        exporter,
        {"service.name": "orders", "process.runtime.name": "OpenJDK Runtime Environment"},
        [View(instrument_name="jvm.gc.duration", aggregation=ExplicitBucketHistogramAggregation([0.01, 0.1, 1, 10]))],
    )
    meter = provider.get_meter("runtime")
    meter.create_observable_counter("jvm.cpu.time", [cpu_time], unit="s")
    meter.create_up_down_counter("jvm.cpu.count", unit="{cpu}").add(4)
    gc = meter.create_histogram("jvm.gc.duration", unit="s")
    young, old = {"jvm.gc.name": "G1 Young Generation"}, {"jvm.gc.name": "G1 Old Generation"}
    gc.record(0.001, young)
    gc.record(0.001, old)
    reader.force_flush()  # A
    for v in (0.005, 0.02, 0.02):
        gc.record(v, young)
    gc.record(0.3, old)
    cpu[0] = 12.5
    reader.force_flush()  # B
    gc.record(0.05, young)
    gc.record(0.01, old)
    cpu[0] = 13.0
    reader.force_flush()  # C
    provider.shutdown()  # exports once more (D), with no new recordings
    result = capture.close()

    ta, tb, tc = _times(_points(result, "jvm.cpu.time"))[:3]
    dt_b, dt_c = (tb - ta) / 1e9, (tc - tb) / 1e9
    sig = signals_from_file(result.metrics_path).for_service("orders")
    assert sig is not None and sig.runtime == "jvm"

    used = sig.get(Signal.CPU_CORES_USED)
    assert used is not None and used.source == "jvm.cpu.time"
    assert list(used.t[:2]) == pytest.approx([tb / 1e9, tc / 1e9])
    assert list(used.v[:2]) == pytest.approx([2.5 / dt_b, 0.5 / dt_c])
    avail = sig.get(Signal.CPU_CORES_AVAILABLE)
    assert avail is not None and set(avail.v) == {4.0}

    gcs = sig.get(Signal.GC_SECONDS_PER_SECOND)
    assert gcs is not None and gcs.source == "jvm.gc.duration"
    assert list(gcs.v[:2]) == pytest.approx([(0.005 + 0.02 + 0.02 + 0.3) / dt_b, 0.06 / dt_c])
    cycles = sig.get(Signal.GC_CYCLES_PER_SECOND)
    assert cycles is not None and list(cycles.v[:2]) == pytest.approx([4 / dt_b, 2 / dt_c])
    p50, p99, mx = sig.get(Signal.GC_PAUSE_P50), sig.get(Signal.GC_PAUSE_P99), sig.get(Signal.GC_PAUSE_MAX)
    assert p50 is not None and p99 is not None and mx is not None
    # Interval A→B holds 0.005, 0.02, 0.02, 0.3: the median lies in (0.01, 0.1], p99 in (0.1, 0.3].
    assert 0.01 < p50.v[0] <= 0.1 and 0.1 < p99.v[0] <= 0.3
    # A cumulative max bounds an interval only where it rose: old gen 0.001→0.3 in A→B, young
    # 0.02→0.05 in B→C (old gen's 0.01 in B→C leaves its max at 0.3, so it says nothing).
    assert list(mx.v[:2]) == pytest.approx([0.3, 0.05])
    assert Signal.GC_SECONDS_PER_SECOND not in sig.missing

    # The same requests in the Collector file exporter's framed protobuf format give the same signals.
    framed = result.metrics_path.with_name("framed.binpb")
    with open(framed, "wb") as f:
        for req in read_metric_requests(result.metrics_path):
            payload = req.SerializeToString()
            f.write(struct.pack(">I", len(payload)) + payload)
    again = signals_from_file(framed).for_service("orders")
    assert again is not None and again.series.keys() == sig.series.keys()
    for name, series in sig.series.items():
        assert np.allclose(again.series[name].v, series.v, equal_nan=True), name


def test_unusable_metrics_files_raise_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file|cannot open"):
        signals_from_file(tmp_path / "missing.jsonl")
    traces = tmp_path / "traces.jsonl"
    traces.write_text('{"resourceSpans": []}\n')
    with pytest.raises(InputError, match="traces, not metrics"):
        signals_from_file(traces)


def test_delta_grpc_cpython_cpu_and_exponential_gc_pause_histogram(receiver: tuple[OtlpReceiver, Capture]) -> None:
    r, capture = receiver
    exporter = GrpcMetricExporter(endpoint=r.grpc_endpoint, insecure=True, preferred_temporality=DELTA)
    provider, reader = _provider(
        exporter,
        {"service.name": "checkout", "process.runtime.name": "cpython", "telemetry.sdk.language": "python"},
        [View(instrument_name="cpython.gc.pause.duration", aggregation=ExponentialBucketHistogramAggregation())],
    )
    meter = provider.get_meter("runtime")
    cpu = meter.create_counter("process.cpu.time", unit="s")
    pauses = meter.create_histogram("cpython.gc.pause.duration", unit="s")
    collections = meter.create_counter("cpython.gc.collections", unit="{collection}")
    cpu.add(1.0, {"cpu.mode": "user"})
    cpu.add(0.5, {"cpu.mode": "system"})
    cpu.add(100.0, {"cpu.mode": "idle"})  # not CPU use: must not count
    for v in (0.002, 0.004, 0.004, 0.1):
        pauses.record(v, {"cpython.gc.generation": 2 if v > 0.05 else 0})
    collections.add(3, {"cpython.gc.generation": 0})
    reader.force_flush()
    cpu.add(0.2, {"cpu.mode": "user"})
    pauses.record(0.01, {"cpython.gc.generation": 1})
    reader.force_flush()
    provider.shutdown()
    result = capture.close()

    # Delta points: each attribute set's own (start, time) interval; rates add up per collection.
    expected: dict[int, float] = {}
    for p in _points(result, "process.cpu.time"):
        if p["attributes"][0]["value"]["stringValue"] != "idle":
            t, start = int(p["timeUnixNano"]), int(p["startTimeUnixNano"])
            expected[t] = expected.get(t, 0.0) + p["asDouble"] / ((t - start) / 1e9)
    assert len(expected) == 2
    hist = _points(result, "cpython.gc.pause.duration")
    dt1, dt2 = (
        (int(p["timeUnixNano"]) - int(p["startTimeUnixNano"])) / 1e9
        for p in sorted(hist, key=lambda p: int(p["timeUnixNano"]))
        if p["attributes"][0]["value"]["intValue"] in ("2", "1")
    )
    sig = signals_from_file(result.metrics_path).for_service("checkout")
    assert sig is not None and sig.runtime == "python"

    used = sig.get(Signal.CPU_CORES_USED)
    assert used is not None and used.source == "process.cpu.time"
    assert list(used.v) == pytest.approx([expected[t] for t in sorted(expected)])

    gcs = sig.get(Signal.GC_SECONDS_PER_SECOND)
    assert gcs is not None and gcs.source == "cpython.gc.pause.duration"
    # Two streams (generations 0 and 2) in the first interval: their rates add up.
    gen0 = next(p for p in hist if p["attributes"][0]["value"]["intValue"] == "0")
    dt0 = (int(gen0["timeUnixNano"]) - int(gen0["startTimeUnixNano"])) / 1e9
    assert list(gcs.v) == pytest.approx([0.01 / dt0 + 0.1 / dt1, 0.01 / dt2])
    p50, p99, mx = sig.get(Signal.GC_PAUSE_P50), sig.get(Signal.GC_PAUSE_P99), sig.get(Signal.GC_PAUSE_MAX)
    assert p50 is not None and p99 is not None and mx is not None
    # Exponential buckets are narrow (a few % wide at the SDK's chosen scale), and delta min/max are exact.
    assert p50.v[0] == pytest.approx(0.004, rel=0.05)
    assert p99.v[0] == pytest.approx(0.1, rel=0.05)
    assert list(mx.v) == pytest.approx([0.1, 0.01])
    assert p50.v[1] == pytest.approx(0.01)
    assert Signal.GC_SECONDS_PER_SECOND not in sig.missing


def test_cpython_gc_counts_only_say_pause_time_is_not_measurable(receiver: tuple[OtlpReceiver, Capture]) -> None:
    r, capture = receiver
    exporter = HttpMetricExporter(endpoint=f"{r.http_endpoint}/v1/metrics")
    provider, reader = _provider(exporter, {"service.name": "batch", "telemetry.sdk.language": "python"})
    collections = provider.get_meter("runtime").create_counter("cpython.gc.collections", unit="{collection}")
    collections.add(1, {"cpython.gc.generation": 0})
    reader.force_flush()
    collections.add(6, {"cpython.gc.generation": 0})
    collections.add(2, {"cpython.gc.generation": 2})
    reader.force_flush()
    provider.shutdown()
    result = capture.close()

    points = _points(result, "cpython.gc.collections")
    t1, t2 = _times(points)[:2]
    # Generation 2 first appears at t2. The SDK starts its stream when it first sees the attribute
    # set, microseconds before that collection, but its two collections happened since the previous
    # one: they are spread over the collection interval, not over those microseconds.
    gen2 = next(p for p in points if p["attributes"][0]["value"]["intValue"] == "2")
    assert (t2 - int(gen2["startTimeUnixNano"])) < (t2 - t1)
    sig = signals_from_file(result.metrics_path).for_service("batch")
    assert sig is not None and sig.runtime == "python"
    cycles = sig.get(Signal.GC_CYCLES_PER_SECOND)
    assert cycles is not None and cycles.source == "cpython.gc.collections"
    assert cycles.v[0] == pytest.approx(8 / ((t2 - t1) / 1e9))
    assert not sig.has(Signal.GC_SECONDS_PER_SECOND)
    missing = sig.missing[Signal.GC_SECONDS_PER_SECOND]
    assert "not measurable" in missing.reason and "cpython.gc.pause.duration" in missing.enable
    assert Signal.CPU_CORES_USED in sig.missing


def test_cumulative_exponential_histogram_survives_a_scale_change(receiver: tuple[OtlpReceiver, Capture]) -> None:
    # max_size=20 forces the SDK to lower the scale when a 5 s pause joins 10-20 ms ones, so
    # consecutive cumulative points have different scales and must be downscaled to diff.
    r, capture = receiver
    exporter = HttpMetricExporter(endpoint=f"{r.http_endpoint}/v1/metrics")
    provider, reader = _provider(
        exporter,
        {"service.name": "api", "telemetry.sdk.language": "nodejs"},
        [View(instrument_name="v8js.gc.duration", aggregation=ExponentialBucketHistogramAggregation(max_size=20))],
    )
    gc = provider.get_meter("runtime").create_histogram("v8js.gc.duration", unit="s")
    gc.record(0.01, {"v8js.gc.type": "minor"})
    reader.force_flush()  # A
    gc.record(0.02, {"v8js.gc.type": "minor"})
    gc.record(0.02, {"v8js.gc.type": "minor"})
    reader.force_flush()  # B
    gc.record(5.0, {"v8js.gc.type": "minor"})
    reader.force_flush()  # C
    provider.shutdown()
    result = capture.close()

    points = sorted(_points(result, "v8js.gc.duration"), key=lambda p: int(p["timeUnixNano"]))
    assert points[2]["scale"] < points[1]["scale"]  # the SDK did downscale between B and C
    ta, tb, tc = (int(p["timeUnixNano"]) for p in points[:3])
    sig = signals_from_file(result.metrics_path).for_service("api")
    assert sig is not None and sig.runtime == "node"
    gcs, p50, mx = sig.get(Signal.GC_SECONDS_PER_SECOND), sig.get(Signal.GC_PAUSE_P50), sig.get(Signal.GC_PAUSE_MAX)
    assert gcs is not None and p50 is not None and mx is not None
    assert list(gcs.v[:2]) == pytest.approx([0.04 / ((tb - ta) / 1e9), 5.0 / ((tc - tb) / 1e9)])
    assert p50.v[0] == pytest.approx(0.02, rel=0.05)
    base = 2 ** (2 ** -points[2]["scale"])
    assert 5.0 / base <= p50.v[1] <= 5.0  # within the one (coarser) bucket holding 5.0
    assert list(mx.v[:2]) == pytest.approx([0.02, 5.0])


def test_a_gc_pause_stream_born_at_a_collection_is_spread_over_the_interval(receiver: tuple[OtlpReceiver, Capture]) -> None:
    """The demo's GC recorder times pauses in gc.callbacks and records them just before each export.
    A generation's first pause therefore opens its stream microseconds before the collection; read
    over those microseconds, 1 ms of GC became 10 s of GC per second."""
    import time

    r, capture = receiver
    exporter = HttpMetricExporter(endpoint=f"{r.http_endpoint}/v1/metrics")
    provider, reader = _provider(exporter, {"service.name": "feed", "telemetry.sdk.language": "python"})
    pauses = provider.get_meter("runtime").create_histogram("cpython.gc.pause.duration", unit="s")
    pauses.record(0.002, {"cpython.gc.generation": 0})
    reader.force_flush()
    time.sleep(0.3)
    pauses.record(0.001, {"cpython.gc.generation": 1})  # a new attribute set, recorded at collection
    reader.force_flush()
    provider.shutdown()
    result = capture.close()
    t1, t2 = _times(_points(result, "cpython.gc.pause.duration"))[:2]
    sig = signals_from_file(result.metrics_path).for_service("feed")
    gc = sig.get(Signal.GC_SECONDS_PER_SECOND)
    assert gc is not None
    at_t2 = gc.v[np.searchsorted(gc.t, t2 / 1e9 - 1e-6)]
    assert at_t2 == pytest.approx(0.001 / ((t2 - t1) / 1e9), rel=1e-6)
    assert gc.v.max() < 0.01


def test_window_means_weigh_each_rate_by_the_time_it_covers() -> None:
    """Points every 0.5 s at 0.1 s/s of GC, and a shutdown export 5 ms after the last one at 1 s/s
    (5 ms of GC in 5 ms): over the window that sliver is 1% of the time, not 1 point in 6."""
    from heuristics.runtime import time_weighted_mean

    t = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.005])
    v = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 1.0])
    expected = (0.1 * 2.5 + 1.0 * 0.005) / 2.505  # the first point covers a median interval too
    assert time_weighted_mean(t, v) == pytest.approx(expected)
    assert time_weighted_mean(t, v) < 0.11
