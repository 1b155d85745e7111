"""Gathering a run's inputs: trace and metrics files, an OTLP capture, a Prometheus query, CPU profiles.

Shared by `analyze` and `report`; every failure a user can fix is a UserError (one line, exit 2).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from analyzer.cliutil import UserError
from analyzer.config import Config
from analyzer.model.spans import Kind, SpanTable
from analyzer.pipeline import Inputs
from analyzer.model.signals import Signals
from analyzer.model.table import TableBuilder
from collectors.otlp_files import DEFAULT_LIMITS, InputError, Limits, SourceStats, damage_summary, shown
from collectors.otlp_metrics import signals_from_file
from collectors.otlp_traces import load_traces
from collectors.span_tables import ColumnMapping, mapping_from_pairs

if TYPE_CHECKING:
    from collectors.capture import CaptureResult
    from collectors.receiver import ReceiverConfig

# Capturing (gRPC), Prometheus (requests) and rich's progress bar are imported where they are
# used: an `analyze` of a file needs none of them, and they are most of its start-up time.


def read_inputs(traces: list[str], metrics: list[str], limits: Limits = DEFAULT_LIMITS,
                span_columns: ColumnMapping | None = None) -> Inputs:
    """Trace and metric files read; what was damaged in them is counted in the sources, and what
    is worth knowing about their format (base64 ids, inferred kinds) is said on stderr."""
    metric_sources = [SourceStats(path=shown(p)) for p in metrics]
    try:
        loaded = load_traces(traces, limits, span_columns) if traces else None
        signals = None
        for path, stats in zip(metrics, metric_sources):
            signals = signals_from_file(path, signals, stats, limits)
    except InputError as err:
        raise UserError(str(err)) from err
    if loaded is not None:
        for source in loaded.sources:
            for notice in source.notices:
                click.echo(f"note: {source.path}: {notice}", err=True)
    if loaded is not None and len(loaded.table) == 0 and not metrics:
        raise UserError(f"no spans could be read from {', '.join(map(shown, traces))}{damage_summary(loaded.sources)}")
    if loaded is None:
        return Inputs(table=TableBuilder().finish(), sources=metric_sources, signals=signals)
    return Inputs(loaded.table, loaded.sources + metric_sources, loaded.repairs, signals)


def span_mapping(flag: str | None, config: Config) -> ColumnMapping | None:
    """The span-table column mapping from --span-columns, else the config's [sources.span_table]."""
    table = dict((config.sections.get("sources") or {}).get("span_table") or {})  # type: ignore[union-attr]
    try:
        if flag:
            return mapping_from_pairs(flag)
        return ColumnMapping.parse(table) if table else None
    except ValueError as err:
        raise UserError(str(err)) from err


def listen_for(duration_s: float, output: str, config: ReceiverConfig) -> CaptureResult:
    from analyzer.commands.capture import run_capture, summary

    result = run_capture(duration_s, Path(output), config)
    if result.spans or result.points:  # nothing received: the caller says where it listened instead
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


def prom_config(config: Config, flags: dict[str, object]):  # type: ignore[no-untyped-def]
    """The PromConfig of `[prometheus]` and the command line's Prometheus flags."""
    from collectors.prometheus import PromConfig

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
    return prom_config


def query_prometheus(url: str, services: list[str] | None, s: float, e: float, config: Config,
                     flags: dict[str, object], signals: Signals | None) -> Signals:
    from collectors.prometheus import PrometheusError, collect

    settings = prom_config(config, flags)
    with prometheus_progress() as progress:
        try:
            got = collect(url, services, s, e, settings, progress=progress)
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
def prometheus_progress(name: str = "Prometheus"):
    """A rich progress bar on stderr while queries (or trace fetches) run; nothing when stderr is
    not a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(name, total=1)

        def update(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=max(total, 1), description=f"{name}: {label}")

        yield update


def read_profiles(inputs: Inputs, specs: list[str], pyroscope: str | None, start_s: float | None,
                  end_s: float | None, services: list[str]) -> None:
    from collectors.profiles import ProfileSource, load_profiles  # only runs that give profiles pay for it

    table = inputs.table
    known = list(table.services) + [s for s in services if s not in table.services]
    if specs:
        loaded = load_profiles(specs, known)
        inputs.profiles.extend(loaded.profiles)
        inputs.profile_sources.extend(loaded.sources)
        for src in loaded.sources:
            if src.error:
                click.echo(f"profile-first: warning: profile {src.path!r} skipped: {src.error}", err=True)
        if not loaded.profiles:
            raise UserError(f"no CPU profile could be read from {', '.join(specs)} (reasons above)")
    if pyroscope:
        from collectors.pyroscope import PyroscopeError, fetch_profiles

        if start_s is None or end_s is None:
            if not len(table):
                raise UserError("--pyroscope without traces needs a window: give --window 7d or --start/--end")
            start_s = float(table.start.min()) / 1e9 if start_s is None else start_s
            end_s = float(table.end.max()) / 1e9 if end_s is None else end_s
        want = services or list(table.services)
        if not want:
            raise UserError("--pyroscope needs services: give --service NAME or traces that name them")
        try:
            got, problems = fetch_profiles(pyroscope, want, start_s, end_s, entry_operations(table))
        except PyroscopeError as err:
            raise UserError(str(err)) from err
        inputs.profiles.extend(got)
        inputs.profile_sources.extend(ProfileSource(p.source, p.service, p.format, p.total, p.unit) for p in got)
        for problem in problems:
            click.echo(f"profile-first: warning: {problem}", err=True)


def entry_operations(table: SpanTable, per_service: int = 20) -> dict[str, list[str]]:
    """The most frequent SERVER/CONSUMER span names of each service: the operations worth a span profile."""
    entry = np.isin(table.kind, (Kind.SERVER, Kind.CONSUMER))
    out: dict[str, list[str]] = {}
    if not entry.any():
        return out
    pairs, counts = np.unique(np.stack([table.service[entry], table.name[entry]], axis=1), axis=0, return_counts=True)
    for (svc, name), _ in sorted(zip(pairs.tolist(), counts.tolist()), key=lambda pc: -pc[1]):
        ops = out.setdefault(table.services[svc], [])
        if len(ops) < per_service:
            ops.append(table.names[name])
    return out
