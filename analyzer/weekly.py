"""A scheduled `report` run: the plan (config file, then flags over it) and the reports it makes.

The plan resolves everything before any telemetry is read, so a bad setting fails in a second
with exit 2 instead of after a long Prometheus query. A run makes one report per team (or one
for the whole scope), each marked with what it could not answer (analyzer.completeness).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from analyzer.cliutil import UserError, parse_duration, parse_time
from analyzer.completeness import assess
from analyzer.config import Config
from analyzer.environments import environments_asked, with_environment_matcher
from analyzer.pipeline import Inputs, analyze, rfc3339
from collectors.http_auth import ENV_PASSWORD, ENV_TOKEN, ENV_USER

SOURCE_FLAGS = ("traces", "metrics", "prometheus", "clickhouse", "listen", "store_flag")


@dataclass(frozen=True)
class Team:
    name: str  # also the report's file name
    services: tuple[str, ...]  # empty: every service in the scope


@dataclass
class Plan:
    config: Config
    traces: list[str]
    metrics: list[str]
    prometheus: str | None
    clickhouse: str | None  # a ClickHouse otel_traces store: URL or chdb:PATH
    store: str | None  # a trace store kind (tempo, jaeger, zipkin) from --tempo/... or [sources.KIND] url
    listen: float | None  # seconds of OTLP capture, or None
    start: float
    end: float
    teams: list[Team]
    environments: tuple[str, ...]
    out_dir: Path
    formats: tuple[str, ...]
    url: str | None
    trace_url: str | None
    metrics_textfile: str | None
    push_metrics: str | None
    history: Path | None
    regression_pct: float
    delivery: dict = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict)  # role -> NAME of the env variable
    profiles: list[str] = field(default_factory=list)  # CPU profile files or directories, [SERVICE=]PATH
    pyroscope: str | None = None

    @property
    def week(self) -> str:
        """The ISO week of the window's last day, e.g. 2026-W48: the report folder's name."""
        year, week, _ = datetime.fromtimestamp(self.end - 1, timezone.utc).isocalendar()
        return f"{year}-W{week:02d}"

    @property
    def run_id(self) -> str:
        """One id for the reports of this run, e.g. 2026-W48@20261130T061502Z."""
        return f"{self.week}@{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"

    @property
    def folder(self) -> Path:
        return self.out_dir / self.week

    @property
    def services(self) -> list[str] | None:
        """Every service any team asks for; None: all services found."""
        if any(not t.services for t in self.teams):
            return None
        return sorted({s for t in self.teams for s in t.services})


def make_plan(config: Config, flags: dict) -> Plan:
    """The run's plan: the config's tables, each setting overridden by its flag when given."""
    sec = config.sections
    sources, scope, window = sec.get("sources", {}), sec.get("scope", {}), sec.get("window", {})
    overridden = any(flags.get(k) for k in SOURCE_FLAGS)
    if overridden:
        sources = {}  # sources on the command line replace the file's, they do not add to them
    outputs, history = sec.get("outputs", {}), sec.get("history", {})
    start, end = _window(flags, window)
    services = tuple(flags.get("services") or scope.get("services", ()))
    if flags.get("services"):
        teams = [Team("report", services)]
    else:
        teams = [Team(t["name"], tuple(t["services"])) for t in sec.get("team", [])] or [Team("report", services)]
        if flags.get("team"):
            wanted = set(flags["team"])
            unknown = wanted - {t.name for t in teams}
            if unknown:
                raise UserError(f"no [[team]] named {', '.join(sorted(unknown))} in the config; "
                                f"teams: {', '.join(t.name for t in teams)}")
            teams = [t for t in teams if t.name in wanted]
    listen = flags.get("listen") or sources.get("listen")
    plan = Plan(
        config=config,
        traces=list(flags.get("traces") or sources.get("traces", [])),
        metrics=list(flags.get("metrics") or sources.get("metrics", [])),
        prometheus=flags.get("prometheus") or sources.get("prometheus"),
        clickhouse=flags.get("clickhouse") or (sources.get("clickhouse") or {}).get("url"),
        store=flags.get("store_flag") if overridden else flags.get("store"),
        listen=parse_duration(listen) if listen else None,
        start=start,
        end=end,
        teams=teams,
        environments=environments_asked(flags.get("environments") or scope.get("environments", ("production",))),
        out_dir=Path(flags.get("output_dir") or outputs.get("dir", "reports")),
        formats=tuple(flags.get("formats") or outputs.get("formats", ("json", "md"))),
        url=outputs.get("url"),
        trace_url=outputs.get("trace_url"),
        metrics_textfile=flags.get("metrics_textfile") or outputs.get("metrics_textfile"),
        push_metrics=None if flags.get("no_delivery") else flags.get("push_metrics") or sec.get("delivery", {}).get(
            "push_metrics"),
        history=None if flags.get("no_history") else Path(flags.get("history") or history.get("path",
                                                                                               "reports/history.sqlite")),
        regression_pct=float(flags.get("regression_pct") or history.get("regression_pct", 10.0)),
        delivery={} if flags.get("no_delivery") else dict(sec.get("delivery", {})),
        credentials=dict(sec.get("credentials", {})),
        profiles=list(flags.get("profiles") or sources.get("profiles", [])),
        pyroscope=flags.get("pyroscope") or sources.get("pyroscope"),
    )
    if sum(map(bool, (plan.traces or plan.listen, plan.clickhouse, plan.store))) > 1:
        raise UserError("read traces from one kind of source at a time: files (or listen), ClickHouse, or one trace "
                        "store")
    if not (plan.traces or plan.metrics or plan.prometheus or plan.listen or plan.clickhouse or plan.store):
        raise UserError("nothing to report on: give [sources] in the config, or --traces, --metrics, --prometheus, "
                        "--clickhouse or --tempo/--jaeger/--zipkin")
    return plan


def _window(flags: dict, window: dict) -> tuple[float, float]:
    """`length` ending at `end`; by default the 7 full days (UTC) before today."""
    length = parse_duration(flags.get("window") or window.get("length", "7d"))
    if flags.get("start"):
        start = parse_time(flags["start"])
        end = parse_time(flags["end"]) if flags.get("end") else start + length
    else:
        spec = flags.get("end") or window.get("end", "last_full_day")
        if spec == "last_full_day":
            today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
            end = today.timestamp()
        elif spec == "now":
            end = datetime.now(timezone.utc).timestamp()
        else:
            end = parse_time(spec)
        start = end - length
    if start >= end:
        raise UserError("the window is empty: its start must be before its end")
    return start, end


def prometheus_settings(plan: Plan) -> dict:
    """The [prometheus] flags for gather.query_prometheus: the environment filter added to its matchers."""
    section = dict(plan.config.sections.get("prometheus", {}))
    if plan.environments:
        section["extra_matchers"] = with_environment_matcher(section.get("extra_matchers", ""), plan.environments)
    return section


def export_credentials(plan: Plan) -> None:
    """Point the Prometheus client's variables at the ones the config names (in this process only)."""
    if not plan.prometheus:
        return
    for role, target in (("prometheus_token", ENV_TOKEN), ("prometheus_user", ENV_USER),
                         ("prometheus_password", ENV_PASSWORD)):
        value = secret(plan, role)
        if value is not None:
            os.environ[target] = value


def secret(plan: Plan, role: str) -> str | None:
    """The value of the variable the config names for `role`; UserError when it is named but unset."""
    name = plan.credentials.get(role)
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise UserError(f"credentials.{role} names ${name}, which is not set in the environment")
    return value


def team_reports(plan: Plan, inputs: Inputs, environments: dict | None = None) -> dict[str, dict]:
    """One report per team, each with its `completeness` (and `environment_filter` when one applied)."""
    t = inputs.table
    known = sorted(set(t.services) | set(inputs.signals.services if inputs.signals else ()))
    span_window = None
    if len(t):
        span_window = (rfc3339(float(t.start.min()) / 1e9), rfc3339(float(t.end.max()) / 1e9))
    start_ns, end_ns = int(plan.start * 1e9), int(plan.end * 1e9)
    in_window = int(((t.start >= start_ns) & (t.start < end_ns)).sum())
    reports = {}
    for team in plan.teams:
        report = analyze(inputs, plan.config, start_ns=start_ns, end_ns=end_ns, services=list(team.services) or None)
        if team.name != "report":
            report["team"] = team.name
        if environments is not None:
            report["environment_filter"] = environments
        report["completeness"] = assess(report, requested=list(team.services), known=known,
                                        traces_given=bool(plan.traces or plan.listen or plan.clickhouse or plan.store), spans_in_window=in_window,
                                        span_window=span_window,
                                        prometheus=plan.prometheus, signals=inputs.signals,
                                        environment_filter=environments)
        reports[team.name] = report
    return reports
