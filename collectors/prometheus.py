"""Fill `Signals` from a Prometheus-compatible query API (Prometheus, Thanos, Mimir, VictoriaMetrics).

Two phases, and the request count depends on the catalog, not on the number of services:

1. Discovery: one range query at a coarse step,
   `count by (__name__, pf_service) ({__name__=~"<every catalog name>"})`, tells which
   metric families each service exposes, hence its runtime and which variant of each signal
   to ask for. With no services given, the services are the values found on application
   families (exporter jobs such as cAdvisor's are not services).
2. One aggregated range query per (signal, variant) that some service needs:
   `sum by (pf_service) (...)` over all services at once, split client-side. A window that
   would exceed the server's 11,000 points per series is split into several requests and
   stitched.

A series belongs to service S when one of `service_labels` (service_name, service, job by
default, first wins) equals S, or, for a service with a configured selector, when it matches
that selector. Both are done server-side with label_replace, so only aggregates travel.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from analyzer.model.signals import Missing, Series, Signal, Signals
from collectors.http_auth import Transport, connect
from collectors.http_client import HttpClient, Response, TransportError
from collectors.promql import (
    CATALOG,
    INFRA_PREFIXES,
    SERVICE_LABEL,
    Scope,
    SignalSpec,
    Variant,
    all_names,
    constant_map,
    label_map,
    label_select,
    quote,
    re_escape,
    runtime_of,
)

MAX_POINTS = 11_000  # Prometheus rejects a range query with more points per series than this
Progress = Callable[[int, int, str], None]


@dataclass
class PromConfig(Transport):
    """What to query and how. Secrets are not here: see collectors.http_auth."""

    # service -> PromQL selector, e.g. {"cart": '{namespace="shop", container="cart"}'}
    selectors: dict[str, str] = field(default_factory=dict)
    # labels naming the service on a series, highest precedence first
    service_labels: tuple[str, ...] = ("service_name", "service", "job")
    step: float | None = None  # seconds; None picks the finest step that fits one request
    min_step: float = 15.0  # floor for the automatic step when the scrape interval is not known
    # Range of rate(), passed to the server as written; "" follows the data: the step, and at
    # least RATE_SCRAPES scrape intervals (found in the data), so window means are exact.
    rate_window: str = ""
    extra_matchers: str = ""  # added to every selector, e.g. 'cluster="eu-1"' on Thanos/Mimir
    max_points: int = MAX_POINTS
    # Points per series the automatic step aims for: 2,016 is one every 5 minutes over 7 days,
    # the resolution the default 5m rate() window carries anyway, at a fifth of the server's
    # work of the finest step that fits under max_points.
    target_points: int = 2016
    discovery_points: int = 24  # instants sampled by the discovery query
    max_requests: int = 1000  # per run; a plan that needs more is refused before the first query


class PrometheusError(Exception):
    """Prometheus could not be used at all. The message is one line naming the URL."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = _redact(url)
        self.reason = " ".join(reason.split())
        super().__init__(self._message())

    def _message(self) -> str:
        return f"Prometheus at {self.url} rejected the discovery query: {self.reason}"


class PrometheusUnreachable(PrometheusError):
    """Connection refused, DNS failure, TLS failure, timeout, or 5xx after all retries."""

    def _message(self) -> str:
        return f"cannot reach Prometheus at {self.url}: {self.reason}"


class PrometheusRejected(PrometheusError):
    """The server answered but refused discovery (401/403, wrong path, not a Prometheus API)."""


class NotPrometheus(PrometheusRejected):
    """A web server answered with an HTML page: the URL is not a Prometheus query API."""

    def _message(self) -> str:
        return f"this URL does not look like a Prometheus query API ({self.reason}): {self.url}"


def _redact(url: str) -> str:
    """The URL without user:password@, so messages and logs never carry a secret."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


# What to turn on, per signal and runtime ("*" = any runtime).
ENABLE: dict[str, dict[str, str]] = {
    Signal.GC_SECONDS_PER_SECOND: {
        "go": "client_golang's Go collector (go_gc_duration_seconds, on by default with promhttp); for GC CPU add "
              "collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsGC) (go_cpu_classes_gc_total_cpu_seconds_total)",
        "jvm": "Micrometer JvmGcMetrics (jvm_gc_pause_seconds), client_java JvmMetrics (jvm_gc_collection_seconds) "
               "or the OpenTelemetry Java agent runtime metrics (jvm.gc.duration)",
        "node": "prom-client collectDefaultMetrics() (nodejs_gc_duration_seconds) or "
                "@opentelemetry/instrumentation-runtime-node (v8js.gc.duration)",
        "dotnet": "the System.Runtime meter (.NET 9+, dotnet.gc.pause.time) exported through OpenTelemetry",
        "python": "no library exports it: call `from analyzer.instrument import gc_pauses; gc_pauses.install()` "
                  "once in the service (python_gc_pause_seconds / cpython.gc.pause.duration from gc.callbacks); "
                  "python_gc_collections_total (gc_cycles_per_second) is only a proxy",
        "*": "the runtime's GC metrics (shared/docs/signals.md §2), or a selector that matches them",
    },
    Signal.GC_CPU_FRACTION: {
        "go": "collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsGC) in client_golang "
              "(go_cpu_classes_gc_total_cpu_seconds_total, go_cpu_classes_total_cpu_seconds_total)",
        "*": "only Go's runtime/metrics CPU classes give a GC CPU fraction",
    },
    Signal.GC_PAUSE_P99: {
        "go": "client_golang runtime metrics /gc/pauses:seconds (go_gc_pauses_seconds histogram); "
              "the default go_gc_duration_seconds summary has no p99",
        "jvm": "Micrometer percentile histograms for jvm.gc.pause "
               "(management.metrics.distribution.percentiles-histogram.jvm.gc.pause=true) or OTel jvm.gc.duration",
        "*": "a GC pause histogram for the runtime (shared/docs/signals.md §2)",
    },
    Signal.CPU_CORES_USED: {
        "*": "the process collector (process_cpu_seconds_total) of the Prometheus client library, or cAdvisor "
             "(container_cpu_usage_seconds_total) with a selector for the container",
    },
    Signal.CPU_CORES_AVAILABLE: {
        "*": "a CPU limit (cAdvisor container_spec_cpu_quota or kube-state-metrics "
             "kube_pod_container_resource_limits, via a selector), or the runtime's CPU count "
             "(go_sched_gomaxprocs_threads, jvm_cpu_count, system_cpu_count, dotnet_process_cpu_count)",
    },
    Signal.CPU_THROTTLED_FRACTION: {
        "*": "cAdvisor CFS counters (container_cpu_cfs_periods_total, container_cpu_cfs_throttled_periods_total) "
             "matched with a selector such as {namespace=\"...\", container=\"...\"}; only containers with a CPU "
             "limit are throttled",
    },
    Signal.PROCESSES: {
        "*": "the Prometheus client library's process collector (process_start_time_seconds), one series per "
             "process: CPython and Node use about one core per process",
    },
    Signal.CPU_WAIT_SECONDS_PER_SECOND: {
        "*": "CPU pressure (Linux PSI): cAdvisor container_pressure_cpu_waiting_seconds_total with a selector for "
             "the container, or node_exporter's node_pressure_cpu_waiting_seconds_total for the host; it tells "
             "waiting for a core another process holds from waiting on I/O or locks",
    },
    Signal.CPU_RUN_QUEUE_SECONDS_PER_SECOND: {
        "*": "the service's own run-queue wait: analyzer.instrument.core_wait (process_cpu_wait_seconds_total) or "
             "cAdvisor container_cpu_schedstat_runqueue_seconds_total; it tells the service's CPU work from waiting "
             "for a core other processes hold",
    },
    Signal.EVENT_LOOP_LAG: {
        "node": "prom-client collectDefaultMetrics() (nodejs_eventloop_lag_p99_seconds) or "
                "@opentelemetry/instrumentation-runtime-node (nodejs.eventloop.delay.p99)",
        "*": "only Node.js has an event loop metric",
    },
    Signal.REQUESTS_PER_SECOND: {
        "*": "HTTP server metrics: OTel http.server.request.duration, Micrometer http.server.requests, "
             "or a request counter (http_requests_total)",
    },
    Signal.CACHE_HIT_RATIO: {
        "jvm": "Micrometer cache metrics (cache_gets_total{result}) or client_java's Caffeine collector",
        "*": "redis_exporter (redis_keyspace_hits_total/misses) or memcached_exporter, mapped to the service "
             "with a selector; OTel has no cache hit/miss convention",
    },
    Signal.POOL_WAIT_SECONDS: {
        "jvm": "HikariCP metrics through Micrometer (hikaricp_connections_acquire_seconds) or OTel "
               "db.client.connection.wait_time",
        "*": "OTel db.client.connection.wait_time from the database client instrumentation",
    },
    Signal.POOL_PENDING: {
        "jvm": "HikariCP metrics (hikaricp_connections_pending) or OTel db.client.connection.pending_requests",
        "*": "OTel db.client.connection.pending_requests from the database client instrumentation",
    },
}

_PYTHON_NO_GC_TIME = ("CPython exposes no GC-duration metric: prometheus_client (python_gc_collections_total) "
                      "and OpenTelemetry (cpython.gc.*) count collections and objects, not time")
_GC_TIME_SIGNALS = {Signal.GC_SECONDS_PER_SECOND, Signal.GC_PAUSE_P50, Signal.GC_PAUSE_P99, Signal.GC_PAUSE_MAX}


def enable_hint(signal: str, runtime: str) -> str:
    # GC-family signals without their own entry share the GC advice.
    hints = ENABLE.get(signal) or (ENABLE[Signal.GC_SECONDS_PER_SECOND] if signal.startswith(("gc_", "alloc_")) else {})
    return hints.get(runtime) or hints.get("*", "")


RATE_SCRAPES = 4  # samples a rate() range should hold at least (Prometheus' own advice)
# Families that tell a target's scrape interval: `up` (every scraped target) and the counters
# nearly every service has (backfilled data has no `up`).
INTERVAL_FAMILIES = ("up", "process_cpu_seconds_total", "process_cpu_time_seconds_total", "jvm_cpu_time_seconds_total",
                     "http_server_request_duration_seconds_count", "http_server_requests_seconds_count",
                     "http_requests_total", "container_cpu_usage_seconds_total")


def choose_step(start: float, end: float, config: PromConfig, scrape: float | None = None) -> float:
    """The configured step, or the finest step >= the floor giving at most `target_points` points
    (never more than max_points, so one request per query suffices). The floor is `min_step`,
    or two scrape intervals when the data's interval is known and shorter: a 2-minute capture
    scraped every second gets a point every 2 s, not 8 points."""
    if config.step:
        return float(config.step)
    floor = config.min_step if not scrape else min(config.min_step, 2 * scrape)
    points = max(2, min(config.target_points, config.max_points))
    return float(max(floor, math.ceil((end - start) / (points - 1))))


def chunks(t0: float, t1: float, step: float, max_points: int) -> list[tuple[float, float]]:
    """Request windows on the grid t0 + k*step, each at most max_points, non-overlapping."""
    n = int(math.floor((t1 - t0) / step + 1e-9)) + 1
    return [(t0 + i * step, t0 + (min(i + max_points, n) - 1) * step) for i in range(0, n, max_points)]


_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def rate_range(rate_window: str, step: float, scrape: float | None = None) -> str:
    """The rate() range: never shorter than the step, or samples between steps would be skipped
    and a spike could vanish. A duration we cannot parse goes to the server as written.

    Automatic ("") ranges tile the window: range = step, so the mean of the points is the
    counter's increase over the window divided by its length (rate() handles resets), whatever
    the window's length; widened to RATE_SCRAPES scrape intervals (15 s when the interval is
    unknown) so each range holds enough samples. A fixed 5m range would report a core that was
    busy for a 150 s capture as half a core at best."""
    if not rate_window.strip():
        return f"{math.ceil(max(step, RATE_SCRAPES * (scrape or 15.0)))}s"
    m = _DURATION.match(rate_window.strip())
    if m and int(m.group(1)) * _UNIT_S[m.group(2)] < step:
        return f"{math.ceil(step)}s"
    return rate_window


def _selector_body(selector: str) -> str:
    body = selector.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1].strip()
    if not body or "{" in body or "}" in body:
        raise ValueError(f"selector {selector!r} must look like {{label=\"value\", ...}}")
    return body


class QueryFailed(Exception):
    """One query got no usable answer; the message is one redacted line. `html`: the answer was
    a web page, not an API response."""

    def __init__(self, reason: str, status: int | None = None, html: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.status, self.html = reason, status, html


def _html_page(body: bytes) -> bool:
    return body[:512].lstrip().lower().startswith((b"<!doctype html", b"<html"))


_LIMIT_HINT = {
    "deadline": " (raise it with --timeout)",
    "too_large": " (raise it with max_response_mb in the config's [prometheus] table, or narrow the window)",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(_CONTROL.sub(" ", text).split())[:limit]


def _http_reason(resp: Response, redact: Callable[[str], str]) -> str:
    """'HTTP 400 bad_data: ...' from a Prometheus error body, or its first bytes."""
    text = resp.body[:4096].decode("utf-8", "replace")
    detail = text[:200]
    try:
        doc = json.loads(text)
        if isinstance(doc, dict):
            detail = f"{doc.get('errorType', '')}: {doc.get('error', '')}".strip(": ")
    except (ValueError, RecursionError):
        pass
    return _one_line(redact(f"HTTP {resp.status} {detail}"))


def _matrix(body: bytes) -> list[tuple[dict, object]]:
    """(metric, values) per row of a query_range answer; QueryFailed when it is not one."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:  # not JSON (wrong path, an HTML login page), or nested too deep
        raise QueryFailed(f"the answer is not a Prometheus API response ({_one_line(str(exc), 120)})") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    rows = data.get("result") if isinstance(data, dict) else None
    if not isinstance(doc, dict) or doc.get("status") != "success" or not isinstance(rows, list):
        raise QueryFailed("the answer is not a Prometheus query_range response (no data.result list)")
    out = []
    for row in rows:
        metric = row.get("metric") if isinstance(row, dict) else None
        if not isinstance(metric, dict):
            raise QueryFailed(f"malformed answer: a result row is {type(row).__name__}, not a {{metric, values}} object")
        out.append((metric, row.get("values")))
    return out


def matrix_points(values: object) -> tuple[np.ndarray, np.ndarray]:
    """[[t, "v"], ...] -> (t, v) float arrays, converted by numpy in C, not per point in Python."""
    if not isinstance(values, list):
        raise QueryFailed("malformed answer: a row's values are not a list")
    if not values:
        return np.empty(0), np.empty(0)
    try:
        a = np.array(values, dtype=object)
        if a.ndim != 2 or a.shape[1] != 2:
            raise ValueError(f"shape {a.shape}")
        return a[:, 0].astype(np.float64), a[:, 1].astype(np.float64)
    except (ValueError, TypeError, OverflowError) as exc:
        raise QueryFailed(f"malformed answer: values are not [time, \"value\"] pairs ({_one_line(str(exc), 80)})") from None


@dataclass
class _Plan:
    spec: SignalSpec
    variant: Variant
    query: str


class Collector:
    """The query_range requests of one run against one Prometheus, counted for the progress line;
    span_metrics.py asks through it too, so both share the transport, limits and error wording."""

    def __init__(self, url: str, client: HttpClient, config: PromConfig, progress: Progress | None):
        self.url, self.client, self.config, self.progress = url, client, config, progress
        self.sent = 0
        self.total = 1

    def _tick(self, label: str) -> None:
        self.sent += 1
        if self.progress:
            self.progress(self.sent, max(self.total, self.sent), label)

    def post(self, query: str, t0: float, t1: float, step: float, label: str) -> list[tuple[dict, object]]:
        """One query_range request, sent as a form body (a long query in a GET URL hits the 8 KB
        limit of proxies in front of Thanos and Mimir, which answer 414)."""
        form = {"query": query, "start": repr(t0), "end": repr(t1), "step": f"{step:g}",
                "timeout": f"{self.config.timeout:g}"}
        try:
            resp = self.client.request("POST", "/api/v1/query_range", form=form)
        except TransportError as exc:
            raise QueryFailed(exc.message + _LIMIT_HINT.get(exc.kind, "")) from None
        finally:
            self._tick(label)
        if _html_page(resp.body):
            raise QueryFailed(f"got an HTML page, HTTP {resp.status}", resp.status, html=True)
        if resp.status != 200:
            raise QueryFailed(_http_reason(resp, self.client.redact), resp.status)
        return _matrix(resp.body)

    def range_query(self, query: str, t0: float, t1: float, step: float, label: str) -> dict[str, tuple]:
        """(t, v) arrays per pf_service value, stitched across chunks."""
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for cs, ce in chunks(t0, t1, step, self.config.max_points):
            for metric, values in self.post(query, cs, ce, step, label):
                svc = metric.get(SERVICE_LABEL)
                if isinstance(svc, str) and svc:
                    parts.setdefault(svc, []).append(matrix_points(values))
        return {svc: (np.concatenate([t for t, _ in p]), np.concatenate([v for _, v in p])) if len(p) > 1 else p[0]
                for svc, p in parts.items()}

    def scopes(self, default_services: list[str] | None, selectors: dict[str, str], step: float,
               scrape: float | None = None) -> list[Scope]:
        extra = self.config.extra_matchers.strip().strip("{}").strip()
        rate = rate_range(self.config.rate_window, step, scrape)
        res = f"{max(1, math.ceil(scrape or 15.0))}s"
        # Selector services first: with plain `or`, an earlier part wins for the same pf_service.
        parts = [Scope(constant_map(svc), ", ".join(p for p in (body, extra) if p), rate, resolution=res)
                 for svc, body in sorted(selectors.items())]
        if default_services is None or default_services:
            labels = self.config.service_labels
            parts.append(Scope(label_map(labels, default_services), extra, rate,
                               select=label_select(labels, default_services), resolution=res))
        return parts

    def discover(self, scopes: list[Scope], start: float, end: float) -> dict[str, set[str]]:
        names = quote("|".join(re_escape(n) for n in all_names()))
        query = " or ".join(f"(count by (__name__, {SERVICE_LABEL}) ({s.relabel(s.m('', f'__name__=~{names}'))}))"
                            for s in scopes)
        step = max(self.config.min_step, math.ceil((end - start) / max(1, self.config.discovery_points)))
        t0 = end - math.floor((end - start) / step) * step  # include `end`: the newest series count most
        try:
            rows = self.post(query, t0, end, step, "discovery")
        except QueryFailed as exc:
            server_side = (exc.status or 0) >= 500
            no_answer = exc.status is None and not _is_shape(exc)
            if exc.html:
                raise NotPrometheus(f"{self.url.rstrip('/')}/api/v1/query_range", exc.reason) from None
            cls = PrometheusUnreachable if server_side or no_answer else PrometheusRejected
            raise cls(self.url, exc.reason) from None
        found: dict[str, set[str]] = {}
        for metric, _ in rows:
            svc, name = metric.get(SERVICE_LABEL), metric.get("__name__")
            if isinstance(svc, str) and svc and isinstance(name, str) and name:
                found.setdefault(svc, set()).add(name)
        return found


    def scrape_interval(self, scopes: list[Scope], start: float, end: float) -> float | None:
        """The longest scrape interval among the targets exposing catalog series, from the samples
        of each target's fullest series over the last part of the window (a series that appeared
        mid-window does not count as a slow scrape); None when it cannot be told (the caller
        falls back to min_step). One instant query."""
        span = max(1.0, min(end - start, 600.0))
        # One family at a time, joined with `or`: count_over_time drops __name__, so a regex over
        # several families would give series with equal label sets, which PromQL rejects.
        counts = " or ".join(f"count_over_time({sel}[{math.ceil(span)}s])"
                             for name in INTERVAL_FAMILIES for s in scopes for sel in s.selectors(name))
        query = f"min(max by (job, instance) ({counts}))"
        try:
            rows = self.post(query, end, end, 1.0, "scrape interval")
            count = float(matrix_points(rows[0][1])[1][0]) if rows else 0.0
        except (QueryFailed, IndexError):
            return None
        return span / (count - 1) if count >= 2 else None


def _is_shape(exc: QueryFailed) -> bool:
    """A 200 whose body is not a query_range answer: the URL is not a Prometheus API."""
    return exc.reason.startswith(("the answer is not", "malformed answer"))


_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check(config: PromConfig) -> None:
    """Refuse settings that cannot give a sensible plan; ValueError names the setting."""
    step = config.step
    if step is not None and not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise ValueError(f"--step must be a positive number of seconds, not {step!r}")
    if not (isinstance(config.timeout, (int, float)) and math.isfinite(config.timeout) and config.timeout > 0):
        raise ValueError(f"--timeout must be a positive number of seconds, not {config.timeout!r}")
    if not isinstance(config.retries, int) or isinstance(config.retries, bool) or not 0 <= config.retries <= 20:
        raise ValueError(f"--retries must be a whole number from 0 to 20, not {config.retries!r}")
    if not isinstance(config.max_requests, int) or config.max_requests < 2:
        raise ValueError(f"max_requests must be a whole number of at least 2, not {config.max_requests!r}")
    bad = [label for label in config.service_labels if not _LABEL_NAME.match(str(label))]
    if bad:
        raise ValueError(f"service_labels: {bad[0]!r} is not a Prometheus label name")


def _requests_per_query(start: float, end: float, step: float, max_points: int) -> int:
    """How many requests one query takes over the window (`chunks` without building them)."""
    t0, t1 = math.ceil(start / step) * step, math.floor(end / step) * step
    points = max(1, math.floor((t1 - t0) / step + 1e-9) + 1)
    return math.ceil(points / max_points)


def _check_plan(total: int, per_query: int, start: float, end: float, step: float, config: PromConfig) -> None:
    if total <= config.max_requests:
        return
    raise ValueError(
        f"the plan needs {total:,} requests ({per_query:,} per query: step {step:g} s over {end - start:,.0f} s is "
        f"more than {config.max_points:,} points per request), over the cap of {config.max_requests:,} "
        f"requests per run; use a coarser --step or a shorter window, or raise max_requests in the config's "
        f"[prometheus] table")


def _first_applicable(spec: SignalSpec, names: set[str]) -> Variant | None:
    return next((v for v in spec.variants if set(v.needs) <= names), None)


def collect(url: str, services: list[str] | None, start: float, end: float,
            config: PromConfig | None = None, progress: Progress | None = None) -> Signals:
    """Signals for `services` (all discovered ones if None) over [start, end] (unix seconds).

    Raises PrometheusUnreachable / PrometheusRejected when discovery cannot run; any later
    failure becomes missing evidence for that signal (ServiceSignals.missing and
    Signals.failures), never an exception.
    """
    config = config or PromConfig()
    if end <= start:
        raise ValueError("end must be after start")
    check(config)
    step = choose_step(start, end, config)
    per_query = _requests_per_query(start, end, step, config.max_points)
    _check_plan(1 + per_query, per_query, start, end, step, config)
    selectors = {svc: _selector_body(sel) for svc, sel in config.selectors.items()}
    if services is not None:
        selectors = {s: b for s, b in selectors.items() if s in services}
        if not services:
            return Signals()
    run = Collector(url, connect(url, config), config, progress)

    default = None if services is None else sorted(set(services) - set(selectors))
    families = run.discover(run.scopes(default, selectors, 0.0), start, end)
    if services is None:
        services = sorted({s for s, names in families.items()
                           if s in selectors or any(not n.startswith(INFRA_PREFIXES) for n in names)}
                          | set(selectors))
        # `default` stays None: queries match any service value ("(.+)") and keep the same size
        # however many services were found; rows of non-services (exporter jobs) are dropped.

    signals = Signals()
    for svc in services:
        signals.service(svc).runtime = runtime_of(families.get(svc, ()))

    # Plan: per signal, each service asks for its best applicable variant; one query per variant,
    # covering only the services that need it (so the server never evaluates, say, every
    # cAdvisor series in the cluster for services that expose their own process metrics).
    scrape = run.scrape_interval(run.scopes(default, selectors, 0.0), start, end)
    if scrape is not None and not config.step:  # a finer floor: two scrape intervals
        step = choose_step(start, end, config, scrape)
        per_query = _requests_per_query(start, end, step, config.max_points)
    t0, t1 = math.ceil(start / step) * step, math.floor(end / step) * step
    if t1 < t0:
        t0 = t1 = end
    needers: dict[tuple[str, str], tuple[SignalSpec, Variant, list[str]]] = {}
    for spec in CATALOG:
        for svc in services:
            v = _first_applicable(spec, families.get(svc, set()))
            if v is not None:
                needers.setdefault((spec.name, v.key), (spec, v, []))[2].append(svc)
    plans: dict[tuple[str, str], _Plan] = {}
    for key, (spec, v, svcs) in needers.items():
        by_label = sorted(s for s in svcs if s not in selectors)
        scope_default = None if (default is None and by_label) else by_label
        scopes = run.scopes(scope_default, {s: selectors[s] for s in svcs if s in selectors}, step, scrape)
        plans[key] = _Plan(spec, v, " or ".join(f"({v.build(s)})" for s in scopes))
    _check_plan(run.sent + len(plans) * per_query, per_query, start, end, step, config)
    run.total = run.sent + len(plans) * per_query

    results: dict[tuple[str, str], dict[str, tuple] | str] = {}
    for key, plan in plans.items():
        try:
            results[key] = run.range_query(plan.query, t0, t1, step, plan.spec.name)
        except QueryFailed as exc:
            reason = f"query failed: {exc.reason}"
            results[key] = reason
            signals.failures.append(Missing(plan.spec.name, reason, query=plan.query))
    signals.queries = run.sent

    where = " or ".join(config.service_labels)
    for svc in services:
        ss = signals.service(svc)
        names = families.get(svc, set())
        for spec in CATALOG:
            if names:
                _assign(ss, spec, names, plans, results)
            else:
                how = f"its selector {config.selectors[svc]}" if svc in selectors else f"{where} = {svc!r}"
                ss.missing[spec.name] = Missing(
                    spec.name, f"service not found: no series matching {how} in the window",
                    enable="check the service name, or map it with a selector (PromConfig.selectors)")
    return signals


def _assign(ss, spec: SignalSpec, names: set[str], plans: dict, results: dict) -> None:
    """The first variant with data for this service wins; otherwise record why it is missing."""
    failed: Missing | None = None
    for v in spec.variants:
        res = results.get((spec.name, v.key))
        if res is None:
            continue
        query = plans[(spec.name, v.key)].query
        if isinstance(res, str):
            if set(v.needs) <= names and failed is None:
                failed = Missing(spec.name, res, query=query)
            continue
        data = res.get(ss.service)
        if data is not None and data[0].size:
            t, val = data
            order = np.argsort(t, kind="stable")
            ss.series[spec.name] = Series(t=t[order], v=val[order], source=query, unit=spec.unit)
            return
        if set(v.needs) <= names and failed is None:
            failed = Missing(spec.name, "no data in the window (the series exist but the query returned nothing)",
                             enable=enable_hint(spec.name, ss.runtime), query=query)
    if failed is not None:
        ss.missing[spec.name] = failed
        return
    if ss.runtime == "python" and spec.name in _GC_TIME_SIGNALS:
        ss.missing[spec.name] = Missing(spec.name, _PYTHON_NO_GC_TIME,
                                        enable=ENABLE[Signal.GC_SECONDS_PER_SECOND]["python"])
        return
    looked = sorted({n for v in spec.variants for n in v.needs})
    shown = ", ".join(looked[:6]) + (f" (+{len(looked) - 6} more)" if len(looked) > 6 else "")
    ss.missing[spec.name] = Missing(
        spec.name, f"not exposed: none of {shown} found for this service",
        enable=enable_hint(spec.name, ss.runtime))


__all__ = ["PromConfig", "PrometheusError", "PrometheusUnreachable", "PrometheusRejected", "NotPrometheus", "collect", "check",
           "choose_step", "chunks", "MAX_POINTS"]
