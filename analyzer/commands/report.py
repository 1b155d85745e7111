"""`profile-first report`: the scheduled report — dated folder, history, delivery, and an exit code
cron and CI can act on.

Exit codes: 0 complete · 3 written but incomplete (a service matched nothing, no spans in the
window, no series from Prometheus, a verdict that could not be measured) · 4 a `--fail-on`
condition holds · 5 written, but a delivery failed · 2 unusable input or settings · 1 a bug.
When several hold, the first in the order 4, 5, 3 is returned.
"""

from __future__ import annotations

import re
import sqlite3
import sys
import tempfile
from pathlib import Path

import click

from analyzer.allocator import fix_malloc_thresholds
from analyzer.cliutil import UserError
from analyzer.compare import week_over_week
from analyzer.history import History, HistoryError
from analyzer.commands.capture import receiver_config
from analyzer.commands.clickhouse import read_clickhouse
from analyzer.commands.stores import FLAG_PREFIX as STORE_PREFIX
from analyzer.commands.stores import KINDS, read_store, store_options, store_requested
from analyzer.config import ConfigError, load_config
from analyzer.delivery import Mail, Published, email_message, post_webhook, send_email, subject, webhook_payload
from analyzer.environments import environment_filter
from analyzer.evidence import evidence_pack
from analyzer.gather import (listen_for, prom_config, prometheus_progress, query_prometheus, read_inputs, read_profiles,
                             span_mapping)
from analyzer.output import check_output
from analyzer.publish import publish
from analyzer.renderers import formats, render
from analyzer.renderers.escape import for_terminal
from analyzer.renderers.run_notes import change_items
from analyzer.weekly import (Plan, export_credentials, make_plan, prometheus_settings, secret,
                             team_reports)

EXIT_INCOMPLETE = 3
EXIT_GATE = 4
EXIT_DELIVERY = 5
FAIL_ON = ("recommended", "regression", "incomplete")
EXTENSIONS = {"text": "txt"}  # file extension per format, when it is not the format's name


@click.command("report")
@click.option("--config", "config_path", metavar="FILE", help="TOML config (docs/config.md); flags override it.")
@click.option("--traces", multiple=True, metavar="PATH", help="OTLP trace file or directory. Repeatable.")
@click.option("--metrics", multiple=True, metavar="PATH", help="OTLP metrics file. Repeatable.")
@click.option("--prometheus", metavar="URL", help="Prometheus-compatible API (credentials: see [credentials]).")
@click.option("--clickhouse", metavar="URL", help="ClickHouse otel_traces store (or chdb:PATH); [sources.clickhouse].")
@click.option("--profile", "profiles", multiple=True, metavar="[SERVICE=]PATH",
              help="CPU profile file or directory (pprof, folded, speedscope, .cpuprofile). Repeatable.")
@click.option("--pyroscope", metavar="URL", help="Grafana Pyroscope: each service's CPU profile for the window.")
@click.option("--start", metavar="T", help="Window start: RFC 3339 or unix seconds.")
@click.option("--end", metavar="T", help='Window end: RFC 3339, unix seconds, "now" or "last_full_day" (default).')
@click.option("--window", metavar="DURATION", help="Window length (default 7d).")
@click.option("--service", "services", multiple=True, metavar="NAME",
              help="Only these services, in one report (instead of the config's teams). Repeatable.")
@click.option("--team", multiple=True, metavar="NAME", help="Only this [[team]] of the config. Repeatable.")
@click.option("--environment", "environments", multiple=True, metavar="ENV",
              help="deployment.environment to report on (default: production; * for all, no filter). Repeatable.")
@click.option("--output-dir", metavar="DIR", help="Reports go to DIR/<ISO week>/ (default: reports).")
@click.option("--format", "formats_", multiple=True, type=click.Choice(formats()),
              help="A file per format. Repeatable (default: json and md).")
@click.option("--history", metavar="FILE", help="SQLite history file (default: reports/history.sqlite).")
@click.option("--no-history", is_flag=True, help="Neither read nor record history.")
@click.option("--regression-pct", type=click.FloatRange(0, min_open=True), metavar="PCT",
              help="p99 or impact up by more than this is a regression (default 10).")
@click.option("--metrics-textfile", metavar="FILE", help="Also write the findings as Prometheus text exposition.")
@click.option("--push-metrics", metavar="URL", help="Also push the findings as OTLP/HTTP metrics to URL.")
@click.option("--no-delivery", is_flag=True, help="Write the files only; skip [delivery] (webhook, e-mail, push).")
@click.option("--evidence-pack", "evidence", multiple=True, metavar="SERVICE",
              help="Also write evidence-SERVICE.md, the pre-rewrite evidence pack of SERVICE. Repeatable.")
@click.option("--fail-on", "fail_on", multiple=True, type=click.Choice(FAIL_ON),
              help=f"Exit {EXIT_GATE} when a verdict is recommended, a regression appeared or the report is "
                   "incomplete. Repeatable.")
@store_options
def report(config_path: str | None, fail_on: tuple[str, ...], formats_: tuple[str, ...], evidence: tuple[str, ...],
           **flags: object) -> None:
    """Write the scheduled report into a dated folder, compare it with the last run, deliver it."""
    try:
        config = load_config(config_path)
    except ConfigError as err:
        raise UserError(str(err)) from err
    store_flags = {k: flags.pop(k) for k in list(flags) if k.startswith(STORE_PREFIX)}
    store_flag = next((k for k in KINDS if store_flags.get(STORE_PREFIX + k)), None)
    plan = make_plan(config, {**flags, "formats": formats_, "store_flag": store_flag,
                              "store": store_requested(store_flags, config)})
    export_credentials(plan)
    targets = delivery_targets(plan)  # unset secrets fail now, not after the run
    for path in textfiles(plan).values():
        check_output(path)
    # An existing history is opened before the long part, so a bad file fails in a second; a new
    # one is created only when there is a run to record.
    history = open_history(plan) if plan.history and plan.history.exists() else None
    fix_malloc_thresholds()
    reports = build_reports(plan, store_flags)
    trends = compare_with_history(plan, history, reports) if history else {}
    packs = evidence_packs(evidence, reports)  # first: a missing service makes its report incomplete
    files = {f"{team}.{EXTENSIONS.get(fmt, fmt)}": render_file(plan, r, fmt, trends.get(team))
             for team, r in reports.items() for fmt in plan.formats}
    files.update(packs)
    try:
        folder = publish(files, plan.folder)
    except OSError as err:
        raise UserError(f"cannot write the reports to {plan.folder}: {err.strerror or err}") from err
    click.echo(f"{folder}/: {', '.join(files)}")
    for p in (p for r in reports.values() for p in r["completeness"]["problems"]):
        click.echo(f"profile-first: incomplete: {for_terminal(p['message'])}", err=True)
    failed = False
    if plan.history:
        try:
            history = history or History(plan.history)
            history.record(plan.run_id, {t.name: (reports[t.name], list(t.services)) for t in plan.teams})
            history.close()
        except (HistoryError, sqlite3.Error) as err:
            click.echo(f"profile-first: error: the run was not recorded in {plan.history}: {err}", err=True)
            failed = True
    for problem in [*export_findings(plan, reports), *deliver(plan, targets, reports, files)]:
        click.echo(f"profile-first: error: {problem}; the report files are in {folder}", err=True)
        failed = True
    sys.exit(exit_code(reports, fail_on, delivery_failed=failed))


def delivery_targets(plan: Plan) -> tuple[str | None, Mail | None]:
    """(webhook URL, mail settings) from [delivery] and the secrets [credentials] names."""
    webhook = plan.delivery.get("webhook")
    url = None
    if webhook is not None:
        url = secret(plan, "webhook_url")
        if url is None:
            raise UserError("[delivery.webhook] needs credentials.webhook_url: the NAME of the environment variable "
                            "holding the webhook URL")
    email = plan.delivery.get("email")
    mail = None
    if email is not None:
        user = secret(plan, "smtp_user")
        password = secret(plan, "smtp_password")
        if password and not user:
            raise UserError("credentials.smtp_password is set but credentials.smtp_user is not")
        mail = Mail(host=email["host"], port=email.get("port", 587), security=email.get("security", "starttls"),
                    sender=email["from"], to=tuple(email["to"]), user=user, password=password,
                    timeout=email.get("timeout", 30.0), retries=email.get("retries", 2))
    return url, mail


def deliver(plan: Plan, targets: tuple[str | None, Mail | None], reports: dict[str, dict],
            files: dict[str, str]) -> list[str]:
    """Send the summary; the problems, one line each (the files are already written)."""
    url, mail = targets
    problems = []
    location = f"{plan.url.rstrip('/')}/{plan.week}" if plan.url else str(plan.folder.resolve())
    published = Published(plan.week, location, {team: [n for n in files if n.startswith(f"{team}.")]
                                                for team in reports})
    if url is not None:
        hook = plan.delivery["webhook"]
        problem = post_webhook(url, webhook_payload(reports, published), hook.get("timeout", 10.0),
                               hook.get("retries", 3))
        if problem:
            problems.append(problem)
    if mail is not None:
        prefix = plan.delivery["email"].get("subject", "profile-first weekly")
        for team, report in reports.items():
            markdown = files.get(f"{team}.md") or render(report, "md")
            msg = email_message(mail, subject(prefix, team, report, plan.week), markdown, files.get(f"{team}.html"))
            problem = send_email(mail, msg)
            if problem:
                problems.append(problem)
    return problems


def open_history(plan: Plan) -> History | None:
    if plan.history is None:
        return None
    try:
        return History(plan.history)
    except HistoryError as err:
        raise UserError(str(err)) from err


def compare_with_history(plan: Plan, history: History, reports: dict[str, dict]) -> dict[str, list]:
    """Add `week_over_week` to each report that has an earlier run of its scope; the trends for HTML."""
    trends = {}
    for team in plan.teams:
        report = reports[team.name]
        services = list(team.services)
        previous = history.previous(team.name, services, report["window"]["end"], plan.environments)
        if previous is not None:
            entry, before = previous
            report["week_over_week"] = week_over_week(report, before, entry.id, plan.regression_pct)
        trends[team.name] = history.trend(team.name, services, environments=plan.environments)
    return trends


def evidence_packs(services: tuple[str, ...], reports: dict[str, dict]) -> dict[str, str]:
    """evidence-SERVICE.md per service asked for; one not in any report makes the first one incomplete."""
    files = {}
    for service in services:
        report = next((r for r in reports.values() if any(s["service"] == service for s in r["services"])), None)
        if report is None:
            first = next(iter(reports.values()))
            first["completeness"]["complete"] = False
            first["completeness"]["problems"].append({
                "kind": "service_not_found", "service": service,
                "message": f"no evidence pack for {service!r}: the service is in no report of this run"})
            continue
        name = re.sub(r"[^A-Za-z0-9._-]", "_", service)
        files[f"evidence-{name}.md"] = evidence_pack(report, service, ["profile-first", *sys.argv[1:]])
    return files


def textfiles(plan: Plan) -> dict[str, str]:
    """The metrics textfile per team: the configured path, or NAME.TEAM.prom beside it when there are teams."""
    if not plan.metrics_textfile:
        return {}
    path = Path(plan.metrics_textfile)
    if len(plan.teams) == 1:
        return {plan.teams[0].name: str(path)}
    return {t.name: str(path.with_name(f"{path.stem}.{t.name}{path.suffix}")) for t in plan.teams}


def export_findings(plan: Plan, reports: dict[str, dict]) -> list[str]:
    """The findings as metrics (analyzer/export_metrics.py): a textfile per team, an OTLP push per team."""
    if not (plan.metrics_textfile or plan.push_metrics):
        return []
    from analyzer.export_metrics import ExportError, push_otlp, write_textfile

    problems = []
    paths = textfiles(plan)
    for team, report in reports.items():
        if team in paths:
            try:
                write_textfile(report, paths[team])
            except UserError as err:
                problems.append(f"metrics textfile: {err.message}")
        if plan.push_metrics:
            try:
                push_otlp(report, plan.push_metrics)
            except ExportError as err:
                problems.append(str(err))
    return problems


def render_file(plan: Plan, report: dict, fmt: str, trend: list | None) -> str:
    if fmt != "html":
        return render(report, fmt)
    from analyzer.renderers.html import render_html  # imported on use: it brings matplotlib

    runs = [{"id": entry.id, "report": old} for entry, old in trend or ()]
    changes = [{"kind": kind, "service": line.service, "operation": line.operation, "message": line.text}
               for kind, line in change_items(report)]
    return render_html(report, history={"changes": changes, "runs": runs} if runs else None,
                       trace_url_template=plan.trace_url)


def build_reports(plan: Plan, store_flags: dict[str, object]) -> dict[str, dict]:
    with tempfile.TemporaryDirectory(prefix="profile-first-") as tmp:
        traces = list(plan.traces)
        metrics = list(plan.metrics)
        if plan.listen:
            captured = listen_for(plan.listen, str(Path(tmp) / "capture.binpb.gz"), receiver_config())
            traces.append(str(captured.traces_path))
            if captured.metrics_path is not None:
                metrics.append(str(captured.metrics_path))
        inputs = read_inputs(traces, metrics, span_columns=span_mapping(None, plan.config))
    if plan.store:
        with prometheus_progress(plan.store.capitalize()) as progress:
            span_metrics = (plan.prometheus, prom_config(plan.config, prometheus_settings(plan))) \
                if plan.prometheus else None
            pulled = read_store(plan.store, store_flags, plan.config, plan.start, plan.end, plan.services or [],
                                progress, environments=plan.environments, prometheus=span_metrics)
        pulled.signals = inputs.signals
        inputs = pulled
    if plan.clickhouse:
        store = read_clickhouse(plan.clickhouse, {}, plan.config, int(plan.start * 1e9), int(plan.end * 1e9),
                                plan.services or [], require_spans=False,  # an empty window: completeness says so
                                environments=plan.environments)
        store.signals = inputs.signals
        inputs = store
    if plan.prometheus:
        inputs.signals = query_prometheus(plan.prometheus, plan.services, plan.start, plan.end, plan.config,
                                          prometheus_settings(plan), inputs.signals)
    if plan.profiles or plan.pyroscope:
        read_profiles(inputs, plan.profiles, plan.pyroscope, plan.start, plan.end, plan.services or [])
    inputs.table, environments = environment_filter(inputs.table, plan.environments)
    return team_reports(plan, inputs, environments)


def exit_code(reports: dict[str, dict], fail_on: tuple[str, ...], delivery_failed: bool) -> int:
    incomplete = any(not r["completeness"]["complete"] for r in reports.values())
    recommended = any(s["verdict"]["rust_rewrite"] == "recommended" for r in reports.values() for s in r["services"])
    regression = any((r.get("week_over_week") or {}).get("regressions") for r in reports.values())
    gate = {"recommended": recommended, "regression": regression, "incomplete": incomplete}
    if any(gate[c] for c in fail_on):
        return EXIT_GATE
    if delivery_failed:
        return EXIT_DELIVERY
    return EXIT_INCOMPLETE if incomplete else 0
