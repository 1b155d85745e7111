"""analyzer.instrument.gc_pauses: CPython collections timed with gc.callbacks, exported through the
REAL OpenTelemetry SDK and prometheus_client, under the names the analyzer reads."""

from __future__ import annotations

import gc

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

from analyzer.instrument import gc_pauses
from collectors.promql import CATALOG


@pytest.fixture
def installed():
    reader = InMemoryMetricReader()
    registry = CollectorRegistry()
    rec = gc_pauses.install(MeterProvider(metric_readers=[reader]), registry)
    yield reader, registry, rec
    gc_pauses.uninstall()


def test_every_collection_is_timed_into_both_exporters(installed):
    """Three forced full collections: three pauses of generation 2 in each exporter."""
    reader, registry, rec = installed
    assert gc_pauses.install() is rec  # idempotent
    for _ in range(3):
        gc.collect()
    text = generate_latest(registry).decode()
    assert 'python_gc_pause_seconds_count{generation="2"} 3.0' in text
    data = reader.get_metrics_data()
    points = [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              if m.name == gc_pauses.OTEL_NAME for p in m.data.data_points]
    full = [p for p in points if p.attributes.get("cpython.gc.generation") == 2]
    assert full and full[0].count == 3 and full[0].sum > 0


def test_names_are_the_ones_the_analyzer_reads():
    needs = {n for spec in CATALOG for v in spec.variants for n in v.needs}
    assert {f"{gc_pauses.PROMETHEUS_NAME}_sum", f"{gc_pauses.PROMETHEUS_NAME}_count",
            f"{gc_pauses.PROMETHEUS_NAME}_bucket"} <= needs
    from collectors.otlp_metrics import GC_HISTOGRAMS
    assert gc_pauses.OTEL_NAME in GC_HISTOGRAMS


def test_uninstall_stops_timing(installed):
    gc_pauses.uninstall()
    assert not any(isinstance(cb, gc_pauses.GcPauseRecorder) for cb in gc.callbacks)


def test_metrics_reference_is_current():
    """docs/metrics.md lists what the catalog reads (python_gc_pause_seconds among them)."""
    from collectors.catalog_docs import PAGE, page

    assert PAGE.read_text(encoding="utf-8") == page(), "docs/metrics.md is stale: run `make docs`"
    assert f"`{gc_pauses.PROMETHEUS_NAME}_sum`" in page()
