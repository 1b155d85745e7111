"""Ranking entry operations over the whole window from span-metrics in Prometheus.

The OpenTelemetry Collector's spanmetrics connector counts every span and puts its duration in a
histogram, per `service_name`, `span_name`, `span_kind` and `status_code`
(shared/docs/signals.md §5.1). For a trace store that aggregates nothing itself (Jaeger, Zipkin, a
Tempo without TraceQL metrics) that is the cheap whole-window view the sample is planned from:
entry (SERVER, CONSUMER) operations by count x p50, the window's p95 as the tail threshold, and
the counts the sample's weights are scaled to.

Names, best first: `traces_span_metrics_calls_total` with `traces_span_metrics_duration_
{milliseconds,seconds}_bucket` (the connector since v0.109; seconds behind a feature gate), then the
older connector's `calls_total` / `duration_{milliseconds,seconds}_bucket`. Four requests: which
names exist, then at the window's end `sum by (service_name, span_name) (increase(calls[window]))`
and `histogram_quantile(q, sum by (service_name, span_name, le) (increase(bucket[window])))` for p50
and p95 (p99 too), each selector carrying the services' matcher, sent as POST (collectors/prometheus.py).
"""

from __future__ import annotations

import math

from collectors.http_auth import connect
from collectors.prometheus import Collector, PromConfig, QueryFailed, matrix_points
from collectors.promql import label_select, quote, re_escape
from collectors.store_pull import Ranked, by_time

# (calls counter, duration histogram buckets, nanoseconds per histogram unit)
FAMILIES = (
    ("traces_span_metrics_calls_total", "traces_span_metrics_duration_milliseconds_bucket", 1e6),
    ("traces_span_metrics_calls_total", "traces_span_metrics_duration_seconds_bucket", 1e9),
    ("calls_total", "duration_milliseconds_bucket", 1e6),
    ("calls_total", "duration_seconds_bucket", 1e9),
)
ENTRY = 'span_kind=~"SPAN_KIND_SERVER|SPAN_KIND_CONSUMER"'
BY = "service_name, span_name"


class SpanMetricsUnavailable(Exception):
    """No span-metrics for these services in the window, or Prometheus refused; one line."""


def rank(url: str, config: PromConfig, start_s: float, end_s: float, services: list[str] | None) -> list[Ranked]:
    """Entry operations of `services` (all if None) over [start_s, end_s], by their time (count x p50)."""
    run = Collector(url, connect(url, config), config, None)
    extra = config.extra_matchers.strip().strip("{}").strip()
    (service,) = label_select(("service_name",), services)
    matchers = ", ".join(m for m in (ENTRY, service, extra) if m)
    window = f"{max(1, math.ceil(end_s - start_s))}s"
    names = {n for pair in FAMILIES for n in pair[:2]}
    present = {m.get("__name__") for m, _ in _ask(run, (
        f'group by (__name__) ({{__name__=~{quote("|".join(re_escape(n) for n in sorted(names)))}, {matchers}}})'),
        start_s, end_s, max(60.0, math.ceil((end_s - start_s) / 100)))}
    family = next((f for f in FAMILIES if f[0] in present and f[1] in present), None)
    if family is None:
        raise SpanMetricsUnavailable("no spanmetrics connector series (traces_span_metrics_calls_total and "
                                     "traces_span_metrics_duration_*_bucket) for entry spans in the window")
    calls, buckets, unit_ns = family
    counts = _by_operation(run, f"sum by ({BY}) (increase({calls}{{{matchers}}}[{window}]))", end_s)
    quantiles = {q: _by_operation(run, f"histogram_quantile({q}, sum by ({BY}, le) "
                                       f"(increase({buckets}{{{matchers}}}[{window}])))", end_s)
                 for q in (0.5, 0.95, 0.99)}
    out = []
    for key, count in counts.items():
        q = [quantiles[p].get(key) for p in (0.5, 0.95, 0.99)]
        if round(count) <= 0 or any(v is None for v in q):
            continue
        # The p95 to the microsecond, as the stores' minDuration takes it.
        out.append(Ranked(key[0], key[1], round(count), q[0] * unit_ns, float(round(q[1] * unit_ns) // 1000 * 1000),
                          q[2] * unit_ns))
    return by_time(out)


def _ask(run: Collector, query: str, t0: float, t1: float, step: float) -> list[tuple[dict, object]]:
    try:
        return run.post(query, t0, t1, step, "span-metrics")
    except QueryFailed as e:
        raise SpanMetricsUnavailable(f"Prometheus refused the span-metrics query: {e.reason}") from None


def _by_operation(run: Collector, query: str, at_s: float) -> dict[tuple[str, str], float]:
    """{(service, span name): the finite value at `at_s`} of an instant-like query."""
    out = {}
    for metric, values in _ask(run, query, at_s, at_s, 1.0):
        v = matrix_points(values)[1]
        if v.size and math.isfinite(float(v[-1])):
            out[(str(metric.get("service_name", "")), str(metric.get("span_name", "")))] = float(v[-1])
    return out


__all__ = ["rank", "SpanMetricsUnavailable"]
