"""Every generation of a runtime's GC metrics, over one 7-day window: a REAL Prometheus loaded with
`promtool tsdb create-blocks-from openmetrics`, traces from the REAL OpenTelemetry SDK spread over
the week, analyzed by analyzer.pipeline.

The expected numbers are worked out from the series written in `build`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from analyzer.config import Config
from analyzer.pipeline import Inputs, analyze
from analyzer.report_schema import validate_report
from analyzer.model.signals import Signal
from collectors.otlp_traces import load_traces
from collectors.prometheus import collect
from heuristics.runtime import windowed
from tests.prom import OpenMetrics, Window, prometheus_with
from tests.test_heuristics_runtime import Traces
from tests.test_runtime_end_to_end import piecewise_counter
from tests.workloads.recording import write_proto_single

pytestmark = pytest.mark.prometheus

DAY = 86400.0
P = 4  # GOMAXPROCS of the old Go service


def gc_cpu(w: Window, t: float) -> float:
    """The old Go service's GC CPU (cores): 0.3 for the first five days, 0.7 after."""
    return 0.3 if t < w.start + 5 * DAY else 0.7


def cpu_rate(w: Window, t: float) -> float:
    return 0.5 if t < w.start + 5 * DAY else 2.0


def build(om: OpenMetrics) -> None:
    w = om.window
    # hodler: Go on client_golang < 1.13. GC CPU only as the cumulative go_memstats_gc_cpu_fraction
    # (GC CPU / (GOMAXPROCS x uptime)); the process started an hour before the window.
    L = {"job": "hodler", "instance": "10.0.0.7:9100"}
    born = w.start - 3600.0
    points, gc_total, prev = [], 3600.0 * 0.3, w.start
    for t in w.times():
        gc_total += gc_cpu(w, prev) * (t - prev)
        prev = t
        points.append((t, gc_total / (P * (t - born))))
    om.add("go_memstats_gc_cpu_fraction", L, points)
    om.gauge("process_start_time_seconds", L, born)
    om.gauge("go_sched_gomaxprocs_threads", L, P)
    piecewise_counter(om, "process_cpu_seconds_total", L, lambda t: gc_cpu(w, t) + 0.3)
    om.summary("go_gc_duration_seconds", L, 0.002, 5.0, {"0": 0.0001, "0.5": 0.0003, "1": 0.001})
    om.counter("http_requests_total", L, 10.0)

    # pyworker: CPython with analyzer.instrument.gc_pauses (python_gc_pause_seconds) and the old
    # OTel system-metrics GC counter; 0.05 s/s of collections, 0.08 cores, 1 request/s.
    L = {"job": "pyworker", "instance": "10.0.0.8:8000"}
    om.histogram("python_gc_pause_seconds", {**L, "generation": "2"}, 2.0, 0.05,
                 {0.001: 0.1, 0.01: 0.5, 0.05: 1.0})
    om.counter("process_runtime_cpython_gc_count_total", {**L, "count": "0"}, 2.0)
    om.counter("process_cpu_seconds_total", L, 0.08)
    om.counter("http_requests_total", L, 1.0)

    # weekly: CPU 0.5 cores for five days then 2 cores (several worker processes).
    L = {"job": "weekly", "instance": "10.0.0.9:8000"}
    piecewise_counter(om, "process_cpu_seconds_total", L, lambda t: cpu_rate(w, t))
    om.counter("http_requests_total", L, 20.0)

    # crowded: a container whose tasks waited 0.6 s per second for a core (cAdvisor CPU PSI) while it
    # used 0.0001 cores (60 ms per 400 ms request): a neighbour holds its cores.
    L = {"job": "crowded", "instance": "10.0.0.11:8000"}
    om.counter("container_pressure_cpu_waiting_seconds_total", {**L, "container": "crowded"}, 0.6)
    om.counter("process_cpu_seconds_total", L, 0.0001)

    # legacy-dotnet: the older OTel .NET runtime instrumentation's collection counter.
    L = {"job": "legacy-dotnet", "instance": "10.0.0.10:9464"}
    om.counter("process_runtime_dotnet_gc_collections_count_total", {**L, "generation": "gen0"}, 3.0)
    om.counter("process_cpu_seconds_total", L, 0.1)


@dataclass
class Env:
    report: dict
    window: Window
    t0: float
    t1: float


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    w = Window.recent(hours=7 * 24, lead=600.0, interval=60.0)
    om = OpenMetrics(w)
    build(om)
    traces = Traces()
    t0, t1 = w.start + 600.0, w.end - 60.0
    t = t0
    while t < t1:  # one traced request per service every 10 minutes, all in-process time
        traces.request("hodler", "go", "GET /route", t, 100.0)
        traces.request("pyworker", "python", "POST /job", t, 100.0)
        traces.request("weekly", "python", "GET /report", t, 100.0)
        traces.request("crowded", "python", "GET /page", t, 400.0)
        t += 600.0
    path = write_proto_single(traces.exporter.get_finished_spans(), tmp_path_factory.mktemp("t") / "week.pb")
    traces.shutdown()
    with prometheus_with(om.text()) as prom:
        table = load_traces([str(path)]).table
        s0, s1 = float(table.start.min()) / 1e9, float(table.end.max()) / 1e9
        signals = collect(prom.url, None, s0, s1)
        rep = analyze(Inputs(table=table, signals=signals), Config())
        validate_report(rep)
        rep["_signals"] = signals
        yield Env(rep, w, s0, s1)


def svc(report: dict, name: str) -> dict:
    return next(s for s in report["services"] if s["service"] == name)


def rule(s: dict, code: str) -> dict:
    return next(f for h in s["hotspots"] for f in h["findings"] if f["rule"] == code)


def ev(f: dict, signal: str) -> dict:
    return next(e for e in f["evidence"] if e["signal"] == signal)


def week_mean(env: Env, rate) -> float:
    """The exact mean over the analyzed window of a piecewise rate (changes at day 5)."""
    cut = env.window.start + 5 * DAY
    a, b = env.t0, env.t1
    return (rate(env.window, a) * (cut - a) + rate(env.window, b) * (b - cut)) / (b - a)


def test_week_mean_is_exact(env):
    """weekly: 0.5 cores for five days, then 2 cores. The window mean the tool reads is the
    counter's increase over the week, not a sample of rates."""
    got, _, _ = windowed(env.report["_signals"].for_service("weekly"), Signal.CPU_CORES_USED, env.t0, env.t1)
    assert got.value == pytest.approx(week_mean(env, cpu_rate), rel=0.01)


def test_old_go_gc_fraction_is_turned_into_window_gc_cpu(env):
    """hodler, Go on an old client_golang: only the cumulative GC CPU fraction since start. A human
    would say: GC eats most of the CPU (0.3 of 0.6 cores, then 0.7 of 1.0). The tool turns the
    fraction into the window's GC CPU and calls it gc_pause, where the stop-the-world summary
    alone (0.002 s/s) read as CPU work."""
    s = svc(env.report, "hodler")
    gc = rule(s, "PF-GC001")
    got = ev(gc, "gc_cpu_seconds_per_second")
    assert "go_memstats_gc_cpu_fraction" in got["source"]
    assert got["value"] == pytest.approx(week_mean(env, gc_cpu), rel=0.03)
    assert (s["verdict"]["rust_rewrite"], s["verdict"]["cause"]) == ("recommended", "gc_pause")


def test_cpython_gc_pause_histogram_is_gc_time(env):
    """pyworker, CPython with gc_pauses: 0.05 s/s of collections at 1 request/s is 50 ms of GC
    per request against (0.08 - 0.05) / 1 = 30 ms of other CPU. A human would say: the collector."""
    s = svc(env.report, "pyworker")
    gc = rule(s, "PF-GC001")
    assert "python_gc_pause_seconds_sum" in ev(gc, Signal.GC_SECONDS_PER_SECOND)["source"]
    assert ev(gc, "gc_ms_per_request")["value"] == pytest.approx(50.0, rel=0.02)
    assert ev(gc, "cpu_ms_per_request_outside_gc")["value"] == pytest.approx(30.0, rel=0.05)
    assert ev(gc, Signal.GC_CYCLES_PER_SECOND)["value"] == pytest.approx(2.0, rel=0.02)
    assert s["verdict"]["cause"] == "gc_pause"


def test_old_otel_runtime_counters_are_read(env):
    """The older OTel runtime instrumentations' collection counters: .NET
    process.runtime.dotnet.gc.collections.count (and CPython's gc_count, above, as a fallback)."""
    ss = env.report["_signals"].services["legacy-dotnet"]
    assert ss.has(Signal.GC_CYCLES_PER_SECOND)
    assert "process_runtime_dotnet_gc_collections_count_total" in ss.get(Signal.GC_CYCLES_PER_SECOND).source


def test_cpu_pressure_is_named_as_contention(env):
    """crowded: 400 ms requests, 60 ms of CPU each, and its container's tasks waited 0.6 s/s for a core.
    A human would say: starved by a neighbour. Not CPU work, not a rewrite; the wait is named."""
    s = svc(env.report, "crowded")
    w = rule(s, "PF-WAIT001")
    assert "contention" in w["message"]
    assert ev(w, Signal.CPU_WAIT_SECONDS_PER_SECOND)["value"] == pytest.approx(0.6, rel=0.01)
    assert s["verdict"]["rust_rewrite"] == "not_recommended" and s["verdict"]["cause"] == "unknown"
