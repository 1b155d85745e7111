"""The report's chart data (`timeseries` per service, `sample_traces` per hot spot).

Spans come from the real OpenTelemetry SDK with explicit start and end times, so two hours of
requests are recorded in a moment: the first hour's requests take 20 ms, the second hour's
80 ms. A person reading the latency chart should see the step at the hour.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.trace import SpanKind

from analyzer.config import Config
from analyzer.pipeline import Inputs, analyze
from analyzer.report_schema import validate_report
from analyzer.model.signals import Series, ServiceSignals, Signal, Signals
from analyzer.model.arrays import weighted_quantile
from analyzer.timeseries import MAX_POINTS, QUANTILES, _binned_quantiles, bin_step
from collectors.otlp_traces import load_traces
from tests.workloads.recording import Recorder, record, write_jsonl

T0 = 1_794_999_600  # unix seconds, on an hour boundary
HOUR = 3600


def two_hours(rec: Recorder) -> None:
    """`checkout` serves GET /cart every 30 s for two hours: 20 ms for an hour, then 80 ms."""
    tracer = rec.provider("checkout").get_tracer("tests.workloads")
    for i in range(240):
        start = T0 + i * 30
        ms = 20 if start < T0 + HOUR else 80
        span = tracer.start_span("GET /cart", kind=SpanKind.SERVER, start_time=start * 10**9)
        span.end(end_time=start * 10**9 + ms * 10**6)


@pytest.fixture(scope="module")
def two_hours_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("timeseries") / "two-hours.otlp.jsonl"
    write_jsonl(record(two_hours), path)
    return path


def _report(path: Path, signals: Signals | None = None, start: float | None = None, end: float | None = None) -> dict:
    loaded = load_traces([str(path)])
    report = analyze(Inputs(loaded.table, loaded.sources, loaded.repairs, signals), Config(),
                     start_ns=None if start is None else int(start * 1e9), end_ns=None if end is None else int(end * 1e9))
    validate_report(report)
    return report


def test_latency_chart_shows_the_step_at_the_hour(two_hours_jsonl: Path) -> None:
    ts = _report(two_hours_jsonl)["services"][0]["timeseries"]
    assert ts["step_s"] == 30  # 2 h / 300 points = 24 s -> the next round step
    assert len(ts["t"]) <= MAX_POINTS
    assert all(len(ts[k]) == len(ts["t"]) for k in ("requests", "p50_ms", "p95_ms", "p99_ms"))
    assert sum(ts["requests"]) == 240
    t = np.array(ts["t"])
    first = [v for tt, v in zip(t, ts["p50_ms"]) if tt < T0 + HOUR and v is not None]
    second = [v for tt, v in zip(t, ts["p99_ms"]) if tt >= T0 + HOUR and v is not None]
    assert len(first) == 120 and len(second) == 120
    assert max(first) == pytest.approx(20, abs=0.01)
    assert min(second) == pytest.approx(80, abs=0.01)


def test_a_week_window_is_hourly_and_empty_bins_are_null(two_hours_jsonl: Path) -> None:
    end = T0 + 4 * 86400
    ts = _report(two_hours_jsonl, start=end - 7 * 86400, end=end)["services"][0]["timeseries"]
    assert ts["step_s"] == 3600 and len(ts["t"]) == 168
    filled = [i for i, n in enumerate(ts["requests"]) if n]
    assert sum(ts["requests"]) == 240 and len(filled) == 2  # the two hours of traffic
    assert all(ts["p50_ms"][i] is None for i in range(168) if i not in filled)
    assert json.loads(json.dumps(ts)) == ts  # null, never NaN, in the JSON


def test_runtime_signals_are_bin_means_with_their_source(two_hours_jsonl: Path) -> None:
    """GC time sampled every 15 s: 0.1 s/s in the first hour, 0.3 s/s in the second; 2 cores used."""
    t = np.arange(T0, T0 + 2 * HOUR, 15, dtype=np.float64)
    svc = ServiceSignals("checkout", "jvm")
    svc.series[Signal.GC_SECONDS_PER_SECOND] = Series(t, np.where(t < T0 + HOUR, 0.1, 0.3), "rate(gc[5m])", "s/s")
    svc.series[Signal.CPU_CORES_USED] = Series(t, np.full(t.shape, 2.0), "rate(cpu[5m])", "cores")
    ts = _report(two_hours_jsonl, Signals(services={"checkout": svc}))["services"][0]["timeseries"]
    gc = ts["gc_seconds_per_second"]
    assert len(gc) == len(ts["t"])
    assert gc[0] == pytest.approx(0.1) and gc[-1] == pytest.approx(0.3)
    assert set(ts["cpu_cores_used"]) == {2.0}
    assert ts["sources"] == {"gc_seconds_per_second": "rate(gc[5m])", "cpu_cores_used": "rate(cpu[5m])"}
    assert "cpu_cores_available" not in ts


def test_sample_traces_are_the_median_p99_and_slowest_requests(two_hours_jsonl: Path) -> None:
    report = _report(two_hours_jsonl)
    samples = report["services"][0]["hotspots"][0]["sample_traces"]
    by_label = {s["label"]: s for s in samples}
    # Half the requests take 20 ms and half 80 ms: the median request is one of either, p99 and
    # the slowest are 80 ms requests (listed once when they are the same trace).
    assert by_label["p50"]["duration_ms"] in (20.0, 80.0)
    assert by_label["p99"]["duration_ms"] == 80.0
    assert len({s["trace_id"] for s in samples}) == len(samples)
    durations = {}  # trace id -> ms, read from the file with plain json
    for line in two_hours_jsonl.read_text().splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for sp in ss["spans"]:
                    durations[sp["traceId"]] = (int(sp["endTimeUnixNano"]) - int(sp["startTimeUnixNano"])) / 1e6
    assert all(durations[s["trace_id"]] == s["duration_ms"] for s in samples)


@pytest.mark.parametrize(("span_s", "step"), [(60, 1), (301, 2), (7200, 30), (86400, 300), (7 * 86400, 3600),
                                              (90 * 86400, 43200), (400 * 86400, 172800)])
def test_bin_step_is_round_and_keeps_points_bounded(span_s: float, step: int) -> None:
    assert bin_step(span_s) == step
    assert span_s / step <= MAX_POINTS - 1  # bins start at multiples of the step: one more may be cut


@pytest.mark.parametrize("weighted", [False, True])
def test_bin_quantiles_follow_the_hot_spots_rule(weighted: bool) -> None:
    """Per bin, the chart's percentiles equal `weighted_quantile` (what the hot spot table reports)
    of that bin's requests, with and without sample weights."""
    rng = np.random.default_rng(7)
    bins = rng.integers(0, 40, 5000)
    bins[bins == 3] = 4  # an empty bin
    values = rng.exponential(50.0, bins.size)
    weights = rng.uniform(1.0, 20.0, bins.size) if weighted else np.ones(bins.size)
    weights[bins == 5] = 0.5  # a bin whose requests stand for less than one request in all
    counts, quantiles = _binned_quantiles(bins, values, weights, 40)
    for k in range(40):
        sel = bins == k
        assert counts[k] == pytest.approx(weights[sel].sum())
        for q, res in zip(QUANTILES.values(), quantiles):
            if not sel.any():
                assert np.isnan(res[k])
            else:
                want = weighted_quantile(values[sel], q, weights[sel] if weighted or k == 5 else None)
                assert res[k] == pytest.approx(want, rel=1e-9), (k, q)
