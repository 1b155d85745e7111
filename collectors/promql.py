"""The PromQL catalog: for each `Signal`, the metric families that can carry it, best first.

Every variant is written once, as a function of a `Scope`. A scope decides which series belong
to which service (a `label_replace` that writes the service name into `pf_service`) and which
extra matchers every selector gets. The collector joins one part per scope with `or`, so a
signal costs one query however many services there are.

Names follow shared/docs/signals.md (§2 GC, §3 CPU, §5 server metrics, §6 cache, §7 pools).
Where exporters disagree on unit suffixes (the OTel JS exporter, prometheus-net), both
spellings are listed as separate variants.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from analyzer.model.signals import Signal

SERVICE_LABEL = "pf_service"  # written by our label_replace; never expected on stored series

_RE2_SPECIAL = set("\\.+*?()|[]{}^$")


def re_escape(text: str) -> str:
    """Escape for RE2 (Prometheus regexes); Python's re.escape escapes characters RE2 rejects."""
    return "".join("\\" + c if c in _RE2_SPECIAL else c for c in text)


def quote(text: str) -> str:
    """A PromQL double-quoted string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass(frozen=True)
class Scope:
    """One part of a query: the series it covers and how they are mapped to services."""

    relabel: Callable[[str], str]  # wraps an instant-vector expression, adds pf_service
    matchers: str = ""  # e.g. 'namespace="shop", container="cart"' (no braces)
    rate: str = "5m"
    # Alternative service matchers, one per service label (see `label_select`): a selector is
    # asked once per alternative, joined with `or`, so the server only touches the series of
    # the services asked for, not every series of the metric name.
    select: tuple[str, ...] = ()
    resolution: str = "15s"  # subquery resolution: the scrape interval found in the data

    def _one(self, name: str, extra: tuple[str, ...], alt: str) -> str:
        parts = [p for p in (*extra, alt, self.matchers) if p]
        return f"{name}{{{', '.join(parts)}}}" if parts else name

    def _each(self, fmt: Callable[[str], str], name: str, extra: tuple[str, ...]) -> str:
        alts = [fmt(self._one(name, extra, a)) for a in self.select or ("",)]
        return alts[0] if len(alts) == 1 else "(" + " or ".join(alts) + ")"

    def selectors(self, name: str) -> list[str]:
        """The plain selectors `m` joins with `or`, for functions that need a range of one."""
        return [self._one(name, (), a) for a in self.select or ("",)]

    def m(self, name: str, *extra: str) -> str:
        """A selector for `name` with the variant's own matchers plus the scope's."""
        return self._each(lambda sel: sel, name, extra)

    def r(self, name: str, *extra: str) -> str:
        return self._each(lambda sel: f"rate({sel}[{self.rate}])", name, extra)

    def agg(self, op: str, inner: str, *by: str) -> str:
        labels = ", ".join((SERVICE_LABEL, *by))
        return f"{op} by ({labels}) ({self.relabel(inner)})"

    def sum(self, inner: str, *by: str) -> str:
        return self.agg("sum", inner, *by)

    def max(self, inner: str) -> str:
        return self.agg("max", inner)


def label_map(labels: Iterable[str], services: Iterable[str] | None) -> Callable[[str], str]:
    """pf_service := the first of `labels` whose value is one of `services` (any value if None).

    label_replace leaves the target alone when the regex does not match, so applying the
    labels from lowest to highest precedence makes the highest-precedence match win.
    """
    names = sorted(set(services)) if services is not None else None
    regex = "(.+)" if names is None else "(" + "|".join(re_escape(s) for s in names) + ")"

    def wrap(expr: str) -> str:
        for label in reversed(tuple(labels)):
            expr = f'label_replace({expr}, "{SERVICE_LABEL}", "$1", {quote(label)}, {quote(regex)})'
        return expr

    return wrap


def label_select(labels: Iterable[str], services: Iterable[str] | None) -> tuple[str, ...]:
    """One matcher per label selecting the series of `services` (any service if None); together
    with `label_map` on the same arguments. Names are regex-escaped: they are untrusted input."""
    names = sorted(set(services)) if services is not None else None
    regex = ".+" if names is None else "|".join(re_escape(s) for s in names)
    return tuple(f"{label}=~{quote(regex)}" for label in labels)


def constant_map(service: str) -> Callable[[str], str]:
    """pf_service := `service` for every series (used for a service with its own selector)."""
    return lambda expr: f'label_replace({expr}, "{SERVICE_LABEL}", {quote(service)}, "", "")'


@dataclass(frozen=True)
class Variant:
    key: str  # short human name for the source, e.g. "micrometer jvm_gc_pause_seconds"
    needs: tuple[str, ...]  # __name__ values that must all be present for the service
    build: Callable[[Scope], str]


@dataclass(frozen=True)
class SignalSpec:
    name: str
    unit: str
    variants: tuple[Variant, ...] = field(default_factory=tuple)


def _rate_sum(key: str, name: str, *extra: str, scale: str = "") -> Variant:
    """sum by service of rate(name) [scaled], for counters of seconds, bytes or events."""
    return Variant(key, (name,), lambda s: s.sum(s.r(name, *extra)) + scale)


def _ratio(key: str, num: str, den: str, num_extra: tuple[str, ...] = (), den_extra: tuple[str, ...] = (),
           scale: str = "") -> Variant:
    """sum(rate(num)) / sum(rate(den)) by service: a mean (sum/count) or a hit ratio."""
    return Variant(key, tuple(dict.fromkeys((num, den))),
                   lambda s: f"{s.sum(s.r(num, *num_extra))} / {s.sum(s.r(den, *den_extra))}{scale}")


def _hist_q(key: str, q: float, bucket: str, scale: str = "") -> Variant:
    return Variant(key, (bucket,),
                   lambda s: f"histogram_quantile({q}, {s.sum(s.r(bucket), 'le')}){scale}")


def _gauge(key: str, op: str, name: str, *extra: str, scale: str = "") -> Variant:
    return Variant(key, (name,), lambda s: s.agg(op, s.m(name, *extra)) + scale)


def _delay_beyond_min(key: str, mean: str, minimum: str) -> Variant:
    return Variant(key, (mean, minimum), lambda s: f"{s.agg('avg', s.m(mean))} - {s.agg('avg', s.m(minimum))}")


# cAdvisor: drop the pod sandbox ("POD") and cgroup roots (container=""), and per-CPU series.
_CADVISOR = ('container!=""', 'container!="POD"', 'cpu!~"cpu[0-9]+"')
_CADVISOR_SPEC = ('container!=""', 'container!="POD"')


def _go_gc_cpu_fraction(key: str, available: str) -> Variant:
    """Go's cumulative `go_memstats_gc_cpu_fraction` (client_golang before v1.13) as GC CPU seconds
    per second over the window. The fraction f is GC CPU over the CPU available since the process
    started (GOMAXPROCS x uptime U), so f x U grows by GC CPU / GOMAXPROCS per second: its rate
    (a subquery; a restart resets it like a counter) times the cores available is the window's GC
    CPU. `available` names the per-process series giving those cores."""
    def build(s: Scope) -> str:
        on = "on (job, instance) group_left ()"
        grows = f"{s.m('go_memstats_gc_cpu_fraction')} * {on} (time() - {s.m('process_start_time_seconds')})"
        cores = s.m(available) if available == "go_sched_gomaxprocs_threads" else s.r(available)
        return s.sum(f"rate(({grows})[{s.rate}:{s.resolution}]) * {on} {cores}")
    return Variant(key, ("go_memstats_gc_cpu_fraction", "process_start_time_seconds", available), build)


def _gc_hist(prefix: str, key: str, q: float) -> tuple[Variant, ...]:
    return (_hist_q(key, q, f"{prefix}_bucket"),)


CATALOG: tuple[SignalSpec, ...] = (
    SignalSpec(Signal.GC_SECONDS_PER_SECOND, "s/s", (
        # Go: GC CPU (mostly concurrent mark) is the real cost; STW pause time is the fallback.
        _rate_sum("go runtime/metrics go_cpu_classes_gc_total_cpu_seconds_total",
                  "go_cpu_classes_gc_total_cpu_seconds_total"),
        _go_gc_cpu_fraction("go go_memstats_gc_cpu_fraction x GOMAXPROCS (GC CPU)", "go_sched_gomaxprocs_threads"),
        _go_gc_cpu_fraction("go go_memstats_gc_cpu_fraction x process CPU (GC CPU, lower bound: GOMAXPROCS unknown)",
                            "process_cpu_seconds_total"),
        _rate_sum("go go_gc_duration_seconds (stop-the-world pauses only: a lower bound of GC cost)",
                  "go_gc_duration_seconds_sum"),
        _rate_sum("micrometer jvm_gc_pause_seconds", "jvm_gc_pause_seconds_sum"),
        _rate_sum("otel jvm_gc_duration_seconds (includes concurrent cycles)", "jvm_gc_duration_seconds_sum"),
        _rate_sum("client_java jvm_gc_collection_seconds without *Cycles beans",
                  "jvm_gc_collection_seconds_sum", 'gc!~".*Cycles"'),
        _rate_sum("prom-client nodejs_gc_duration_seconds", "nodejs_gc_duration_seconds_sum"),
        _rate_sum("otel v8js_gc_duration_seconds", "v8js_gc_duration_seconds_sum"),
        _rate_sum("otel-js v8js_gc_duration (no unit suffix)", "v8js_gc_duration_sum"),
        _rate_sum("otel dotnet_gc_pause_time_seconds_total", "dotnet_gc_pause_time_seconds_total"),
        _rate_sum("otel dotnet_gc_pause_time_total (no unit suffix)", "dotnet_gc_pause_time_total"),
        _rate_sum("prometheus-net system_runtime_dotnet_gc_pause_time", "system_runtime_dotnet_gc_pause_time"),
        _rate_sum("otel-contrib process_runtime_dotnet_gc_duration_nanoseconds_total",
                  "process_runtime_dotnet_gc_duration_nanoseconds_total", scale=" / 1e9"),
        # CPython: gc.callbacks timings (analyzer.instrument.gc_pauses), prometheus_client or OTel.
        _rate_sum("gc_pauses python_gc_pause_seconds", "python_gc_pause_seconds_sum"),
        _rate_sum("otel cpython_gc_pause_duration_seconds", "cpython_gc_pause_duration_seconds_sum"),
    )),
    SignalSpec(Signal.GC_CPU_FRACTION, "ratio", (
        _ratio("go runtime/metrics gc / total CPU classes", "go_cpu_classes_gc_total_cpu_seconds_total",
               "go_cpu_classes_total_cpu_seconds_total"),
    )),
    SignalSpec(Signal.GC_PAUSE_P50, "s", (
        # Summary quantiles cannot be aggregated; the worst instance is the honest upper bound.
        _gauge("go go_gc_duration_seconds{quantile=0.5}, worst instance", "max",
               "go_gc_duration_seconds", 'quantile="0.5"'),
        *_gc_hist("jvm_gc_pause_seconds", "micrometer jvm_gc_pause_seconds_bucket", 0.5),
        *_gc_hist("jvm_gc_duration_seconds", "otel jvm_gc_duration_seconds_bucket", 0.5),
        *_gc_hist("nodejs_gc_duration_seconds", "prom-client nodejs_gc_duration_seconds_bucket", 0.5),
        *_gc_hist("v8js_gc_duration_seconds", "otel v8js_gc_duration_seconds_bucket", 0.5),
        *_gc_hist("python_gc_pause_seconds", "gc_pauses python_gc_pause_seconds_bucket", 0.5),
    )),
    SignalSpec(Signal.GC_PAUSE_P99, "s", (
        *_gc_hist("go_gc_pauses_seconds", "go runtime/metrics go_gc_pauses_seconds_bucket", 0.99),
        *_gc_hist("jvm_gc_pause_seconds", "micrometer jvm_gc_pause_seconds_bucket", 0.99),
        *_gc_hist("jvm_gc_duration_seconds", "otel jvm_gc_duration_seconds_bucket", 0.99),
        *_gc_hist("nodejs_gc_duration_seconds", "prom-client nodejs_gc_duration_seconds_bucket", 0.99),
        *_gc_hist("v8js_gc_duration_seconds", "otel v8js_gc_duration_seconds_bucket", 0.99),
        *_gc_hist("python_gc_pause_seconds", "gc_pauses python_gc_pause_seconds_bucket", 0.99),
    )),
    SignalSpec(Signal.GC_PAUSE_MAX, "s", (
        _gauge("go go_gc_duration_seconds{quantile=1}, worst instance", "max",
               "go_gc_duration_seconds", 'quantile="1"'),
        _gauge("micrometer jvm_gc_pause_seconds_max, worst instance", "max", "jvm_gc_pause_seconds_max"),
    )),
    SignalSpec(Signal.GC_CYCLES_PER_SECOND, "1/s", (
        _rate_sum("go go_gc_duration_seconds_count", "go_gc_duration_seconds_count"),
        _rate_sum("micrometer jvm_gc_pause_seconds_count", "jvm_gc_pause_seconds_count"),
        _rate_sum("otel jvm_gc_duration_seconds_count", "jvm_gc_duration_seconds_count"),
        _rate_sum("client_java jvm_gc_collection_seconds_count", "jvm_gc_collection_seconds_count"),
        _rate_sum("prom-client nodejs_gc_duration_seconds_count", "nodejs_gc_duration_seconds_count"),
        _rate_sum("otel v8js_gc_duration_seconds_count", "v8js_gc_duration_seconds_count"),
        _rate_sum("gc_pauses python_gc_pause_seconds_count", "python_gc_pause_seconds_count"),
        _rate_sum("prometheus_client python_gc_collections_total", "python_gc_collections_total"),
        _rate_sum("otel (old system-metrics) process_runtime_cpython_gc_count_total",
                  "process_runtime_cpython_gc_count_total"),
        _rate_sum("otel cpython_gc_collections_total", "cpython_gc_collections_total"),
        _rate_sum("otel dotnet_gc_collections_total", "dotnet_gc_collections_total"),
        _rate_sum("prometheus-net dotnet_collection_count_total", "dotnet_collection_count_total"),
        _rate_sum("otel-contrib process_runtime_dotnet_gc_collections_count_total",
                  "process_runtime_dotnet_gc_collections_count_total"),
    )),
    SignalSpec(Signal.ALLOC_BYTES_PER_SECOND, "B/s", (
        _rate_sum("go go_memstats_alloc_bytes_total", "go_memstats_alloc_bytes_total"),
        _rate_sum("otel go_memory_allocated_bytes_total", "go_memory_allocated_bytes_total"),
        _rate_sum("micrometer jvm_gc_memory_allocated_bytes_total", "jvm_gc_memory_allocated_bytes_total"),
    )),
    SignalSpec(Signal.CPU_CORES_USED, "cores", (
        _rate_sum("process_cpu_seconds_total", "process_cpu_seconds_total"),
        _rate_sum("otel process_cpu_time_seconds_total", "process_cpu_time_seconds_total"),
        _rate_sum("otel jvm_cpu_time_seconds_total", "jvm_cpu_time_seconds_total"),
        _rate_sum("otel dotnet_process_cpu_time_seconds_total", "dotnet_process_cpu_time_seconds_total"),
        _rate_sum("otel process_runtime_cpython_cpu_time_seconds_total",
                  "process_runtime_cpython_cpu_time_seconds_total"),
        Variant("micrometer process_cpu_usage * system_cpu_count", ("process_cpu_usage", "system_cpu_count"),
                lambda s: s.sum(f"{s.m('process_cpu_usage')} * {s.m('system_cpu_count')}")),
        _rate_sum("cadvisor container_cpu_usage_seconds_total", "container_cpu_usage_seconds_total", *_CADVISOR),
    )),
    SignalSpec(Signal.CPU_CORES_AVAILABLE, "cores", (
        Variant("cadvisor container_spec_cpu_quota / container_spec_cpu_period",
                ("container_spec_cpu_quota", "container_spec_cpu_period"),
                lambda s: s.sum(f"{s.m('container_spec_cpu_quota', *_CADVISOR_SPEC)} / "
                                f"{s.m('container_spec_cpu_period', *_CADVISOR_SPEC)}")),
        _gauge("kube-state-metrics kube_pod_container_resource_limits{resource=cpu}", "sum",
               "kube_pod_container_resource_limits", 'resource="cpu"', 'unit="core"'),
        _gauge("go go_sched_gomaxprocs_threads", "sum", "go_sched_gomaxprocs_threads"),
        _gauge("otel jvm_cpu_count", "sum", "jvm_cpu_count"),
        _gauge("micrometer system_cpu_count", "sum", "system_cpu_count"),
        _gauge("otel dotnet_process_cpu_count", "sum", "dotnet_process_cpu_count"),
        Variant("node_exporter cores", ("node_cpu_seconds_total",),
                lambda s: s.agg("count", s.m("node_cpu_seconds_total", 'mode="idle"'))),
    )),
    SignalSpec(Signal.PROCESSES, "processes", (
        # One series per process in every Prometheus client library's process collector.
        _gauge("count of process_start_time_seconds series", "count", "process_start_time_seconds"),
    )),
    SignalSpec(Signal.CPU_THROTTLED_FRACTION, "ratio", (
        _ratio("cadvisor cfs throttled periods / periods", "container_cpu_cfs_throttled_periods_total",
               "container_cpu_cfs_periods_total", _CADVISOR_SPEC, _CADVISOR_SPEC),
    )),
    SignalSpec(Signal.CPU_WAIT_SECONDS_PER_SECOND, "s/s", (
        # Linux PSI: time some task of the container (or host) was runnable but waited for a core.
        _rate_sum("cadvisor container_pressure_cpu_waiting_seconds_total (PSI)",
                  "container_pressure_cpu_waiting_seconds_total", *_CADVISOR_SPEC),
        _rate_sum("node_exporter node_pressure_cpu_waiting_seconds_total (host PSI)",
                  "node_pressure_cpu_waiting_seconds_total"),
    )),
    SignalSpec(Signal.CPU_RUN_QUEUE_SECONDS_PER_SECOND, "s/s", (
        # Run-queue wait of the service's own threads: what it waited for a core others held.
        _rate_sum("process_cpu_wait_seconds_total (analyzer.instrument.core_wait)", "process_cpu_wait_seconds_total"),
        _rate_sum("cadvisor container_cpu_schedstat_runqueue_seconds_total",
                  "container_cpu_schedstat_runqueue_seconds_total", *_CADVISOR_SPEC),
    )),
    SignalSpec(Signal.EVENT_LOOP_LAG, "s", (
        _gauge("prom-client nodejs_eventloop_lag_p99_seconds, worst instance", "max",
               "nodejs_eventloop_lag_p99_seconds"),
        _gauge("prom-client nodejs_eventloop_lag_seconds, worst instance", "max", "nodejs_eventloop_lag_seconds"),
        _gauge("otel nodejs_eventloop_delay_p99_seconds, worst instance", "max",
               "nodejs_eventloop_delay_p99_seconds"),
        _gauge("otel-js nodejs_eventloop_delay_p99 (no unit suffix), worst instance", "max",
               "nodejs_eventloop_delay_p99"),
    )),
    SignalSpec(Signal.EVENT_LOOP_DELAY_MEAN, "s", (
        # monitorEventLoopDelay histograms: the mean less the minimum, which is the timer's own
        # resolution (prom-client's 10 ms by default) when the loop is ever free.
        _delay_beyond_min("prom-client nodejs_eventloop_lag_mean_seconds - _min_seconds, mean of instances",
                          "nodejs_eventloop_lag_mean_seconds", "nodejs_eventloop_lag_min_seconds"),
        _delay_beyond_min("otel nodejs_eventloop_delay_mean_seconds - _min_seconds, mean of instances",
                          "nodejs_eventloop_delay_mean_seconds", "nodejs_eventloop_delay_min_seconds"),
        _gauge("prom-client nodejs_eventloop_lag_seconds (setImmediate), mean of instances", "avg",
               "nodejs_eventloop_lag_seconds"),
    )),
    SignalSpec(Signal.REQUESTS_PER_SECOND, "1/s", (
        _rate_sum("otel http_server_request_duration_seconds_count", "http_server_request_duration_seconds_count"),
        _rate_sum("micrometer http_server_requests_seconds_count", "http_server_requests_seconds_count"),
        _rate_sum("otel (old) http_server_duration_milliseconds_count", "http_server_duration_milliseconds_count"),
        _rate_sum("otel-js http_server_duration_count (no unit suffix)", "http_server_duration_count"),
        _rate_sum("http_request_duration_seconds_count", "http_request_duration_seconds_count"),
        _rate_sum("http_requests_total", "http_requests_total"),
        _rate_sum("prometheus-net http_requests_received_total", "http_requests_received_total"),
        _rate_sum("otel rpc_server_call_duration_seconds_count", "rpc_server_call_duration_seconds_count"),
        _rate_sum("otel (old) rpc_server_duration_milliseconds_count", "rpc_server_duration_milliseconds_count"),
    )),
    SignalSpec(Signal.CACHE_HIT_RATIO, "ratio", (
        _ratio("micrometer cache_gets_total{result=hit} / all", "cache_gets_total", "cache_gets_total",
               ('result="hit"',)),
        _ratio("client_java caffeine_cache_hit_total / caffeine_cache_requests_total",
               "caffeine_cache_hit_total", "caffeine_cache_requests_total"),
        Variant("redis_exporter keyspace hits / (hits + misses)",
                ("redis_keyspace_hits_total", "redis_keyspace_misses_total"),
                lambda s: f"{s.sum(s.r('redis_keyspace_hits_total'))} / ({s.sum(s.r('redis_keyspace_hits_total'))}"
                          f" + {s.sum(s.r('redis_keyspace_misses_total'))})"),
        _ratio("memcached_exporter get hits / gets", "memcached_commands_total", "memcached_commands_total",
               ('command="get"', 'status="hit"'), ('command="get"',)),
    )),
    SignalSpec(Signal.POOL_WAIT_SECONDS, "s", (
        _ratio("otel db_client_connection_wait_time_seconds mean",
               "db_client_connection_wait_time_seconds_sum", "db_client_connection_wait_time_seconds_count"),
        _ratio("hikaricp (micrometer) hikaricp_connections_acquire_seconds mean",
               "hikaricp_connections_acquire_seconds_sum", "hikaricp_connections_acquire_seconds_count"),
        _ratio("otel (old, ms) db_client_connections_wait_time_milliseconds mean",
               "db_client_connections_wait_time_milliseconds_sum",
               "db_client_connections_wait_time_milliseconds_count", scale=" / 1e3"),
        _ratio("hikaricp (native) hikaricp_connection_acquired_nanos mean",
               "hikaricp_connection_acquired_nanos_sum", "hikaricp_connection_acquired_nanos_count", scale=" / 1e9"),
    )),
    SignalSpec(Signal.POOL_PENDING, "requests", (
        _gauge("otel db_client_connection_pending_requests", "sum", "db_client_connection_pending_requests"),
        _gauge("hikaricp (micrometer) hikaricp_connections_pending", "sum", "hikaricp_connections_pending"),
        _gauge("otel (old) db_client_connections_pending_requests", "sum", "db_client_connections_pending_requests"),
        _gauge("hikaricp (native) hikaricp_pending_threads", "sum", "hikaricp_pending_threads"),
    )),
)

# Families that identify an application (as opposed to an exporter whose `job` is the exporter:
# cAdvisor, kube-state-metrics, node_exporter, redis/memcached exporters). Only these name
# services when none are given.
INFRA_PREFIXES = ("container_", "kube_", "node_", "redis_", "memcached_")


def all_names() -> list[str]:
    """Every __name__ the catalog can use, plus the runtime markers, for discovery."""
    names = {n for spec in CATALOG for v in spec.variants for n in v.needs}
    names.update(RUNTIME_MARKERS)
    return sorted(names)


# Which families tell the runtime. Checked in order; first match wins.
RUNTIME_PREFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("go", ("go_",)),
    ("jvm", ("jvm_", "hikaricp_")),
    ("node", ("nodejs_", "v8js_")),
    ("dotnet", ("dotnet_", "process_runtime_dotnet_", "system_runtime_")),
    ("python", ("python_", "cpython_", "process_runtime_cpython_")),
)
# Present on every process exposing that runtime, even without a catalog signal.
RUNTIME_MARKERS = ("go_info", "go_goroutines", "jvm_info", "jvm_threads_live_threads", "jvm_memory_used_bytes",
                   "nodejs_version_info", "python_info", "dotnet_total_memory_bytes")


def runtime_of(names: Iterable[str]) -> str:
    names = list(names)
    for runtime, prefixes in RUNTIME_PREFIXES:
        if any(n.startswith(prefixes) for n in names):
            return runtime
    if any(n.startswith("process_") for n in names):
        return "native"  # a process collector without a known runtime: C, C++, Rust, ...
    return "unknown"
