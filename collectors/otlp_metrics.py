"""OTLP metrics (ExportMetricsServiceRequests) → `Signals`: CPU, GC and event-loop facts per service.

Metric names are those in shared/docs/signals.md §2–§3 (semantic conventions plus the older
names instrumentations still emit). Every series keeps the OTLP metric name as its source.

How each OTLP point kind becomes a per-second series:
- Sum, cumulative: rate between consecutive points of one stream (same attributes and start
  time); a lower value or a new start time is a counter reset and that interval is skipped.
- Sum, delta: value / (time - start) for each point.
- Gauge and non-monotonic Sum: the value itself (a level, e.g. CPU count).
- Histogram / ExponentialHistogram: per interval (consecutive cumulative points, or each delta
  point) the sum gives seconds per second, the count gives cycles per second, and the bucket
  counts give pause quantiles (linear interpolation inside a bucket, clamped to the point's
  min/max when known); the point's max gives the max pause.
Streams of one process (attribute sets) are added up; processes (resources) of one service are
added for capacity-like signals (cores used, cores available) and averaged for per-process
ones (GC time per second, pauses, utilization, event-loop lag).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2

from analyzer.model.semconv import PROCESS_RUNTIME_NAME, TELEMETRY_SDK_LANGUAGE, runtime_of
from analyzer.model.signals import Missing, Series, ServiceSignals, Signal, Signals
from collectors.otlp_files import DEFAULT_LIMITS, InputError, Limits, SourceStats, iter_messages, shown

# -- the names this module understands (signals.md §2, §3) ------------------------------------

CPU_TIME = ("process.cpu.time", "process.runtime.cpython.cpu_time", "process.runtime.pypy.cpu_time",
            "jvm.cpu.time", "dotnet.process.cpu.time", "go.cpu.time")
CPU_UTILIZATION = ("process.cpu.utilization", "process.runtime.cpython.cpu.utilization", "jvm.cpu.recent_utilization")
CPU_COUNT = ("jvm.cpu.count", "dotnet.process.cpu.count", "go.processor.limit")
GC_HISTOGRAMS = ("jvm.gc.duration", "process.runtime.jvm.gc.duration", "v8js.gc.duration", "go.memory.gc.pause.duration",
                 "process.runtime.go.gc.pause_ns", "cpython.gc.pause.duration", "jvm.gc.pause")
GC_TIME_COUNTERS = ("dotnet.gc.pause.time", "process.runtime.dotnet.gc.duration", "process.runtime.go.gc.pause_total_ns")
GC_CYCLE_COUNTERS = ("dotnet.gc.collections", "process.runtime.dotnet.gc.collections.count", "go.memory.gc.cycles",
                     "process.runtime.go.gc.count", "cpython.gc.collections")
EVENT_LOOP_LAG = ("nodejs.eventloop.delay.p99", "nodejs.eventloop.delay.mean", "nodejs.eventloop.delay.p50")
EVENT_LOOP_DELAY = ("nodejs.eventloop.delay.mean", "nodejs.eventloop.delay.min")
CORE_WAIT = "process.cpu.wait.time"  # analyzer.instrument.core_wait: run-queue wait of the process's threads
_ALL = frozenset(CPU_TIME + CPU_UTILIZATION + CPU_COUNT + GC_HISTOGRAMS + GC_TIME_COUNTERS + GC_CYCLE_COUNTERS + EVENT_LOOP_LAG
                 + EVENT_LOOP_DELAY + (CORE_WAIT,))

# CPU modes that are not time the process spent on a CPU.
_IDLE_MODES = frozenset({"idle", "wait"})
_MODE_KEYS = ("cpu.mode", "process.cpu.state", "type", "state", "go.cpu.state")
_UNIT_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "μs": 1e-6, "ns": 1e-9, "min": 60.0}
_PREFIX_RUNTIMES = (("jvm.", "jvm"), ("process.runtime.jvm.", "jvm"), ("v8js.", "node"), ("nodejs.", "node"),
                    ("go.", "go"), ("process.runtime.go.", "go"), ("dotnet.", "dotnet"),
                    ("process.runtime.dotnet.", "dotnet"), ("cpython.", "python"), ("process.runtime.cpython.", "python"))

_CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
_DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA


# -- public API --------------------------------------------------------------------------------


def signals_from_requests(requests: Iterable[ExportMetricsServiceRequest], signals: Signals | None = None) -> Signals:
    """Signals from OTLP metric export requests (from a capture, a file or a test)."""
    signals = signals if signals is not None else Signals()
    store = _Store()
    for req in requests:
        store.add(req)
    for service, metrics in store.by_service.items():
        _derive(signals.service(service), metrics, store.runtime.get(service, "unknown"))
    return signals


def signals_from_file(path: str | Path, signals: Signals | None = None, stats: SourceStats | None = None,
                      limits: Limits = DEFAULT_LIMITS) -> Signals:
    """Signals from an OTLP metrics file in any format `collectors.otlp_files` reads (JSON
    lines as the capture and the Collector write them, framed or single protobuf; gzip/zstd).
    Raises `InputError` (one user-facing line) when the file is missing or not OTLP metrics;
    damage inside it is counted in `stats`."""
    return signals_from_requests(read_metric_requests(path, stats, limits), signals)


def read_metric_requests(path: str | Path, stats: SourceStats | None = None,
                         limits: Limits = DEFAULT_LIMITS) -> Iterator[ExportMetricsServiceRequest]:
    """Each message of an OTLP metrics file as an ExportMetricsServiceRequest (one that does not
    decode is counted in `stats` as `invalid_messages` and skipped)."""
    p = Path(path)
    stats = stats if stats is not None else SourceStats(path=shown(p))
    for n, (kind, msg) in enumerate(iter_messages(p, stats, limits), 1):
        try:
            if kind == "json":
                assert isinstance(msg, dict)
                if "resourceSpans" in msg:
                    raise InputError(f"{p}: holds traces, not metrics; pass it as traces")
                _hex_to_b64(msg)
                yield json_format.ParseDict(msg, ExportMetricsServiceRequest(), ignore_unknown_fields=True)
            else:
                assert isinstance(msg, bytes)
                yield ExportMetricsServiceRequest.FromString(msg)
        # (SystemError: upb's JSON parser raises it for a name holding a lone surrogate)
        except (ValueError, TypeError, OverflowError, RecursionError, SystemError, json_format.ParseError,
                DecodeError) as e:
            stats.skipped["invalid_messages"] += 1
            stats.note(f"message {n}: not an OTLP metrics request ({e}); skipped")


# -- collecting points -------------------------------------------------------------------------


@dataclass
class _Metric:
    """All points of one metric name for one service, grouped by stream."""

    name: str
    unit: str
    kind: str  # sum | gauge | histogram | exponential_histogram
    temporality: int = 0
    monotonic: bool = False
    # stream key (resource, attributes) → points, each a tuple whose layout depends on kind
    streams: dict[tuple, list[tuple]] = field(default_factory=lambda: defaultdict(list))


class _Store:
    def __init__(self) -> None:
        self.by_service: dict[str, dict[str, _Metric]] = defaultdict(dict)
        self.runtime: dict[str, str] = {}

    def add(self, req: ExportMetricsServiceRequest) -> None:
        for rm in req.resource_metrics:
            rattrs = _attrs(rm.resource.attributes)
            service = str(rattrs.get("service.name") or "unknown_service")
            runtime = _runtime_of(rattrs)
            if runtime != "unknown":
                self.runtime.setdefault(service, runtime)
            instance = tuple(sorted((k, str(v)) for k, v in rattrs.items()))
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name in _ALL:
                        self._add_metric(service, instance, m)

    def _add_metric(self, service: str, instance: tuple, m: metrics_pb2.Metric) -> None:
        kind = m.WhichOneof("data")
        if kind is None:
            return
        data = getattr(m, kind)
        metric = self.by_service[service].get(m.name)
        if metric is None:
            metric = _Metric(m.name, m.unit, kind, getattr(data, "aggregation_temporality", 0), getattr(data, "is_monotonic", False))
            self.by_service[service][m.name] = metric
        elif metric.kind != kind:
            return  # one name with two shapes: keep the first, as a backend would reject the second
        for p in data.data_points:
            key = (instance, tuple(sorted((k, str(v)) for k, v in _attrs(p.attributes).items())))
            metric.streams[key].append(_point(kind, p))


def _point(kind: str, p: Any) -> tuple:
    if kind in ("sum", "gauge"):
        value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
        return (p.time_unix_nano, p.start_time_unix_nano, value)
    mx = p.max if p.HasField("max") else None
    mn = p.min if p.HasField("min") else None
    if kind == "histogram":
        return (p.time_unix_nano, p.start_time_unix_nano, p.count, p.sum, tuple(p.explicit_bounds), tuple(p.bucket_counts), mn, mx)
    return (p.time_unix_nano, p.start_time_unix_nano, p.count, p.sum, p.scale, p.zero_count,
            p.positive.offset, tuple(p.positive.bucket_counts), mn, mx)


def _attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which in ("string_value", "int_value", "double_value", "bool_value") else ""
    return out


def _runtime_of(rattrs: dict[str, Any]) -> str:
    return runtime_of(_str_or_none(rattrs.get(PROCESS_RUNTIME_NAME)), _str_or_none(rattrs.get(TELEMETRY_SDK_LANGUAGE)))


def _str_or_none(v: Any) -> str | None:
    return None if v in (None, "") else str(v)


# -- per-stream series ----------------------------------------------------------------------------

_Rows = dict[int, float]  # time (ns) → value


def _scale(metric: _Metric) -> float:
    unit = metric.unit.strip()
    if unit in _UNIT_SECONDS:
        return _UNIT_SECONDS[unit]
    return 1e-9 if metric.name.endswith("_ns") else 1.0


def _window_start(metric: _Metric) -> int:
    return min((p[0] for pts in metric.streams.values() for p in pts), default=0)


def _born_seconds(metric: _Metric, t: int, start: int) -> float:
    """The time a stream's first point covers when the stream began inside the window. Its start
    time is when the SDK first saw the attribute set, which can be the collection itself (values
    recorded in bulk just before it, e.g. GC pauses timed in a callback and drained at export):
    then t - start is microseconds and the rate absurd. The values arrived since the metric's
    previous collection, so that is the interval when it is longer."""
    earlier = [p[0] for pts in metric.streams.values() for p in pts if p[0] < t]
    return (t - min(start, max(earlier))) / 1e9 if earlier else (t - start) / 1e9


def _rates(metric: _Metric, points: list[tuple]) -> _Rows:
    """Per-second rate of a Sum stream (cumulative or delta), keyed by the point's time."""
    rows: _Rows = {}
    pts = sorted(points)
    if metric.temporality == _DELTA:
        for t, start, v in pts:
            if t > start > 0:
                rows[t] = v / ((t - start) / 1e9)
        return rows
    # A cumulative stream that started inside the window (a new attribute set, a restarted
    # process) counts from its start; one that started before it needs two points.
    t, start, v = pts[0]
    if start >= _window_start(metric) and t > start:
        rows[t] = v / _born_seconds(metric, t, start)
    for (t0, s0, v0), (t1, s1, v1) in zip(pts, pts[1:]):
        if t1 <= t0:
            continue
        if s1 == s0 and v1 >= v0:
            rows[t1] = (v1 - v0) / ((t1 - t0) / 1e9)
        elif s1 >= t0 and t1 > s1:  # restarted between the two points: count from its start
            rows[t1] = v1 / ((t1 - s1) / 1e9)
    return rows


def _levels(metric: _Metric, points: list[tuple]) -> _Rows:
    pts = sorted(points)
    if metric.kind == "sum" and metric.temporality == _DELTA:  # delta UpDownCounter: running total
        total, rows = 0.0, {}
        for t, _, v in pts:
            total += v
            rows[t] = total
        return rows
    return {t: v for t, _, v in pts}


@dataclass
class _Interval:
    seconds: float
    sum: float
    count: float
    buckets: list[tuple[float, float, float]]  # (low, high, count), seconds
    max: float | None


def _intervals(metric: _Metric, points: list[tuple]) -> dict[int, _Interval]:
    """Per-interval histogram deltas of one stream, keyed by the interval's end time."""
    scale = _scale(metric)
    pts = sorted(points, key=lambda p: p[0])
    out: dict[int, _Interval] = {}
    expo = metric.kind == "exponential_histogram"
    if metric.temporality == _DELTA:
        for p in pts:
            t, start = p[0], p[1]
            iv = _interval_of(p, None, expo, scale) if t > start > 0 else None
            if iv is not None:
                out[t] = iv
        return out
    if pts and pts[0][1] >= _window_start(metric) and pts[0][0] > pts[0][1]:  # born inside the window
        iv = _interval_of(pts[0], None, expo, scale)
        if iv is not None:
            iv.seconds = _born_seconds(metric, pts[0][0], pts[0][1])
            out[pts[0][0]] = iv
    for prev, cur in zip(pts, pts[1:]):
        if cur[0] <= prev[0]:
            continue
        if cur[1] == prev[1] and cur[2] >= prev[2]:
            iv = _interval_of(cur, prev, expo, scale)
            if iv is not None:
                out[cur[0]] = iv
        elif cur[1] >= prev[0] and cur[0] > cur[1]:  # reset: the new stream's first point is its own interval
            iv = _interval_of(cur, None, expo, scale)
            if iv is not None:
                out[cur[0]] = iv
    return out


def _interval_of(cur: tuple, prev: tuple | None, expo: bool, scale: float) -> Any:
    t, start, count, total = cur[0], cur[1], cur[2], cur[3]
    mn, mx = cur[-2], cur[-1]
    t_prev = prev[0] if prev is not None else start
    seconds = (t - t_prev) / 1e9
    if prev is not None:
        count -= prev[2]
        total -= prev[3]
        # A cumulative min/max covers the whole stream; it bounds this interval only if it moved.
        mn = mn if mn is not None and prev[-2] is not None and mn < prev[-2] else None
        mx = mx if mx is not None and prev[-1] is not None and mx > prev[-1] else None
    if expo:
        buckets = _expo_buckets(cur, prev)
    else:
        buckets = _explicit_buckets(cur, prev)
    if buckets is None:
        return None
    lo = mn * scale if mn is not None else None
    hi = mx * scale if mx is not None else None
    scaled = [(a * scale, b * scale, c) for a, b, c in buckets if c > 0]
    if scaled and (lo is not None or hi is not None):
        scaled = [(max(a, lo) if lo is not None else a, min(b, hi) if hi is not None else b, c) for a, b, c in scaled]
    return _Interval(seconds, total * scale, float(count), scaled, hi)


def _explicit_buckets(cur: tuple, prev: tuple | None) -> list[tuple[float, float, float]] | None:
    bounds, counts = cur[4], list(cur[5])
    if prev is not None:
        if prev[4] != bounds or len(prev[5]) != len(counts):
            return None
        counts = [c - p for c, p in zip(counts, prev[5])]
        if any(c < 0 for c in counts):
            return None
    if not bounds:
        return []
    edges = [min(0.0, bounds[0])] + list(bounds) + [bounds[-1]]
    return [(edges[i], edges[i + 1], float(c)) for i, c in enumerate(counts)]


def _expo_counts(p: tuple, scale: int) -> dict[int, int]:
    shift = p[4] - scale
    out: dict[int, int] = defaultdict(int)
    for k, c in enumerate(p[7]):
        if c:
            out[(p[6] + k) >> shift] += c
    return out


def _expo_buckets(cur: tuple, prev: tuple | None) -> list[tuple[float, float, float]] | None:
    scale = cur[4] if prev is None else min(cur[4], prev[4])
    counts = _expo_counts(cur, scale)
    zero = cur[5]
    if prev is not None:
        for i, c in _expo_counts(prev, scale).items():
            counts[i] -= c
        zero -= prev[5]
        if zero < 0 or any(c < 0 for c in counts.values()):
            return None
    base = 2.0 ** (2.0 ** -scale)
    buckets = [(0.0, 0.0, float(zero))] if zero else []
    buckets += [(base**i, base ** (i + 1), float(c)) for i, c in sorted(counts.items()) if c]
    return buckets


def _quantile(buckets: list[tuple[float, float, float]], q: float) -> float:
    total = sum(c for _, _, c in buckets)
    if total <= 0:
        return math.nan
    rank = q * total
    seen = 0.0
    for lo, hi, c in sorted(buckets, key=lambda b: (b[1], b[0])):
        if seen + c >= rank:
            return lo + (hi - lo) * ((rank - seen) / c if c else 0.0)
        seen += c
    return sorted(buckets, key=lambda b: b[1])[-1][1]


# -- combining streams and processes ------------------------------------------------------------


def _sum_by_instance(streams: dict[tuple, _Rows]) -> dict[tuple, _Rows]:
    """Add up the attribute streams of each process (they share collection timestamps)."""
    out: dict[tuple, _Rows] = defaultdict(dict)
    for (instance, _), rows in streams.items():
        acc = out[instance]
        for t, v in rows.items():
            acc[t] = acc.get(t, 0.0) + v
    return out


def _across(instances: dict[tuple, _Rows], how: str) -> tuple[np.ndarray, np.ndarray]:
    """Merge processes on the union of their times, holding each one's last value (step)."""
    per = [(np.array(sorted(r)), np.array([r[t] for t in sorted(r)])) for r in instances.values() if r]
    if not per:
        return np.empty(0), np.empty(0)
    times = np.unique(np.concatenate([t for t, _ in per]))
    total = np.zeros(times.size)
    n = np.zeros(times.size)
    for t, v in per:
        idx = np.searchsorted(t, times, side="right") - 1
        ok = idx >= 0
        total[ok] += v[idx[ok]]
        n[ok] += 1
    values = total if how == "sum" else total / np.maximum(n, 1)
    return times / 1e9, values


def _series(instances: dict[tuple, _Rows], how: str, source: str, unit: str) -> Series | None:
    t, v = _across(instances, how)
    return Series(t=t, v=v, source=source, unit=unit) if t.size else None


# -- deriving signals -------------------------------------------------------------------------


def _not_idle(key: tuple) -> bool:
    attrs = dict(key[1])
    return not any(attrs.get(k, "").lower() in _IDLE_MODES for k in _MODE_KEYS)


def _sum_rates(metric: _Metric, keep: Callable[[tuple], bool] = lambda k: True) -> dict[tuple, _Rows]:
    scale = _scale(metric)
    streams = {k: {t: v * scale for t, v in _rates(metric, pts).items()} for k, pts in metric.streams.items() if keep(k)}
    return _sum_by_instance(streams)


def _derive(sig: ServiceSignals, metrics: dict[str, _Metric], runtime: str) -> None:
    if sig.runtime == "unknown":
        sig.runtime = runtime if runtime != "unknown" else _runtime_from_names(metrics)
    first = lambda names: next((metrics[n] for n in names if n in metrics), None)  # noqa: E731

    # CPU cores used: rate of process CPU time, idle modes excluded.
    cpu = first(CPU_TIME)
    if cpu is not None and cpu.kind == "sum":
        _put(sig, Signal.CPU_CORES_USED, _series(_sum_rates(cpu, _not_idle), "sum", cpu.name, "cores"))
    waited = metrics.get(CORE_WAIT)
    if waited is not None and waited.kind == "sum":
        _put(sig, Signal.CPU_RUN_QUEUE_SECONDS_PER_SECOND, _series(_sum_rates(waited), "sum", waited.name, "s/s"))
    count = first(CPU_COUNT)
    if count is not None and count.kind in ("sum", "gauge"):
        levels = _sum_by_instance({k: _levels(count, p) for k, p in count.streams.items()})
        _put(sig, Signal.CPU_CORES_AVAILABLE, _series(levels, "sum", count.name, "cores"))
    util = first(CPU_UTILIZATION)
    if util is not None and util.kind in ("gauge", "sum"):
        levels = _sum_by_instance({k: _levels(util, p) for k, p in util.streams.items() if _not_idle(k)})
        _put(sig, Signal.CPU_UTILIZATION, _series(levels, "mean", util.name, "1"))
        avail = sig.get(Signal.CPU_CORES_AVAILABLE)
        used = sig.get(Signal.CPU_UTILIZATION)
        if not sig.has(Signal.CPU_CORES_USED) and avail is not None and used is not None:
            idx = np.clip(np.searchsorted(avail.t, used.t, side="right") - 1, 0, None)
            _put(sig, Signal.CPU_CORES_USED,
                 Series(used.t, used.v * avail.v[idx], f"{util.name} * {count.name if count else ''}", "cores"))
    if "go.cpu.time" in metrics:  # Go semconv splits CPU time by state, so the GC share is direct
        go = metrics["go.cpu.time"]
        gc = _series(_sum_rates(go, lambda k: dict(k[1]).get("go.cpu.state") == "gc"), "sum", go.name, "1")
        busy = _series(_sum_rates(go, _not_idle), "sum", go.name, "1")
        if gc is not None and busy is not None and gc.t.size == busy.t.size:
            with np.errstate(invalid="ignore", divide="ignore"):
                _put(sig, Signal.GC_CPU_FRACTION, Series(gc.t, gc.v / busy.v, go.name, "1"))

    # GC: pause histograms first (time, cycles and quantiles), then pause-time counters.
    hist = first(GC_HISTOGRAMS)
    if hist is not None and hist.kind in ("histogram", "exponential_histogram"):
        _gc_from_histogram(sig, hist)
    timer = first(GC_TIME_COUNTERS)
    if not sig.has(Signal.GC_SECONDS_PER_SECOND) and timer is not None and timer.kind == "sum":
        _put(sig, Signal.GC_SECONDS_PER_SECOND, _series(_sum_rates(timer), "mean", timer.name, "s/s"))
    cycles = first(GC_CYCLE_COUNTERS)
    if not sig.has(Signal.GC_CYCLES_PER_SECOND) and cycles is not None and cycles.kind == "sum":
        _put(sig, Signal.GC_CYCLES_PER_SECOND, _series(_sum_rates(cycles), "mean", cycles.name, "1/s"))

    lag = first(EVENT_LOOP_LAG)
    if lag is not None and lag.kind in ("gauge", "sum"):
        scale = _scale(lag)
        levels = {k: {t: v * scale for t, v in _levels(lag, p).items()} for k, p in lag.streams.items()}
        _put(sig, Signal.EVENT_LOOP_LAG, _series(_sum_by_instance(levels), "mean", lag.name, "s"))
    mean, low = metrics.get("nodejs.eventloop.delay.mean"), metrics.get("nodejs.eventloop.delay.min")
    if mean is not None and low is not None and mean.kind == low.kind == "gauge":
        # The mean less the minimum, the delay monitor's own resolution (see Signal.EVENT_LOOP_DELAY_MEAN).
        rows = {}
        for k, p in mean.streams.items():
            lows = _levels(low, low.streams.get(k, []))
            rows[k] = {t: (v - lows[t]) * _scale(mean) for t, v in _levels(mean, p).items() if t in lows}
        _put(sig, Signal.EVENT_LOOP_DELAY_MEAN, _series(_sum_by_instance(rows), "mean",
                                                        f"{mean.name} - {low.name}", "s"))

    _note_missing(sig, metrics)


def _gc_from_histogram(sig: ServiceSignals, metric: _Metric) -> None:
    per_stream = {k: _intervals(metric, pts) for k, pts in metric.streams.items()}
    gc_rate: dict[tuple, _Rows] = defaultdict(dict)
    cycle_rate: dict[tuple, _Rows] = defaultdict(dict)
    by_time: dict[int, list[_Interval]] = defaultdict(list)
    for (instance, _), ivs in per_stream.items():
        for t, iv in ivs.items():
            if iv.seconds <= 0:
                continue
            gc_rate[instance][t] = gc_rate[instance].get(t, 0.0) + iv.sum / iv.seconds
            cycle_rate[instance][t] = cycle_rate[instance].get(t, 0.0) + iv.count / iv.seconds
            by_time[t].append(iv)
    _put(sig, Signal.GC_SECONDS_PER_SECOND, _series(gc_rate, "mean", metric.name, "s/s"))
    _put(sig, Signal.GC_CYCLES_PER_SECOND, _series(cycle_rate, "mean", metric.name, "1/s"))
    times = sorted(t for t, ivs in by_time.items() if any(iv.count > 0 for iv in ivs))
    if not times:
        return
    t = np.array(times) / 1e9
    merged = [[b for iv in by_time[x] for b in iv.buckets] for x in times]
    if any(merged):
        sig.series[Signal.GC_PAUSE_P50] = Series(t, np.array([_quantile(b, 0.5) for b in merged]), metric.name, "s")
        sig.series[Signal.GC_PAUSE_P99] = Series(t, np.array([_quantile(b, 0.99) for b in merged]), metric.name, "s")
    maxes = [max((iv.max for iv in by_time[x] if iv.max is not None), default=math.nan) for x in times]
    if any(not math.isnan(m) for m in maxes):
        sig.series[Signal.GC_PAUSE_MAX] = Series(t, np.array(maxes), metric.name, "s")


def _put(sig: ServiceSignals, name: str, series: Series | None) -> None:
    if series is not None and name not in sig.series:
        sig.series[name] = series
        sig.missing.pop(name, None)


def _note_missing(sig: ServiceSignals, metrics: dict[str, _Metric]) -> None:
    if not sig.has(Signal.GC_SECONDS_PER_SECOND) and Signal.GC_SECONDS_PER_SECOND not in sig.missing:
        if "cpython.gc.collections" in metrics or sig.runtime == "python":
            sig.missing[Signal.GC_SECONDS_PER_SECOND] = Missing(
                Signal.GC_SECONDS_PER_SECOND,
                "not measurable: CPython exports GC collection counts only (cpython.gc.collections), no pause time",
                enable="record gc.callbacks start/stop into a histogram named cpython.gc.pause.duration (unit s)",
            )
        elif sig.runtime in _GC_HINT:
            sig.missing[Signal.GC_SECONDS_PER_SECOND] = Missing(Signal.GC_SECONDS_PER_SECOND, "not exposed", _GC_HINT[sig.runtime])
    if not sig.has(Signal.CPU_CORES_USED) and Signal.CPU_CORES_USED not in sig.missing:
        sig.missing[Signal.CPU_CORES_USED] = Missing(
            Signal.CPU_CORES_USED, "not exposed",
            enable="export process.cpu.time (runtime or system-metrics instrumentation)",
        )


_GC_HINT = {
    "jvm": "enable the OpenTelemetry Java runtime-telemetry instrumentation (jvm.gc.duration)",
    "node": "enable @opentelemetry/instrumentation-runtime-node (v8js.gc.duration)",
    "dotnet": "on .NET 9+ add the System.Runtime meter (dotnet.gc.pause.time)",
    "go": "set OTEL_GO_X_DEPRECATED_RUNTIME_METRICS=true (process.runtime.go.gc.pause_ns) or scrape go_gc_duration_seconds",
}


def _runtime_from_names(metrics: dict[str, _Metric]) -> str:
    for name in metrics:
        for prefix, runtime in _PREFIX_RUNTIMES:
            if name.startswith(prefix):
                return runtime
    return "unknown"


# -- files ----------------------------------------------------------------------------------------

_HEX = re.compile(r"^[0-9a-fA-F]*$")


def _hex_to_b64(node: Any) -> None:
    """Exemplar ids are hex in OTLP/JSON; protobuf's JSON parser wants base64."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("traceId", "spanId") and isinstance(value, str) and _HEX.match(value):
                node[key] = base64.b64encode(binascii.unhexlify(value)).decode("ascii")
            else:
                _hex_to_b64(value)
    elif isinstance(node, list):
        for item in node:
            _hex_to_b64(item)
