"""A report's verdicts and hot-spot figures as metrics, to chart next to a team's other dashboards.

Two outputs of the same metric families (`families(report)`):
- Prometheus text exposition (`to_prometheus_text`), for node_exporter's textfile collector:
  write it with `write_textfile` into the collector's directory as `profile_first.prom`; it is
  replaced atomically, as the collector requires.
- An OTLP/HTTP protobuf push (`push_otlp`) through the OpenTelemetry SDK's exporter, for a
  Collector or any backend that takes OTLP metrics (Prometheus with its OTLP receiver, Mimir).

All are gauges describing the report's window (no sample timestamps: the textfile collector
rejects them). Names follow Prometheus's conventions: `profile_first_` prefix, base units in
the name (`_seconds`, `_ratio` for 0..1), `_timestamp_seconds` for instants. The README lists
them. Label values come from telemetry (service and operation names) and are escaped as the
exposition format requires (backslash, double quote, line feed); text that is not valid UTF-8
(lone surrogates) is replaced, as a scrape would reject the whole file otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from analyzer.output import write_output

VERDICTS = ("recommended", "not_recommended", "insufficient_evidence")
CAUSES = ("database", "network", "caching", "gc_pause", "cpu_bound", "unknown")
PARTS = ("self", "database", "cache", "remote", "messaging")
OTLP_SCOPE = "profile-first.report"


@dataclass
class Family:
    name: str
    help: str
    unit: str  # UCUM for OTLP: "s", "1" (ratios only: Prometheus's OTLP import appends _ratio), "{request}", ""
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, labels: Mapping[str, str], value: float | None) -> None:
        """One sample, rounded to 15 significant digits (no float noise from a unit change such as
        0.00027100000000000003); a missing or non-finite value is left out."""
        if value is not None and math.isfinite(float(value)):
            self.samples.append(({k: _utf8(v) for k, v in labels.items()}, float(f"{float(value):.15g}")))


class ExportError(RuntimeError):
    """The metrics could not be delivered; the message says where and why."""


def families(report: dict) -> list[Family]:
    """Every metric family of `report`, in a fixed order; families without samples are left out."""
    f = {name: Family(name, help_, unit) for name, help_, unit in _FAMILIES}

    def ts(key: str) -> float | None:
        value = report.get(key) if key == "generated_at" else report["window"].get(key)
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None

    f["profile_first_report_window_start_timestamp_seconds"].add({}, ts("start"))
    f["profile_first_report_window_end_timestamp_seconds"].add({}, ts("end"))
    f["profile_first_report_generated_timestamp_seconds"].add({}, ts("generated_at"))
    f["profile_first_input_spans"].add({}, report["input"]["spans"])
    f["profile_first_missing_evidence"].add({}, len(report["input"].get("missing_evidence") or []))
    for s in report["services"]:
        svc = {"service": s["service"]}
        v = s["verdict"]
        for verdict in VERDICTS:
            f["profile_first_verdict"].add({**svc, "verdict": verdict}, float(v["rust_rewrite"] == verdict))
        for cause in CAUSES:
            f["profile_first_verdict_cause"].add({**svc, "cause": cause}, float(v["cause"] == cause))
        f["profile_first_service_time_seconds"].add(svc, s.get("total_ms", 0.0) / 1000)
        c = s.get("rewrite_ceiling") or {}
        for stat in ("p50", "p99", "mean"):
            if f"{stat}_ms" in c:
                f["profile_first_rewrite_ceiling_seconds"].add({**svc, "statistic": stat}, c[f"{stat}_ms"] / 1000)
                f["profile_first_rewrite_ceiling_ratio"].add({**svc, "statistic": stat}, c[f"{stat}_pct"] / 100)
        if "cpu_cost_pct" in c:
            f["profile_first_rewrite_ceiling_cpu_cost_ratio"].add(svc, c["cpu_cost_pct"] / 100)
        if "measured" in c:
            f["profile_first_rewrite_ceiling_measured"].add(svc, float(bool(c["measured"])))
        if "fix_first_ms" in c:
            f["profile_first_fix_first_saving_seconds"].add(svc, c["fix_first_ms"] / 1000)
            f["profile_first_fix_first_saving_ratio"].add(svc, c["fix_first_pct"] / 100)
        for rank, h in enumerate(s["hotspots"], 1):
            hs = {**svc, "operation": h["operation"]}
            f["profile_first_hotspot_rank"].add(hs, rank)
            f["profile_first_hotspot_requests"].add(hs, h.get("estimated_count", h["count"]))
            f["profile_first_hotspot_time_seconds"].add(hs, h.get("total_ms", 0.0) / 1000)
            for q in ("p50", "p95", "p99"):  # not `quantile`: that label is reserved for summaries
                f["profile_first_hotspot_latency_seconds"].add({**hs, "percentile": q}, h[f"{q}_ms"] / 1000)
            for part in PARTS:
                f["profile_first_hotspot_critical_path_seconds"].add({**hs, "part": part}, h["breakdown"][part] / 1000)
            f["profile_first_hotspot_category_share_ratio"].add({**hs, "category": h["category"]}, h["share"])
            # A rule can fire more than once on a hot spot (one finding per slow downstream): one
            # series per rule, holding its largest finding, as a scrape refuses duplicate series.
            largest: dict[str, tuple[float, float]] = {}
            for finding in h["findings"]:
                share, saving = finding.get("share", 0.0), finding.get("saving_ms", 0.0)
                prev = largest.get(finding["rule"], (0.0, 0.0))
                largest[finding["rule"]] = (max(prev[0], share), max(prev[1], saving))
            for rule, (share, saving) in largest.items():
                f["profile_first_finding_share_ratio"].add({**hs, "rule": rule}, share)
                f["profile_first_finding_saving_seconds"].add({**hs, "rule": rule}, saving / 1000)
    return [fam for fam in f.values() if fam.samples]


def to_prometheus_text(report: dict) -> str:
    """The report's metrics in the Prometheus text exposition format (version 0.0.4)."""
    out = []
    for fam in families(report):
        out.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        out.append(f"# TYPE {fam.name} gauge")
        for labels, value in fam.samples:
            body = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            out.append(f"{fam.name}{{{body}}} {_number(value)}" if body else f"{fam.name} {_number(value)}")
    return "\n".join(out) + "\n"


def write_textfile(report: dict, path: str) -> None:
    """Write the exposition to `path` (e.g. /var/lib/node_exporter/textfile/profile_first.prom) atomically."""
    write_output(path, to_prometheus_text(report))


def push_otlp(report: dict, endpoint: str, headers: Mapping[str, str] | None = None, timeout_s: float = 10.0) -> int:
    """Push the report's metrics as one OTLP/HTTP protobuf request to `endpoint` (the full URL,
    e.g. http://collector:4318/v1/metrics). Returns the number of data points sent.

    The SDK collects observable gauges once through an in-memory reader; the exporter sends them
    and retries what the OTLP spec calls retryable. Raises ExportError when the endpoint refuses."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
    from opentelemetry.sdk.resources import Resource

    from analyzer import __version__

    fams = families(report)
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=Resource.create({"service.name": "profile-first",
                                                       "service.version": __version__}),
                             metric_readers=[reader])
    meter = provider.get_meter(OTLP_SCOPE, __version__)
    for fam in fams:
        def observe(_: CallbackOptions, fam: Family = fam) -> Iterable[Observation]:
            return [Observation(value, labels) for labels, value in fam.samples]

        meter.create_observable_gauge(fam.name, [observe], unit=fam.unit, description=fam.help)
    data = reader.get_metrics_data()
    provider.shutdown()
    # No headers given: the exporter reads $OTEL_EXPORTER_OTLP_(METRICS_)HEADERS, where credentials belong.
    exporter = OTLPMetricExporter(endpoint=endpoint, headers=dict(headers) if headers else None, timeout=timeout_s)
    try:
        result = exporter.export(data, timeout_millis=timeout_s * 1000)
    finally:
        exporter.shutdown()
    if result is not MetricExportResult.SUCCESS:
        raise ExportError(f"OTLP metrics push to {endpoint} failed (see the log above for the HTTP status)")
    return sum(len(fam.samples) for fam in fams)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _utf8(value: object) -> str:
    return str(value).encode("utf-8", "replace").decode("utf-8")


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


#: (name, help, OTLP unit) of every family; the README's metric table lists the same.
_FAMILIES = (
    ("profile_first_report_window_start_timestamp_seconds", "Start of the analyzed window (unix time).", "s"),
    ("profile_first_report_window_end_timestamp_seconds", "End of the analyzed window (unix time).", "s"),
    ("profile_first_report_generated_timestamp_seconds", "When the report was generated (unix time).", "s"),
    ("profile_first_input_spans", "Spans read for the report.", "{span}"),
    ("profile_first_missing_evidence", "Measurements the report needed and could not make (see the report).", ""),
    ("profile_first_verdict", "Verdict on a Rust rewrite per service: 1 for the verdict given, 0 for the others.", ""),
    ("profile_first_verdict_cause", "Dominant measured cause per service: 1 for the cause given, 0 for the others.",
     ""),
    ("profile_first_service_time_seconds", "Time spent in the service's traced requests over the window.", "s"),
    ("profile_first_rewrite_ceiling_seconds",
     "Most a Rust rewrite could cut from the service's request latency (statistic: p50, p99, mean).", "s"),
    ("profile_first_rewrite_ceiling_ratio", "The rewrite ceiling as a fraction of the latency statistic.", "1"),
    ("profile_first_rewrite_ceiling_cpu_cost_ratio", "Most a Rust rewrite could cut from the service's CPU cost.",
     "1"),
    ("profile_first_rewrite_ceiling_measured",
     "1 when the ceiling rests on CPU/GC metrics for every hot spot, 0 when it is an upper bound.", ""),
    ("profile_first_fix_first_saving_seconds",
     "Mean per-request latency saved by fixing the dominant database, network or caching cause.", "s"),
    ("profile_first_fix_first_saving_ratio", "The fix-first saving as a fraction of the mean request latency.", "1"),
    ("profile_first_hotspot_rank", "Rank of the hot spot within its service by total time (1 = most).", ""),
    ("profile_first_hotspot_requests", "Requests of the hot spot in the window (estimated when sampled).",
     "{request}"),
    ("profile_first_hotspot_time_seconds", "Total time spent in the hot spot over the window.", "s"),
    ("profile_first_hotspot_latency_seconds", "Latency percentile (p50, p95, p99) of the hot spot's requests over the window.", "s"),
    ("profile_first_hotspot_critical_path_seconds",
     "Mean request's critical path per part (self, database, cache, remote, messaging).", "s"),
    ("profile_first_hotspot_category_share_ratio",
     "Fraction of the hot spot's time explained by its classified category.", "1"),
    ("profile_first_finding_share_ratio", "Fraction of the hot spot's time the rule's (largest) finding explains.", "1"),
    ("profile_first_finding_saving_seconds", "Mean per-request latency the rule's (largest) finding's remedy would save.", "s"),
)
