"""The OTLP/JSON encoder writes exactly the text of the MessageToDict definition, for traces and metrics."""

from __future__ import annotations

import json
import math

import pytest
from google.protobuf import struct_pb2, type_pb2
from opentelemetry import metrics
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m
from opentelemetry.proto.trace.v1 import trace_pb2 as t
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from benchmarks.gen_traces import generate_traces
from collectors.otlp_json import reference_json_line, to_otlp_json_line


def _same(message) -> str:
    line = to_otlp_json_line(message)
    assert line == reference_json_line(message)
    return line


def _kv(key: str, **value) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def test_generated_fleet_traces_are_identical():
    gen = generate_traces(3000, seed=5)
    for pb in gen.protobuf_batches():
        _same(ExportTraceServiceRequest.FromString(pb))


def test_every_span_field_and_attribute_type():
    odd_values = [
        _kv("s", string_value="ünïcødé \"quoted\" \\ \n\t \x00 😀"), _kv("empty", string_value=""),
        _kv("b", bool_value=True), _kv("f", bool_value=False), _kv("i", int_value=-(2**63)),
        _kv("u", int_value=2**63 - 1), _kv("d", double_value=1.5), _kv("z", double_value=-0.0),
        _kv("big", double_value=1e300), _kv("nan", double_value=math.nan), _kv("inf", double_value=math.inf),
        _kv("ninf", double_value=-math.inf), _kv("bytes", bytes_value=b"\x00\xffid"),
        _kv("arr", array_value={"values": [AnyValue(string_value="a"), AnyValue(int_value=1), AnyValue()]}),
        _kv("kv", kvlist_value={"values": [_kv("x", int_value=2), KeyValue(key="unset")]}),
        KeyValue(key="no value"), KeyValue(value=AnyValue(string_value="no key")), KeyValue(),
    ]
    span = t.Span(
        trace_id=bytes(range(16)), span_id=bytes(range(8)), parent_span_id=b"\xff" * 8, trace_state="k=v",
        flags=0x301, name="GET /x", kind=t.Span.SPAN_KIND_SERVER, start_time_unix_nano=2**63 + 5,
        end_time_unix_nano=1, attributes=odd_values, dropped_attributes_count=3,
        events=[t.Span.Event(time_unix_nano=7, name="exception", attributes=odd_values[:3], dropped_attributes_count=1)],
        dropped_events_count=2,
        links=[t.Span.Link(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, trace_state="a=b", attributes=odd_values[3:5],
                           flags=1)],
        dropped_links_count=4, status=t.Status(code=t.Status.STATUS_CODE_ERROR, message="boom"))
    req = ExportTraceServiceRequest(resource_spans=[t.ResourceSpans(
        resource={"attributes": odd_values[:2], "dropped_attributes_count": 1},
        scope_spans=[t.ScopeSpans(scope={"name": "s", "version": "1", "attributes": odd_values[:1]},
                                  spans=[span, t.Span()], schema_url="https://x"),
                     t.ScopeSpans()],
        schema_url="https://y")])
    doc = json.loads(_same(req))
    out = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert out["traceId"] == bytes(range(16)).hex() and out["parentSpanId"] == "ff" * 8
    assert out["links"][0]["spanId"] == "02" * 8
    assert out["attributes"][12]["value"] == {"bytesValue": "AP9pZA=="}  # other bytes stay base64
    _same(ExportTraceServiceRequest())


def test_real_sdk_spans_are_identical():
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc", "pid": 42, "ratio": 0.5}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test", "1.0")
    with tracer.start_as_current_span("parent", kind=SpanKind.SERVER, attributes={"tags": ["a", "b"], "n": [1, 2]}) as p:
        with tracer.start_as_current_span("child", kind=SpanKind.CLIENT, links=[Link(p.get_span_context())]) as c:
            c.add_event("retry", {"attempt": 2, "ok": False})
            c.set_status(Status(StatusCode.ERROR, "failed"))
            try:
                raise ValueError("bad")
            except ValueError as e:
                c.record_exception(e)
    provider.shutdown()
    _same(encode_spans(exporter.get_finished_spans()))


def test_real_sdk_metrics_are_identical():
    reader = InMemoryMetricReader()
    views = [View(instrument_name="exp", aggregation=ExponentialBucketHistogramAggregation())]
    provider = MeterProvider(metric_readers=[reader], views=views,
                             resource=Resource.create({"service.name": "svc"}))
    meter = provider.get_meter("test", "1.0")
    meter.create_counter("requests", unit="1", description="requests").add(3, {"route": "/a"})
    meter.create_up_down_counter("inflight").add(-2)
    meter.create_histogram("latency", unit="s").record(0.25, {"route": "/a"})
    meter.create_histogram("exp").record(12.5)
    meter.create_observable_gauge("temp", callbacks=[lambda _: [metrics.Observation(21.5, {"room": "b"})]])
    meter.create_gauge("level").set(7)
    data = reader.get_metrics_data()
    provider.shutdown()
    doc = json.loads(_same(encode_metrics(data)))
    names = {x["name"] for rm in doc["resourceMetrics"] for sm in rm["scopeMetrics"] for x in sm["metrics"]}
    assert {"requests", "inflight", "latency", "exp", "temp", "level"} <= names


def test_every_metric_point_type():
    attrs = [_kv("k", string_value="v")]
    exemplar = m.Exemplar(filtered_attributes=attrs, time_unix_nano=3, as_double=0.5, span_id=b"\x01" * 8,
                          trace_id=b"\x02" * 16)
    metrics_ = [
        m.Metric(name="g", unit="1", description="d", metadata=attrs, gauge=m.Gauge(data_points=[
            m.NumberDataPoint(attributes=attrs, start_time_unix_nano=1, time_unix_nano=2, as_double=math.nan,
                              exemplars=[exemplar], flags=1),
            m.NumberDataPoint(as_int=-5), m.NumberDataPoint(as_double=0.0), m.NumberDataPoint()])),
        m.Metric(name="s", sum=m.Sum(aggregation_temporality=2, is_monotonic=True,
                                     data_points=[m.NumberDataPoint(as_int=2**62, exemplars=[m.Exemplar(as_int=1)])])),
        m.Metric(name="h", histogram=m.Histogram(aggregation_temporality=1, data_points=[
            m.HistogramDataPoint(count=3, sum=0.0, bucket_counts=[1, 0, 2], explicit_bounds=[0.1, math.inf],
                                 min=0.0, max=-math.inf),
            m.HistogramDataPoint(count=1)])),  # sum, min, max unset: absent, unlike set to 0
        m.Metric(name="e", exponential_histogram=m.ExponentialHistogram(data_points=[
            m.ExponentialHistogramDataPoint(count=4, sum=1.25, scale=-3, zero_count=1, zero_threshold=1e-9,
                                            positive={"offset": -2, "bucket_counts": [1, 2]},
                                            negative={"bucket_counts": [0]}, min=-1.0, max=2.0)])),
        m.Metric(name="q", summary=m.Summary(data_points=[m.SummaryDataPoint(
            count=2, sum=3.0, quantile_values=[m.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=1e-7)])])),
    ]
    req = ExportMetricsServiceRequest(resource_metrics=[m.ResourceMetrics(
        resource={"attributes": attrs}, scope_metrics=[m.ScopeMetrics(scope={"name": "x"}, metrics=metrics_)])])
    doc = json.loads(_same(req))
    point = doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0]
    assert point["asDouble"] == "NaN" and point["exemplars"][0]["spanId"] == "01" * 8


@pytest.mark.parametrize("message", [
    struct_pb2.Struct(fields={"a": struct_pb2.Value(number_value=1)}),  # a map field, a well-known type
    type_pb2.Type(name="t", source_context={"file_name": "f"}),  # a well-known type inside
])
def test_what_the_direct_writer_does_not_cover_falls_back(message):
    _same(message)
