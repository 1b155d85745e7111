"""The runtime model's principles (issue 12), one deterministic test each: traces from the REAL
OpenTelemetry SDK, runtime signals as the collector would hand them over (series on a 15 s grid).
Each docstring names the workload and the cause a human would name; the live counterparts run on
real runtimes in tests/test_runtime_live.py and tests/test_runtime_generations.py."""

from __future__ import annotations

import numpy as np
import pytest

from analyzer.classify import ClassifyConfig, category_shares, pick
from analyzer.ceiling import rewrite_ceiling
from analyzer.config import Config
from analyzer.model.signals import Series, Signal
from analyzer.verdict import HotspotResult
from heuristics.engine import run_rules
from heuristics.runtime import measure
from tests.test_heuristics_runtime import T0, contexts, fire, one, series, signals_for, steady, traces  # noqa: F401

CFG = ClassifyConfig()


def test_gc_cost_is_gc_seconds_over_requests(traces, tmp_path):
    """JVM: 0.3 s of pauses per second at 10 req/s is 30 ms of GC per request; 0.4 cores are 40 ms
    of CPU, 10 ms of it outside GC; requests are 40 ms of self time. A human would say: GC, three
    quarters of every request. (Pauses x latency would have said 30%.)"""
    steady(traces, "ledger", "jvm", 240, 5, 40)
    ctx = one(traces, tmp_path, signals_for("ledger", "jvm", **{
        Signal.GC_SECONDS_PER_SECOND: 0.3, Signal.CPU_CORES_USED: 0.4, Signal.REQUESTS_PER_SECOND: 10.0}))
    (g,) = fire("PF-GC001", ctx)
    assert g.share == pytest.approx(0.75, abs=0.01)
    ev = {e.signal: e.value for e in g.evidence}
    assert ev["gc_ms_per_request"] == pytest.approx(30.0) and ev["cpu_ms_per_request_outside_gc"] == pytest.approx(10.0)
    assert "75% of the runtime cost" in g.message
    fs = run_rules(ctx, Config())
    shares = category_shares(ctx.hotspot, fs)
    c = rewrite_ceiling([ctx], [HotspotResult(ctx.hotspot.operation, ctx.hotspot.total_ms, 1.0, "gc_pause", shares, fs)])
    assert c["basis"]["gc_ms_per_request"] == pytest.approx(30.0) and c["basis"]["cpu_ms_per_request"] == pytest.approx(10.0)
    assert c["basis"]["gc_share"] == pytest.approx(0.75, abs=0.01)


def test_node_gc_says_spans_under_count_pauses(traces, tmp_path):
    """Node, GC-bound, with 120 ms of event-loop lag: requests wait for the loop before their
    spans start, so the GC finding carries the lag and says spans under-count pauses."""
    steady(traces, "feed", "node", 240, 5, 40)
    ctx = one(traces, tmp_path, signals_for("feed", "node", **{
        Signal.GC_SECONDS_PER_SECOND: 0.3, Signal.CPU_CORES_USED: 0.35, Signal.REQUESTS_PER_SECOND: 10.0,
        Signal.EVENT_LOOP_LAG: 0.12}))
    (g,) = fire("PF-GC001", ctx)
    assert "under-count" in g.message and "120 ms" in g.message
    assert any(e.signal == Signal.EVENT_LOOP_LAG and e.value == pytest.approx(0.12) for e in g.evidence)


def test_node_gc_wait_before_spans_is_counted_as_gc(traces, tmp_path):
    """Node, GC-bound (30 ms of pauses and 5 ms of other CPU per request), with a mean event-loop
    delay of 12 ms: a request arriving during a pause waits before its span starts. A human would
    say: GC costs each request more than its span shows. GC's part of the wait (30/35 of what
    blocks the loop: ~10.3 ms) is GC evidence, in the finding and the ceiling's basis."""
    steady(traces, "feed", "node", 240, 5, 40)
    ctx = one(traces, tmp_path, signals_for("feed", "node", **{
        Signal.GC_SECONDS_PER_SECOND: 0.3, Signal.CPU_CORES_USED: 0.35, Signal.REQUESTS_PER_SECOND: 10.0,
        Signal.EVENT_LOOP_DELAY_MEAN: 0.012}))
    (g,) = fire("PF-GC001", ctx)
    ev = {e.signal: e.value for e in g.evidence}
    assert ev["gc_ms_before_spans_per_request"] == pytest.approx(12.0 * 30 / 35, rel=0.01)
    assert "under-count GC by that much" in g.message and "12.0 ms on average" in g.message
    fs = run_rules(ctx, Config())
    c = rewrite_ceiling([ctx], [HotspotResult(ctx.hotspot.operation, ctx.hotspot.total_ms, 1.0, "gc_pause",
                                              category_shares(ctx.hotspot, fs), fs)])
    assert c["basis"]["gc_ms_before_spans_per_request"] == pytest.approx(12.0 * 30 / 35, rel=0.01)


def _rate(name: str) -> str:
    return f"sum by (pf_service) (rate({name}[1m]))"


def _pauses(gc: float, pauses: float, sum_metric: str, count_metric: str, **more: float | Series) -> dict:
    """A pause metric's seconds per second and events per second, as the collector hands them over."""
    return {Signal.GC_SECONDS_PER_SECOND: series(gc, _rate(sum_metric)),
            Signal.GC_CYCLES_PER_SECOND: series(pauses, _rate(count_metric)), **more}


def test_jvm_full_collections_delay_requests_before_their_spans(traces, tmp_path):
    """JVM (serial collector), 120 s window at 50 req/s with 4 full collections of 500 ms
    (Micrometer jvm_gc_pause_seconds: 2 s of pauses, 4 pauses). A request arriving during a pause
    waits for it to end before its server span starts. By hand, Poisson arrivals: mean wait per
    request = sum(p^2) / (2W) = 4 x 0.5^2 / (2 x 120) s = 1/240 s = 4.17 ms; the lower bound from sum
    and count, S^2 / (n 2W) = 2^2 / (4 x 240) s, is the same 4.17 ms since the pauses are equal, and
    the upper bound max x S / 2W = 0.5 x 2 / 240 s too. The request rate does not enter: each
    request waits the same on average."""
    steady(traces, "ledger", "jvm", 240, 0.5, 20)
    ctx = one(traces, tmp_path, signals_for("ledger", "jvm", **_pauses(
        2.0 / 120, 4 / 120, "jvm_gc_pause_seconds_sum", "jvm_gc_pause_seconds_count",
        **{Signal.REQUESTS_PER_SECOND: 50.0, Signal.CPU_CORES_USED: 0.5,
           Signal.GC_PAUSE_MAX: series(0.5, "max by (pf_service) (jvm_gc_pause_seconds_max)")})))
    m = measure(ctx)
    assert m.gc_outside_ms == pytest.approx(1e3 / 240, rel=1e-3)
    assert m.gc_outside_max_ms == pytest.approx(1e3 / 240, rel=1e-3)
    assert "jvm_gc_pause_seconds_sum" in m.gc_outside_source and "jvm_gc_pause_seconds_count" in m.gc_outside_source


def test_unequal_pauses_lie_between_the_bounds(traces, tmp_path):
    """JVM, 120 s window: one full collection of 1.4 s and three young ones of 0.2 s (S = 2 s,
    n = 4, max 1.4 s). By hand: the true mean wait is (1.96 + 3 x 0.04) / 240 s = 8.67 ms; the
    lower bound 2^2 / (4 x 240) s = 4.17 ms is below it and the upper bound 1.4 x 2 / 240 s = 11.67 ms
    above it."""
    steady(traces, "ledger", "jvm", 240, 0.5, 20)
    ctx = one(traces, tmp_path, signals_for("ledger", "jvm", **_pauses(
        2.0 / 120, 4 / 120, "jvm_gc_pause_seconds_sum", "jvm_gc_pause_seconds_count",
        **{Signal.REQUESTS_PER_SECOND: 2.0,
           Signal.GC_PAUSE_MAX: series(1.4, "max by (pf_service) (jvm_gc_pause_seconds_max)")})))
    m = measure(ctx)
    assert m.gc_outside_ms == pytest.approx(4.1667, rel=1e-3) and m.gc_outside_ms < 8.67
    assert m.gc_outside_max_ms == pytest.approx(11.667, rel=1e-3) and m.gc_outside_max_ms > 8.67


def test_gc_bound_jvm_says_spans_under_count_gc_by_at_least_the_bound(traces, tmp_path):
    """JVM, GC-bound: 3 stop-the-world pauses of 100 ms every second (0.3 s/s, client_java
    jvm_gc_collection_seconds of the serial collector) at 10 req/s, 0.35 cores, 40 ms of self time
    per request. By hand: sum(p^2) per second = 3 x 0.01 = 0.03 s^2, over 2: 15 ms of wait per
    request before its span starts, which the finding quotes, the message states as a lower bound
    the spans miss, and the ceiling counts in its basis."""
    steady(traces, "ledger", "jvm", 240, 5, 40)
    ctx = one(traces, tmp_path, signals_for("ledger", "jvm", **_pauses(
        0.3, 3.0, "jvm_gc_collection_seconds_sum", "jvm_gc_collection_seconds_count",
        **{Signal.CPU_CORES_USED: 0.35, Signal.REQUESTS_PER_SECOND: 10.0})))
    (g,) = fire("PF-GC001", ctx)
    ev = {e.signal: e for e in g.evidence}
    assert ev["gc_ms_before_spans_per_request"].value == pytest.approx(15.0, rel=1e-3)
    assert "jvm_gc_collection_seconds_count" in ev["gc_ms_before_spans_per_request"].source
    assert "gc_ms_before_spans_per_request_upper" not in ev  # client_java exposes no largest pause
    assert "at least ~15.0 ms" in g.message and "under-count GC by at least that much" in g.message
    fs = run_rules(ctx, Config())
    c = rewrite_ceiling([ctx], [HotspotResult(ctx.hotspot.operation, ctx.hotspot.total_ms, 1.0, "gc_pause",
                                              category_shares(ctx.hotspot, fs), fs)])
    assert c["basis"]["gc_ms_before_spans_per_request"] == pytest.approx(15.0, rel=1e-3)


def test_go_counts_two_stop_the_world_pauses_per_cycle(traces, tmp_path):
    """Go, 20 GC cycles per second with 0.5 ms of stop-the-world time each (go_gc_duration_seconds
    records one value per cycle: sweep termination + mark termination, two separate pauses). By
    hand, as 40 pauses of 0.25 ms per second: sum(p^2) / 2 = 40 x 0.25^2 / 2 ms^2 per s = 1.25 us per
    request (counting 20 pauses of 0.5 ms would claim 2.5 us, more than the pauses can cause)."""
    steady(traces, "api", "go", 240, 0.5, 5)
    ctx = one(traces, tmp_path, signals_for("api", "go", **_pauses(
        0.01, 20.0, "go_gc_duration_seconds_sum", "go_gc_duration_seconds_count",
        **{Signal.REQUESTS_PER_SECOND: 2.0})))
    assert measure(ctx).gc_outside_ms == pytest.approx(0.00125, rel=1e-3)


@pytest.mark.parametrize("sum_metric, count_metric", [
    ("jvm_gc_duration_seconds_sum", "jvm_gc_duration_seconds_count"),  # OTel: ZGC/Shenandoah cycles included
    ("go_cpu_classes_gc_total_cpu_seconds_total", "go_gc_duration_seconds_count"),  # Go GC CPU, not pauses
    ("jvm_gc_pause_seconds_sum", "jvm_gc_collection_seconds_count"),  # count of another metric
])
def test_concurrent_or_cpu_gc_metrics_give_no_wait_before_spans(traces, tmp_path, sum_metric, count_metric):
    """A JVM on ZGC whose OTel jvm.gc.duration times concurrent cycles (0.3 s/s over 3 cycles/s:
    the requests ran on through them), Go's GC CPU, and a pause sum paired with another metric's
    count: none of them says how long every thread stood still, so no wait before spans is claimed."""
    steady(traces, "ledger", "jvm", 240, 5, 40)
    ctx = one(traces, tmp_path, signals_for("ledger", "jvm", **_pauses(
        0.3, 3.0, sum_metric, count_metric, **{Signal.CPU_CORES_USED: 0.35, Signal.REQUESTS_PER_SECOND: 10.0})))
    m = measure(ctx)
    assert not np.isfinite(m.gc_outside_ms) and not m.gc_outside_source
    assert all(e.signal != "gc_ms_before_spans_per_request" for f in fire("PF-GC001", ctx) for e in f.evidence)


def test_cpython_at_its_one_core_ceiling_is_cpu_bound(traces, tmp_path):
    """CPython, 0.95 cores (its GIL ceiling is one), 20 req/s, each request 150 ms of self time of
    which 47.5 ms is its own CPU: three requests at once queue for the GIL behind each other's
    work. A human would say: CPU-bound (saturated), not waiting."""
    steady(traces, "thumbs", "python", 1200, 0.05, 150)
    ctx = one(traces, tmp_path, signals_for("thumbs", "python", **{
        Signal.CPU_CORES_USED: 0.95, Signal.REQUESTS_PER_SECOND: 20.0}))
    (c,) = fire("PF-CPU001", ctx)
    assert c.share == pytest.approx(0.95, abs=0.01) and "GIL" in c.message
    (sat,) = fire("PF-CPU002", ctx)
    assert "processes" in sat.remedy and "2x faster" in sat.remedy
    assert fire("PF-WAIT001", ctx) == []


def test_each_process_has_its_own_core(traces, tmp_path):
    """Four CPython worker processes, 0.8 cores in all, 10 req/s of 300 ms self time (3 in
    process at once, 80 ms CPU each): each worker has its own GIL, so nobody queues for one.
    A human would say: they wait on something (220 ms of 300 are not CPU). Not CPU-bound, not
    saturated (0.8 of 4 cores)."""
    steady(traces, "workers", "python", 1200, 0.1, 300)
    ctx = one(traces, tmp_path, signals_for("workers", "python", **{
        Signal.CPU_CORES_USED: 0.8, Signal.REQUESTS_PER_SECOND: 10.0, Signal.PROCESSES: 4.0}))
    assert fire("PF-CPU001", ctx) == [] and fire("PF-CPU002", ctx) == []


def test_neighbour_contention_below_the_ceiling_is_not_cpu_work(traces, tmp_path):
    """CPython using 0.1 cores with one request at a time (2 req/s of 400 ms, 5 ms CPU each): far
    below its ceiling, the rest of the time it waits. Not CPU-bound, whatever made it wait."""
    steady(traces, "starved", "python", 300, 0.5, 400)
    ctx = one(traces, tmp_path, signals_for("starved", "python", **{
        Signal.CPU_CORES_USED: 0.01, Signal.REQUESTS_PER_SECOND: 2.0}))
    assert fire("PF-CPU001", ctx) == [] and fire("PF-CPU002", ctx) == []
    assert fire("PF-WAIT001", ctx)


def test_cpu_pressure_names_the_contention(traces, tmp_path):
    """As above, in a container whose tasks waited 0.8 s per second for a core (cAdvisor PSI): a
    human would say a neighbour takes its cores. The wait finding says so, and stays `unknown`."""
    steady(traces, "starved", "python", 300, 0.5, 400)
    ctx = one(traces, tmp_path, signals_for("starved", "python", **{
        Signal.CPU_CORES_USED: 0.01, Signal.REQUESTS_PER_SECOND: 2.0, Signal.CPU_WAIT_SECONDS_PER_SECOND: 0.8}))
    (w,) = fire("PF-WAIT001", ctx)
    assert "contention" in w.message and "0.80 s per second" in w.message and w.category == "unknown"


def test_own_cpu_work_on_a_busy_host_is_still_cpu_bound(traces, tmp_path):
    """CPython render service, one request at a time (5 req/s of 190 ms), 90 ms of its own CPU each
    (0.45 cores), on a host where other processes hold its core: its threads waited 0.5 s per
    second for one (run-queue wait, analyzer.instrument.core_wait). A human would say: CPU-bound,
    slowed further by neighbours. Its CPU covers 90 of the 90 ms it was not waiting for a core: CPU
    work, with the CPU's own share (~47%), and the wait named as contention. Without the run-queue
    signal the same service reads as under half CPU and gets no CPU finding."""
    steady(traces, "render", "python", 600, 0.2, 190)
    base = {Signal.CPU_CORES_USED: 0.45, Signal.REQUESTS_PER_SECOND: 5.0}
    assert fire("PF-CPU001", one(traces, tmp_path, signals_for("render", "python", **base))) == []
    ctx = one(traces, tmp_path, signals_for("render", "python", **base, **{Signal.CPU_RUN_QUEUE_SECONDS_PER_SECOND: 0.5}))
    (c,) = fire("PF-CPU001", ctx)
    assert c.share == pytest.approx(90 / 190, abs=0.01)
    assert "waited 100.0 ms per request for a core other processes held" in c.message
    fs = run_rules(ctx, Config())
    assert pick(category_shares(ctx.hotspot, fs), CFG)[0] == "cpu_bound"
    assert fire("PF-WAIT001", ctx) == []


def test_run_queue_wait_alone_is_contention_not_cpu_work(traces, tmp_path):
    """CPython, 2 req/s of 400 ms with 5 ms of CPU each, its threads waiting 0.78 s per second for a
    core others hold. A human would say: starved by neighbours; a rewrite changes nothing. No CPU
    finding; the wait finding names the contention and stays `unknown`."""
    steady(traces, "starved", "python", 300, 0.5, 400)
    ctx = one(traces, tmp_path, signals_for("starved", "python", **{
        Signal.CPU_CORES_USED: 0.01, Signal.REQUESTS_PER_SECOND: 2.0, Signal.CPU_RUN_QUEUE_SECONDS_PER_SECOND: 0.78}))
    assert fire("PF-CPU001", ctx) == [] and fire("PF-CPU002", ctx) == []
    (w,) = fire("PF-WAIT001", ctx)
    assert "for a CPU core" in w.message and "390.0 ms per request" in w.message and w.category == "unknown"


def test_background_cpu_is_not_charged_to_rare_requests(traces, tmp_path):
    """A service with a thread burning 0.3 cores and one 20 ms request a minute: a human would say
    the requests wait; the CPU is the background thread's. Intervals without requests measure the
    background, so no CPU share and no ceiling worth quoting."""
    steady(traces, "quiet", "python", 60, 60, 20)
    ctx = one(traces, tmp_path, signals_for("quiet", "python", **{Signal.CPU_CORES_USED: 0.3}))
    assert fire("PF-CPU001", ctx) == []
    fs = run_rules(ctx, Config())
    shares = category_shares(ctx.hotspot, fs)
    assert shares["cpu_bound"] == 0
    c = rewrite_ceiling([ctx], [HotspotResult(ctx.hotspot.operation, ctx.hotspot.total_ms, 1.0, "unknown", shares, fs)])
    assert c["mean_pct"] < 1


def test_background_rhythm_is_not_read_as_request_cpu(traces, tmp_path):
    """A cache warmer whose CPU swings 0.22-0.38 cores on its own 170 s cycle, and requests that
    sleep 30 ms, every 3 s one minute and every 12 s the next. A human would say: the requests
    wait; the CPU is the warmer's. Over this window the swing happens to line up with the busier
    minutes (a regression slope of ~30 ms per request), but it is far inside its own noise: no
    CPU is charged to the requests."""
    t = T0
    while t < T0 + 1800:
        traces.request("quiet", "python", "GET /work", t, 30, 0.0)
        t += 3 if int((t - T0) // 60) % 2 == 0 else 12
    ctx = one(traces, tmp_path, signals_for("quiet", "python", **{
        Signal.CPU_CORES_USED: lambda tt: 0.3 + 0.08 * np.sin(2 * np.pi * (tt - T0) / 170)}))
    assert fire("PF-CPU001", ctx) == []
    fs = run_rules(ctx, Config())
    assert category_shares(ctx.hotspot, fs)["cpu_bound"] == 0


def test_cpu_is_spread_by_self_time_a_probe_gets_none(traces, tmp_path):
    """One service: GET /render burns 100 ms of CPU per request; GET /healthz, hit once, takes
    0.05 ms. A human would say: render is CPU-bound; the probe is nothing."""
    steady(traces, "render", "python", 600, 1, 100, op="GET /render")
    steady(traces, "render", "python", 1, 1, 0.05, op="GET /healthz", start=T0 + 300.2)
    ctxs = contexts(traces.table(tmp_path / "t.pb"), signals_for("render", "python", **{
        Signal.CPU_CORES_USED: 0.1, Signal.REQUESTS_PER_SECOND: 1.0}))
    assert fire("PF-CPU001", ctxs["render GET /render"])
    assert fire("PF-CPU001", ctxs["render GET /healthz"]) == []


def test_one_story_the_ceiling_uses_the_verdicts_shares(traces, tmp_path):
    """CPU covers 15% of self time, under PF-CPU001's 20% share: the verdict says 0% CPU, and the
    ceiling must not be built on the 15% no finding backs."""
    steady(traces, "api", "jvm", 240, 5, 100)
    ctx = one(traces, tmp_path, signals_for("api", "jvm", **{
        Signal.CPU_CORES_USED: 0.003, Signal.REQUESTS_PER_SECOND: 0.2, Signal.GC_SECONDS_PER_SECOND: 0.0}))
    fs = run_rules(ctx, Config())
    shares = category_shares(ctx.hotspot, fs)
    cat, _ = pick(shares, CFG)
    c = rewrite_ceiling([ctx], [HotspotResult(ctx.hotspot.operation, ctx.hotspot.total_ms, 1.0, cat, shares, fs)])
    assert shares["cpu_bound"] == 0 and c["basis"]["cpu_share"] == 0 and c["mean_pct"] == 0

