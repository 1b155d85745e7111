"""The `profile-first` command line.

Exit codes: 0 success; 2 unusable input or arguments (a missing file, a file that is not
OTLP, a bad time, an unreachable Prometheus); 1 an internal error (a bug: please report it).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console

from analyzer import __version__
from analyzer.cliutil import UserError, parse_duration, resolve_window
from analyzer.commands.capture import capture, receiver_config, run_capture, summary
from analyzer.commands.config import config
from analyzer.commands.demo import demo
from analyzer.config import Config, ConfigError, load_config
from analyzer.output import check_output, write_output
from analyzer.pipeline import Inputs, analyze
from analyzer.renderers import formats, render
from analyzer.signals import Signals
from analyzer.table import TableBuilder
from collectors.capture import CaptureResult
from collectors.receiver import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT, ReceiverConfig
from collectors.otlp_files import InputError
from collectors.otlp_metrics import signals_from_file
from collectors.otlp_traces import load_traces
from collectors.prometheus import PromConfig, PrometheusError, collect


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="profile-first")
def main() -> None:
    """Profile before you rewrite: find what makes a service slow, from the telemetry you have."""


@main.command("analyze")
@click.option("--traces", "traces", multiple=True, metavar="PATH",
              help="OTLP trace file or directory (JSON lines, protobuf, framed, gzip/zstd). Repeatable.")
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
@click.option("--format", "fmt", type=click.Choice(formats()), default=None,
              help="Output format (default: from --output's extension, else text).")
@click.option("--output", metavar="FILE", help="Write the report here (atomically) instead of stdout.")
@click.option("--config", "config_path", metavar="FILE", help="TOML config: thresholds, overrides, [prometheus].")
@click.option("--header", "header", multiple=True, metavar="NAME=VALUE",
              help="Extra HTTP header for Prometheus, e.g. X-Scope-OrgID=tenant-1. Repeatable.")
@click.option("--ca-bundle", metavar="PEM", help="CA certificates to trust for Prometheus.")
@click.option("--insecure-skip-verify", is_flag=True, default=None, help="Do not check Prometheus's TLS certificate.")
@click.option("--token-file", metavar="FILE", help="File holding the Prometheus bearer token.")
@click.option("--timeout", type=float, metavar="SECONDS", help="Deadline per Prometheus request, connect to last byte (default 30).")
@click.option("--retries", type=int, metavar="N", help="Retries on 5xx and timeouts (default 3).")
@click.option("--step", type=float, metavar="SECONDS", help="Range-query step (default: finest under 11,000 points).")
@click.option("--rate-window", metavar="DURATION", help="Range of rate() in PromQL (default 5m).")
@click.option("--extra-matchers", metavar="MATCHERS", help='Added to every selector, e.g. cluster="eu-1".')
@click.option("--listen", is_flag=True, help="Receive OTLP on 127.0.0.1:4318 (HTTP) and :4317 (gRPC) for --duration, "
                                             "then analyze what arrived (Ctrl-C ends early).")
@click.option("--duration", metavar="DURATION", default="10m", show_default=True, help="Capture window for --listen.")
@click.option("--capture-output", metavar="FILE", help="With --listen: also keep the capture here (OTLP JSON lines).")
@click.option("--http-port", type=click.IntRange(0, 65535), default=DEFAULT_HTTP_PORT, show_default=True,
              help="With --listen: OTLP/HTTP port on 127.0.0.1 (0: any free port).")
@click.option("--grpc-port", type=click.IntRange(0, 65535), default=DEFAULT_GRPC_PORT, show_default=True,
              help="With --listen: OTLP/gRPC port on 127.0.0.1 (0: any free port).")
def analyze_cmd(traces: tuple[str, ...], metrics: tuple[str, ...], prometheus: str | None, start: str | None,
                end: str | None, window: str | None, services: tuple[str, ...], fmt: str | None,
                output: str | None, config_path: str | None, listen: bool, duration: str,
                capture_output: str | None, http_port: int, grpc_port: int, **prom_flags: object) -> None:
    """Analyze traces and metrics and print the verdict per service."""
    if not (traces or prometheus or metrics or listen):
        raise UserError("nothing to analyze: give --traces PATH, --metrics PATH, --prometheus URL or --listen")
    s, e = resolve_window(start, end, window)
    for path in (output, capture_output):
        if path is not None:
            check_output(path)
    try:
        config = load_config(config_path)
    except ConfigError as err:
        raise UserError(str(err)) from err
    with tempfile.TemporaryDirectory(prefix="profile-first-") as tmp:
        traces, metrics = list(traces), list(metrics)
        if listen:
            # Without --capture-output, framed protobuf: ~30x faster to write than OTLP/JSON.
            captured = listen_for(parse_duration(duration), capture_output or str(Path(tmp) / "capture.binpb.gz"),
                                  receiver_config(http_port=http_port, grpc_port=grpc_port))
            traces.append(str(captured.traces_path))
            if captured.metrics_path is not None:
                metrics.append(str(captured.metrics_path))
        inputs = read_inputs(traces, metrics)
    if prometheus:
        s, e = prometheus_window(inputs, s, e)
        want = list(services) or (list(inputs.table.services) if len(inputs.table) else None)
        inputs.signals = query_prometheus(prometheus, want, s, e, config, prom_flags, inputs.signals)
    report = analyze(inputs, config,
                     start_ns=int(s * 1e9) if s is not None else None,
                     end_ns=int(e * 1e9) if e is not None else None,
                     services=list(services) or None)
    if fmt is None:
        fmt = {".json": "json", ".md": "md", ".html": "html", ".htm": "html"}.get(Path(output).suffix, "text") if output else "text"
    if output is not None:
        write_output(output, render(report, fmt))
    else:
        click.echo(render(report, fmt, color=sys.stdout.isatty()), nl=False)


def read_inputs(traces: list[str], metrics: list[str]) -> Inputs:
    try:
        loaded = load_traces(traces) if traces else None
        signals = None
        for path in metrics:
            signals = signals_from_file(path, signals)
    except InputError as err:
        raise UserError(str(err)) from err
    if loaded is not None and len(loaded.table) == 0 and not metrics:
        raise UserError(f"no spans could be read from {', '.join(traces)}")
    if loaded is None:
        return Inputs(table=TableBuilder().finish(), signals=signals)
    return Inputs(loaded.table, loaded.sources, loaded.repairs, signals)


def listen_for(duration_s: float, output: str, config: ReceiverConfig) -> CaptureResult:
    result = run_capture(duration_s, Path(output), config)
    click.echo(summary(result), err=True)
    return result


def prometheus_window(inputs: Inputs, s: float | None, e: float | None) -> tuple[float, float]:
    """The explicit window, else the traces' span of time; metrics alone need an explicit one."""
    t = inputs.table
    if s is None and len(t):
        s = float(t.start.min()) / 1e9
    if e is None and len(t):
        e = float(t.end.max()) / 1e9
    if s is None or e is None:
        raise UserError("--prometheus without traces needs a window: give --window 7d or --start/--end")
    return s, e


def query_prometheus(url: str, services: list[str] | None, s: float, e: float, config: Config,
                     flags: dict[str, object], signals: Signals | None) -> Signals:
    section = dict(config.sections.get("prometheus", {}))  # type: ignore[arg-type]
    for key, value in flags.items():
        if value is not None and value != ():
            section[key] = value
    headers = dict(section.pop("headers", {}) or {})
    for h in section.pop("header", ()) or ():
        name, sep, value = str(h).partition("=")
        if not sep:
            raise UserError(f"--header {h!r} is not NAME=VALUE")
        headers[name.strip()] = value.strip()
    try:
        prom_config = PromConfig(headers=headers, **section)  # type: ignore[arg-type]
    except TypeError as err:
        raise UserError(f"[prometheus] config: {err}") from err
    with prometheus_progress() as progress:
        try:
            got = collect(url, services, s, e, prom_config, progress=progress)
        except PrometheusError as err:
            raise UserError(str(err)) from err
        except ValueError as err:
            raise UserError(f"Prometheus settings: {err}") from err
    if signals is not None:
        for name, svc in signals.services.items():
            got.services.setdefault(name, svc)
        got.failures.extend(signals.failures)
    return got


@contextlib.contextmanager
def prometheus_progress():
    """A rich progress bar on stderr while queries run; nothing when stderr is not a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("Prometheus", total=1)

        def update(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=max(total, 1), description=f"Prometheus: {label}")

        yield update


@main.command("rule")
@click.argument("code")
def rule_cmd(code: str) -> None:
    """Print the documentation of a rule, e.g. `profile-first rule PF-DB001`."""
    from heuristics.registry import all_rules

    rules = all_rules()
    r = rules.get(code.upper())
    if r is None:
        raise UserError(f"no rule {code!r}; `profile-first rules` lists them")
    click.echo(f"{r.code} {r.name} ({r.category})\n\n{r.summary}\n\n{r.doc}\n")
    if r.defaults:
        click.echo("Thresholds (override in the config file under [rules.\"%s\"]):" % r.code)
        for k, v in r.defaults.items():
            click.echo(f"  {k} = {v:g}")


@main.command("rules")
def rules_cmd() -> None:
    """List every rule code with its one-line summary."""
    from heuristics.registry import all_rules

    for r in all_rules().values():
        click.echo(f"{r.code:<11}  {r.category:<9}  {r.name}: {r.summary}")


main.add_command(capture)
main.add_command(demo)
main.add_command(config)

if __name__ == "__main__":
    main()
