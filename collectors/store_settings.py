"""The config tables of the trace sources: `[sources.span_table]`, `[sources.tempo]`,
`[sources.jaeger]`, `[sources.zipkin]`, `[sources.clickhouse]`.

Registered with the config schema (analyzer/config_schema.py `add_source`) when this module is
imported, which `analyzer.config` and `analyzer.config_docs` do, so a config file is validated and
documented the same whatever else has been imported.
"""

from __future__ import annotations

from analyzer.config_schema import DURATION, URL, Boolean, Key, Mapped, Number, Table, Text, add_source
from collectors.span_tables import UNITS

_COLUMN = Text(form="a column name")

SPAN_TABLE = Table({
    **{k: Key(_COLUMN, doc) for k, doc in (
        ("trace_id", "Column of the trace id (hex)."), ("span_id", "Column of the span id (hex)."),
        ("parent_id", "Column of the parent span id (empty, `root` or `0` for roots)."),
        ("service", 'Column of the service (or of the pod name, with `service_from = "pod"`).'),
        ("name", "Column of the span name."), ("start", "Column of the start time."),
        ("end", "Column of the end time (or give `duration`)."), ("duration", "Column of the duration."),
        ("kind", "Column of the span kind (optional: inferred from the tree when missing)."),
        ("status", "Column of the status code (optional)."),
        ("attributes", "Column of the span attributes as a JSON object (optional)."),
        ("environment", "Column of the `deployment.environment` the span ran in (optional)."))},
    "time_unit": Key(Text(choices=tuple(UNITS)), "Unit of integer start and end times.", default="ns"),
    "duration_unit": Key(Text(choices=tuple(UNITS)), "Unit of the duration column.", default="ns"),
    "service_from": Key(Text(choices=("pod",)), "`pod`: the service is the Deployment name in a pod name "
                                                "(`frontend-579b9bff58-t2dbm` -> `frontend`)."),
}, "Column mapping of CSV/Parquet span tables whose layout is not recognized (the Nezha and ClickHouse "
   "`otel_traces` layouts are). `--span-columns` wins over it.")


def _store(name: str, extra: dict[str, Key], doc: str) -> Table:
    return Table({
        "url": Key(URL, f"Base URL of the {name} query API; a path prefix is fine."),
        **extra,
        "window": Key(DURATION, "Window pulled when no --window/--start/--end is given.", default="1h"),
        "per_operation": Key(Number(1, 100_000, integer=True),
                             "Traces pulled per (service, operation): every trace above p95 up to this many, and "
                             "a uniform sample of this many below.", default=50),
        "search_limit": Key(Number(1, 1_000_000, integer=True),
                            "Traces listed per search request (the candidates sampling draws from).", default=1000),
        "concurrency": Key(Number(1, 64, integer=True), "Traces fetched at once.", default=4),
        "timeout": Key(Number(0, 3600, above=True), "Seconds per request, connect to last byte.", default=30.0),
        "retries": Key(Number(0, 20, integer=True), "Extra attempts after a 429/5xx or a timeout.", default=3),
        "headers": Key(Mapped(Text(), "header name"), "Extra HTTP headers (no secrets: those come from "
                                                       "$PROFILE_FIRST_TRACES_TOKEN and friends).", default={}),
        "token_file": Key(Text(form="a path"), "File holding the bearer token."),
    }, doc)


TEMPO = _store("Tempo", {
    "tenant": Key(Text(), "X-Scope-OrgID of a multi-tenant Tempo."),
    "query": Key(Text(form="a TraceQL query"), "TraceQL search filter, e.g. `{resource.service.name=\"checkout\"}`.",
                 default="{}"),
    "top_operations": Key(Number(1, 100_000, integer=True),
                          "With TraceQL metrics: the entry operations pulled, the first by their time over the whole "
                          "window (count x p50 from the metrics); each gets a tail and a body search.", default=50),
}, "Pull traces from Grafana Tempo (`--tempo URL`): entry operations ranked over the window by TraceQL metrics "
   "(else by the search results), a TraceQL search of each one's tail and body, then a stratified sample of "
   "traces by id.")
SPAN_METRICS_TOP = {"top_operations": Key(Number(1, 100_000, integer=True),
                                         "With --prometheus holding span-metrics: the entry operations searched, the "
                                         "first by their time over the window (count x p50).", default=50)}
JAEGER = _store("Jaeger query", dict(SPAN_METRICS_TOP),
                "Pull traces from the Jaeger query service (`--jaeger URL`): /api/v3 when it answers, else the legacy "
                "/api/traces; searched per (service, operation), or per entry operation span-metrics in "
                "Prometheus rank first, and each one's tail again with minDuration at its p95.")
ZIPKIN = _store("Zipkin", dict(SPAN_METRICS_TOP),
                "Pull traces from Zipkin (`--zipkin URL`): /api/v2/traces per (service, span name), or per entry "
                "operation span-metrics in Prometheus rank first, each root operation's tail again with minDuration "
                "at its p95, and once without serviceName for traces whose spans name no service.")

CLICKHOUSE = Table({
    "url": Key(Text(pattern=r"(https?://|chdb:)\S+", form="an http(s):// URL or chdb:PATH"),
               "ClickHouse HTTP interface, or chDB's database directory as chdb:PATH (for `report`; `analyze` "
               "takes --clickhouse)."),
    "table": Key(Text(pattern=r"([A-Za-z_]\w*\.)?[A-Za-z_]\w*", form="DATABASE.TABLE"),
                 "The exporter's traces table.", default="otel.otel_traces"),
    "timeout": Key(Number(0, 86400, above=True), "Seconds: the HTTP read timeout and each query's "
                                                 "max_execution_time.", default=300.0),
    "connect_timeout": Key(Number(0, 600, above=True), "Seconds to connect.", default=10.0),
    "ca_bundle": Key(Text(form="a path"), "PEM file of CAs to trust instead of the system store."),
    "insecure_skip_verify": Key(Boolean(), "Do not check the TLS certificate (opt-in only).", default=False),
    "password_file": Key(Text(form="a path"), "File holding the password; the user comes from "
                                              "`$PROFILE_FIRST_CLICKHOUSE_USER`."),
    "max_result_rows": Key(Number(1, integer=True), "Most rows any query may return (the server throws beyond).",
                           default=1_000_000),
    "max_operations": Key(Number(1, 1_000_000, integer=True), "(service, operation) pairs ranked and sampled.",
                          default=1_000),
    "tail_cap": Key(Number(0, 100_000, integer=True), "Traces kept above p95 per operation.", default=100),
    "body_size": Key(Number(0, 100_000, integer=True), "Traces drawn uniformly below p95 per operation.",
                     default=100),
    "listing": Key(Number(1, 1_000_000, integer=True), "Entry spans listed per operation (a uniform draw by "
                                                       "trace-id hash) for the sampler to choose from.", default=4_000),
    "max_sample_spans": Key(Number(1, integer=True), "A sample with more spans than this is an error.",
                            default=5_000_000),
}, "ClickHouse's `otel_traces` (the OpenTelemetry Collector ClickHouse exporter's table): whole-window figures "
   "computed in the store, a stratified sample of whole traces analyzed here. Credentials only from "
   "`$PROFILE_FIRST_CLICKHOUSE_USER` and `$PROFILE_FIRST_CLICKHOUSE_PASSWORD(_FILE)`.")


for _name, _table in (("span_table", SPAN_TABLE), ("tempo", TEMPO), ("jaeger", JAEGER), ("zipkin", ZIPKIN),
                      ("clickhouse", CLICKHOUSE)):
    add_source(_name, _table)
