"""`analyze --tempo URL | --jaeger URL | --zipkin URL`: the options, and pulling a weighted sample
of the window's traces from the store into Inputs (collectors/store_pull.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from analyzer.cliutil import UserError, parse_duration
from analyzer.config import Config
from analyzer.pipeline import Inputs
FLAG_PREFIX = "store_"
KINDS = ("tempo", "jaeger", "zipkin")


def store_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--tempo/--jaeger/--zipkin and their settings; they arrive as `store_*` keywords."""
    options = [
        click.option("--tempo", "store_tempo", metavar="URL",
                     help="Grafana Tempo's query URL: TraceQL search over the window, then a stratified sample "
                          "of whole traces. Credentials from $PROFILE_FIRST_TRACES_TOKEN(_FILE) or "
                          "$PROFILE_FIRST_TRACES_USER + _PASSWORD(_FILE), never from arguments."),
        click.option("--jaeger", "store_jaeger", metavar="URL",
                     help="The Jaeger query service (/api/v3, else the legacy /api/traces); credentials as for --tempo."),
        click.option("--zipkin", "store_zipkin", metavar="URL",
                     help="Zipkin's API (/api/v2); credentials as for --tempo."),
        click.option("--tenant", "store_tenant", metavar="ORG", help="X-Scope-OrgID for a multi-tenant store."),
        click.option("--traceql", "store_query", metavar="QUERY",
                     help='Tempo: TraceQL filter of the search, e.g. {resource.service.name="checkout"}.'),
        click.option("--per-operation", "store_per_operation", type=click.IntRange(1, 100_000), metavar="N",
                     help="Traces pulled per (service, operation): all above p95 up to N, and N sampled below "
                          "(default 50)."),
        click.option("--concurrency", "store_concurrency", type=click.IntRange(1, 64), metavar="N",
                     help="Traces fetched at once from the store (default 4)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def store_requested(flags: dict[str, object], config: Config) -> str | None:
    """The store kind asked for on the command line, else in the config (`[sources.tempo] url`)."""
    given = [k for k in KINDS if flags.get(FLAG_PREFIX + k)]
    if len(given) > 1:
        raise UserError(f"give one trace store at a time, not --{' and --'.join(given)}")
    if given:
        return given[0]
    sources = config.sections.get("sources") or {}
    return next((k for k in KINDS if isinstance(sources.get(k), dict) and sources[k].get("url")), None)  # type: ignore[union-attr]


def read_store(kind: str, flags: dict[str, object], config: Config, start_s: float | None, end_s: float | None,
               services: list[str], progress: Callable[[int, int, str], None] | None,
               environments: tuple[str, ...] = (), prometheus: tuple[str, Any] | None = None) -> Inputs:
    """The window's traces from the store, sampled and weighted; UserError when the store refuses.
    `environments` narrows the search where the store can (Tempo's TraceQL). `prometheus` (URL,
    PromConfig): its span-metrics rank the entry operations for a store without metrics of its own."""
    # Imported here: the HTTP stack is most of the start-up time of a run that reads files.
    from collectors.store_pull import NS, StoreError, StoreSettings, pull

    section = dict((config.sections.get("sources") or {}).get(kind) or {})  # type: ignore[union-attr]
    url = flags.get(FLAG_PREFIX + kind) or section.get("url")
    window = parse_duration(str(section.pop("window", "1h")))
    for key in ("tenant", "query", "per_operation", "concurrency"):
        if flags.get(FLAG_PREFIX + key) is not None:
            section[key] = flags[FLAG_PREFIX + key]
    section.pop("url", None)
    end = end_s if end_s is not None else time.time()
    start = start_s if start_s is not None else end - window
    notices: list[str] = []

    def ranked_by_span_metrics() -> list:
        ranked, why = _span_metrics(prometheus, start, end, services) if prometheus else ([], "")
        notices.extend([why] if why else [])
        return ranked or []

    try:
        settings = StoreSettings(url=str(url), environments=tuple(environments), **section)  # type: ignore[arg-type]
        # Tempo ranks by its own TraceQL metrics and asks span-metrics only when those fail.
        store = _store(kind, settings, ranked_by_span_metrics if kind == "tempo" else ranked_by_span_metrics())
        loaded = pull(store, settings, int(start * NS), int(end * NS), services or None, progress)
    except StoreError as err:
        raise UserError(str(err)) from None
    except (TypeError, ValueError) as err:
        raise UserError(f"[sources.{kind}]: {err}") from None
    loaded.sources[0].notices.extend(notices)
    return Inputs(loaded.table, loaded.sources, loaded.repairs)


def _span_metrics(prometheus: tuple[str, Any], start: float, end: float, services: list[str]) -> tuple[list, str]:
    """The entry operations ranked by span-metrics in Prometheus, or ([], why not) for `input`."""
    from collectors.span_metrics import SpanMetricsUnavailable, rank

    url, config = prometheus
    try:
        return rank(url, config, start, end, services or None), ""
    except (SpanMetricsUnavailable, ValueError) as err:
        return [], f"no span-metrics ranking from {url}: {err}"


def _store(kind: str, settings, ranked):  # type: ignore[no-untyped-def]
    if kind == "tempo":
        from collectors.tempo import Tempo

        return Tempo(settings, ranked)
    if kind == "jaeger":
        from collectors.jaeger_api import Jaeger

        return Jaeger(settings, ranked)
    from collectors.zipkin_api import Zipkin

    return Zipkin(settings, ranked)
