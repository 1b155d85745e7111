"""`analyze --clickhouse`: the options, and reading a ClickHouse (or chDB) `otel_traces` into Inputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from analyzer.cliutil import UserError
from analyzer.config import Config
from analyzer.environments import asked_for
from analyzer.pipeline import Inputs
from heuristics.registry import all_rules

FLAG_PREFIX = "clickhouse_"


def clickhouse_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The --clickhouse* options of `analyze`; they arrive as `clickhouse` and `clickhouse_*` keywords."""
    options = [
        click.option("--clickhouse", metavar="URL|chdb:PATH",
                     help="ClickHouse HTTP interface (https://host:8443) or chDB's database directory (chdb:PATH) "
                          "holding the OpenTelemetry exporter's otel_traces: the heavy work runs there, a "
                          "stratified sample of whole traces here. Credentials from $PROFILE_FIRST_CLICKHOUSE_USER "
                          "and $PROFILE_FIRST_CLICKHOUSE_PASSWORD(_FILE), never from arguments."),
        click.option("--clickhouse-table", metavar="DATABASE.TABLE",
                     help="The exporter's traces table (default otel.otel_traces)."),
        click.option("--clickhouse-ca-bundle", metavar="PEM", help="CA certificates to trust for ClickHouse."),
        click.option("--clickhouse-insecure-skip-verify", is_flag=True, default=None,
                     help="Do not check ClickHouse's TLS certificate."),
        click.option("--clickhouse-timeout", type=float, metavar="SECONDS",
                     help="HTTP read timeout and each query's max_execution_time (default 300)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def read_clickhouse(spec: str, flags: dict[str, object], config: Config, start_ns: int | None, end_ns: int | None,
                    services: list[str], require_spans: bool = True, environments: tuple[str, ...] = ()) -> Inputs:
    """Whole-window figures and a weighted sample from the store at `spec`; UserError on anything
    the user can fix (unreachable, refused, a table that does not fit, a missing driver), and on
    an empty window unless `require_spans` is False (the scheduled report says so itself).
    `environments` is pushed into every query (deployment.environment, unnamed kept)."""
    # Imported here: every `analyze` carries the options, few runs read ClickHouse.
    from collectors.clickhouse_queries import Window
    from collectors.clickhouse_schema import SchemaError
    from collectors.clickhouse_source import ClickHouseError
    from collectors.clickhouse_traces import load_clickhouse, options_from

    section = dict((config.sections.get("sources") or {}).get("clickhouse") or {})  # type: ignore[union-attr]
    for key, value in flags.items():
        if value is not None:
            section[key[len(FLAG_PREFIX):]] = value
    n1 = all_rules()["PF-DB001"]
    min_rep = int(config.thresholds("PF-DB001", n1.defaults, "", "")["min_repetitions"])
    try:
        loaded = load_clickhouse(spec, options_from(section, min_rep),
                                 Window(start_ns=start_ns, end_ns=end_ns, services=tuple(services),
                                        environments=tuple(environments)))
    except (ClickHouseError, SchemaError) as err:
        raise UserError(str(err)) from None
    if require_spans and not len(loaded.table):
        where = loaded.sources[0].path if loaded.sources else spec
        check = "--start/--end/--window, --service and --environment" if environments else \
            "--start/--end/--window and --service"
        raise UserError(f"no spans in the window at {where}{asked_for(environments)}; check {check}")
    return Inputs(loaded.table, loaded.sources, loaded.repairs, store=loaded.figures)
