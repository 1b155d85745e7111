"""`profile-first analyze`: read traces and metrics, print the verdict per service."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import click

from analyzer.allocator import fix_malloc_thresholds
from analyzer.cliutil import UserError, parse_duration, parse_size, resolve_window
from analyzer.commands.clickhouse import FLAG_PREFIX, clickhouse_options, read_clickhouse
from analyzer.config import ConfigError, load_config
from analyzer.commands.stores import FLAG_PREFIX as STORE_PREFIX, read_store, store_options, store_requested
from analyzer.environments import environment_filter, environments_asked, kept_nothing, with_environment_matcher
from analyzer.gather import (listen_for, prom_config, prometheus_progress, prometheus_window, query_prometheus,
                             read_inputs, read_profiles, span_mapping)
from analyzer.output import check_output, write_output
from analyzer.pipeline import analyze
from analyzer.renderers import format_for_path, formats, render
from analyzer.renderers.escape import for_terminal
from analyzer.renderers.html import trace_url_problem
from analyzer.selection import require_services, require_spans_in_window
from collectors.otlp_files import Limits
from collectors.otlp_ports import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT


@click.command("analyze")
@click.option("--traces", "traces", multiple=True, metavar="PATH",
              help="OTLP trace file or directory (JSON lines, protobuf, framed, gzip/zstd). Repeatable.")
@click.option("--span-columns", metavar="KEY=COL,...",
              help="Column mapping of CSV/Parquet span tables: trace_id=,span_id=,parent_id=,service=,name=,start=, "
                   "end= or duration=, optional kind=,status=,attributes=,time_unit=,duration_unit=,service_from=pod; "
                   "or a preset (nezha, clickhouse). Also [sources.span_table] in the config.")
@click.option("--metrics", "metrics", multiple=True, metavar="PATH",
              help="OTLP metrics file, e.g. the one `capture` writes beside the traces. Repeatable.")
@click.option("--prometheus", metavar="URL",
              help="Prometheus-compatible API (Prometheus, Thanos, Mimir, VictoriaMetrics); a path prefix is fine. "
                   "Credentials come from $PROFILE_FIRST_PROM_TOKEN(_FILE) or $PROFILE_FIRST_PROM_USER and "
                   "$PROFILE_FIRST_PROM_PASSWORD(_FILE), never from arguments.")
@click.option("--start", metavar="T", help="Window start: RFC 3339 or unix seconds.")
@click.option("--end", metavar="T", help="Window end: RFC 3339 or unix seconds.")
@click.option("--window", metavar="DURATION", help="Window length ending at --end or now, e.g. 7d.")
@click.option("--service", "services", multiple=True, metavar="NAME", help="Only these services. Repeatable.")
@click.option("--environment", "environments", multiple=True, metavar="ENV",
              help="Only spans and Prometheus series of this deployment.environment (those that name none are kept). "
                   "Repeatable; default: every environment.")
@click.option("--format", "fmt", type=click.Choice(formats()), default=None,
              help="Output format (default: from --output's extension, else text).")
@click.option("--output", metavar="FILE", help="Write the report here (atomically) instead of stdout.")
@click.option("--config", "config_path", metavar="FILE", help="TOML config: thresholds, overrides, [prometheus].")
@click.option("--trace-url", metavar="TEMPLATE",
              help="HTML: link sample trace ids to a trace UI, e.g. https://jaeger.example/trace/{trace_id}.")
@click.option("--metrics-textfile", metavar="FILE",
              help="Also write verdicts and hot-spot figures as Prometheus text exposition (node_exporter textfile).")
@click.option("--push-metrics", metavar="URL",
              help="Also push them as OTLP/HTTP metrics, e.g. http://collector:4318/v1/metrics "
                   "(headers from $OTEL_EXPORTER_OTLP_METRICS_HEADERS or $OTEL_EXPORTER_OTLP_HEADERS).")
@click.option("--header", "header", multiple=True, metavar="NAME=VALUE",
              help="Extra HTTP header for Prometheus, e.g. X-Scope-OrgID=tenant-1. Repeatable.")
@click.option("--ca-bundle", metavar="PEM", help="CA certificates to trust for Prometheus.")
@click.option("--insecure-skip-verify", is_flag=True, default=None, help="Do not check Prometheus's TLS certificate.")
@click.option("--token-file", metavar="FILE", help="File holding the Prometheus bearer token.")
@click.option("--timeout", type=float, metavar="SECONDS", help="Deadline per Prometheus request, connect to last byte (default 30).")
@click.option("--retries", type=int, metavar="N", help="Retries on 5xx and timeouts (default 3).")
@click.option("--step", type=float, metavar="SECONDS", help="Range-query step (default: finest under 11,000 points).")
@click.option("--rate-window", metavar="DURATION", help="Range of rate() in PromQL (default: the step, at least 4 scrape intervals found in the data).")
@click.option("--extra-matchers", metavar="MATCHERS", help='Added to every selector, e.g. cluster="eu-1".')
@click.option("--listen", is_flag=True, help="Receive OTLP on 127.0.0.1:4318 (HTTP) and :4317 (gRPC) for --duration, "
                                             "then analyze what arrived (Ctrl-C ends early).")
@click.option("--duration", metavar="DURATION", default="10m", show_default=True, help="Capture window for --listen.")
@click.option("--capture-output", metavar="FILE", help="With --listen: also keep the capture here (format from the name, as for `capture --output`).")
@click.option("--http-port", type=click.IntRange(0, 65535), default=DEFAULT_HTTP_PORT, show_default=True,
              help="With --listen: OTLP/HTTP port (0: any free port).")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=DEFAULT_GRPC_PORT, show_default=True,
              help="With --listen: OTLP/gRPC port (0: any free port).")
@click.option("--bind", default="127.0.0.1", show_default=True,
              help="With --listen: address to listen on, e.g. 0.0.0.0 for a Collector on another host "
                   "(needs --allow-remote; set $PROFILE_FIRST_RECEIVER_TOKEN too).")
@click.option("--allow-remote", is_flag=True, help="With --listen: allow a non-loopback --bind, as for `capture`.")
@click.option("--max-message", metavar="SIZE", default="64MiB", show_default=True,
              help="Largest JSON line, frame, ResourceSpans or JSON document read from a file; larger ones "
                   "are skipped and counted (input.skipped.over_message_limit).")
@click.option("--profile", "profiles", multiple=True, metavar="[SERVICE=]PATH",
              help="CPU profile file or directory (pprof, folded stacks, speedscope, V8 .cpuprofile); "
                   "SERVICE= names its service. Repeatable.")
@click.option("--pyroscope", metavar="URL", help="Grafana Pyroscope: pull each service's CPU profile for the window. "
                                                 "Credentials from $PROFILE_FIRST_PYROSCOPE_TOKEN or _USER/_PASSWORD.")
@clickhouse_options
@store_options
def analyze_cmd(traces: tuple[str, ...], metrics: tuple[str, ...], prometheus: str | None, start: str | None,
                end: str | None, window: str | None, services: tuple[str, ...], environments: tuple[str, ...],
                fmt: str | None,
                output: str | None, config_path: str | None, trace_url: str | None, metrics_textfile: str | None,
                push_metrics: str | None, listen: bool, duration: str,
                capture_output: str | None, http_port: int, grpc_port: int, bind: str, allow_remote: bool,
                clickhouse: str | None, max_message: str,
                span_columns: str | None, profiles: tuple[str, ...], pyroscope: str | None,
                **prom_flags: object) -> None:
    """Analyze traces and metrics and print the verdict per service."""
    ch_flags = {k: prom_flags.pop(k) for k in list(prom_flags) if k.startswith(FLAG_PREFIX)}
    store_flags = {k: prom_flags.pop(k) for k in list(prom_flags) if k.startswith(STORE_PREFIX)}
    store_cli = next((k for k in ("tempo", "jaeger", "zipkin") if store_flags.get(STORE_PREFIX + k)), None)
    if not (traces or prometheus or metrics or listen or clickhouse or store_cli or config_path or profiles
            or pyroscope):
        raise UserError("nothing to analyze: give --traces PATH, --metrics PATH, --prometheus URL, --clickhouse URL, "
                        "--tempo/--jaeger/--zipkin URL, --listen or --profile PATH")
    if clickhouse and (traces or listen):
        raise UserError("--clickhouse reads the traces from the store: give it without --traces or --listen")
    s, e = resolve_window(start, end, window)
    limits = Limits(message=parse_size(max_message, "--max-message"))
    if trace_url is not None and (problem := trace_url_problem(trace_url)):
        raise UserError(f"--trace-url: {problem}")
    for path in (output, capture_output, metrics_textfile):
        if path is not None:
            check_output(path)
    fmt = fmt or format_for_path(output)
    receiver = _receiver_config(bind, http_port, grpc_port, allow_remote) if listen else None
    try:
        config = load_config(config_path)
    except ConfigError as err:
        raise UserError(str(err)) from err
    envs = environments_asked(environments)
    if envs and prometheus:  # before any query: a store's span metrics are asked for too
        section = config.sections.get("prometheus", {})
        prom_flags["extra_matchers"] = with_environment_matcher(
            str(prom_flags.get("extra_matchers") or section.get("extra_matchers", "")), envs)  # type: ignore[union-attr]
    fix_malloc_thresholds()
    with tempfile.TemporaryDirectory(prefix="profile-first-") as tmp:
        traces, metrics = list(traces), list(metrics)
        if listen:
            # Without --capture-output, uncompressed framed protobuf: a copy of the spool, read once.
            captured = listen_for(parse_duration(duration), capture_output or str(Path(tmp) / "capture.binpb"),
                                  receiver)
            if captured.spans == 0 and captured.points == 0:
                raise UserError(_nothing_received(captured))
            traces.append(str(captured.traces_path))
            if captured.metrics_path is not None:
                metrics.append(str(captured.metrics_path))
        inputs = read_inputs(traces, metrics, limits, span_mapping(span_columns, config))
    store_kind = store_requested(store_flags, config) if not (traces or listen or clickhouse) else store_cli
    if store_kind is None and not (traces or prometheus or metrics or listen or clickhouse or profiles or pyroscope):
        raise UserError("nothing to analyze: give --traces PATH, --metrics PATH, --prometheus URL, --clickhouse URL, "
                        "--tempo/--jaeger/--zipkin URL, --listen or --profile PATH")
    if store_kind is not None:
        if traces or listen or clickhouse:
            raise UserError(f"--{store_kind} reads the traces from the store: give it without --traces, --listen "
                            "or --clickhouse")
        with prometheus_progress(store_kind.capitalize()) as progress:
            pulled = read_store(store_kind, store_flags, config, s, e, list(services), progress, environments=envs,
                                prometheus=(prometheus, prom_config(config, prom_flags)) if prometheus else None)
        pulled.signals = inputs.signals
        inputs = pulled
    if clickhouse:
        store = read_clickhouse(clickhouse, ch_flags, config, int(s * 1e9) if s is not None else None,
                                int(e * 1e9) if e is not None else None, list(services), environments=envs)
        store.signals = inputs.signals
        inputs = store
    inputs.table, applied = environment_filter(inputs.table, envs)
    if (nothing := kept_nothing(applied)) is not None:
        raise UserError(f"--environment: {for_terminal(nothing)}")  # (environment names come from the telemetry)
    require_spans_in_window(inputs.table, s, e)
    if prometheus:
        s, e = prometheus_window(inputs, s, e)
        want = list(services) or (list(inputs.table.services) if len(inputs.table) else None)
        inputs.signals = query_prometheus(prometheus, want, s, e, config, prom_flags, inputs.signals)
    if profiles or pyroscope:
        read_profiles(inputs, list(profiles), pyroscope, s, e, list(services))
    if services:
        require_services(list(services), inputs)
    report = analyze(inputs, config,
                     start_ns=int(s * 1e9) if s is not None else None,
                     end_ns=int(e * 1e9) if e is not None else None,
                     services=list(services) or None)
    if applied is not None:
        report["environment_filter"] = applied
    if output is not None:
        write_output(output, render(report, fmt, trace_url=trace_url))
    else:
        tty = sys.stdout.isatty()
        click.echo(render(report, fmt, color=tty, trace_url=trace_url,
                          width=shutil.get_terminal_size().columns if tty else None), nl=False)
    export_metrics(report, metrics_textfile, push_metrics)


def export_metrics(report: dict, textfile: str | None, push_url: str | None) -> None:
    """--metrics-textfile and --push-metrics, after the report is out: a failed push is exit 5, the report kept."""
    if textfile is None and push_url is None:
        return
    from analyzer.commands.report import EXIT_DELIVERY
    from analyzer.export_metrics import ExportError, push_otlp, write_textfile

    if textfile is not None:
        write_textfile(report, textfile)
    if push_url is not None:
        try:
            push_otlp(report, push_url)
        except ExportError as err:
            click.echo(f"profile-first: error: {err}; the report was written", err=True)
            sys.exit(EXIT_DELIVERY)


def _receiver_config(bind: str, http_port: int, grpc_port: int, allow_remote: bool):  # noqa: ANN202 - a ReceiverConfig
    """capture's checks (loopback unless --allow-remote, the token from $PROFILE_FIRST_RECEIVER_TOKEN);
    imported only with --listen (gRPC is slow to import)."""
    from analyzer.commands.capture import read_token, receiver_config

    return receiver_config(bind, http_port, grpc_port, allow_remote, read_token(None))


def _nothing_received(captured) -> str:  # noqa: ANN001 - a CaptureResult
    """Where the receiver listened and how to send to it, instead of 'no spans in /tmp/...'."""
    http, grpc = captured.endpoints.get("http"), captured.endpoints.get("grpc")
    where = " or ".join(x for x in (f"{http} (OTLP/HTTP)" if http else "", f"{grpc} (OTLP/gRPC)" if grpc else "") if x)
    send = http or f"http://{grpc}"
    return (f"nothing was received on {where} in {captured.duration_s:.0f} s; point an SDK at it with "
            f"OTEL_EXPORTER_OTLP_ENDPOINT={send} (OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf), or add an otlphttp "
            f"exporter with endpoint: {send} to a Collector's traces and metrics pipelines")
