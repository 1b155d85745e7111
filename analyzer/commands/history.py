"""`profile-first history list|show RUN|diff A B`: the runs `report` recorded, read back."""

from __future__ import annotations

import json
import sys

import click

from analyzer.cliutil import UserError
from analyzer.compare import week_over_week
from analyzer.config import ConfigError, load_config
from analyzer.history import History, HistoryError
from analyzer.renderers import formats, render
from analyzer.renderers.escape import for_markdown, for_terminal
from analyzer.renderers.run_notes import week_over_week_lines

DEFAULT_PATH = "reports/history.sqlite"
LIST_FORMATS = ("text", "json", "md")


def _options(fn):
    fn = click.option("--history", "path", metavar="FILE", help=f"History file (default: the config's, else "
                                                                  f"{DEFAULT_PATH}).")(fn)
    return click.option("--config", "config_path", metavar="FILE", help="Take the history path from this config.")(fn)


@click.group("history")
def history() -> None:
    """The runs `report` recorded: list them, show one, compare two."""


@history.command("list")
@_options
@click.option("--format", "fmt", type=click.Choice(LIST_FORMATS), default="text", show_default=True)
def list_cmd(path: str | None, config_path: str | None, fmt: str) -> None:
    """Every recorded report: id, team, window, verdicts, completeness."""
    with _open(path, config_path) as h:
        rows = [(e, _verdicts(_get(h, e.id))) for e in h.entries()]
        if not rows:
            click.echo(f"profile-first: no runs recorded in {h.path} yet", err=True)
    if fmt == "json":
        click.echo(json.dumps([{**e.to_dict(), "verdicts": v} for e, v in rows], indent=2, ensure_ascii=False))
        return
    if fmt == "md":
        click.echo("| id | run | team | window end | complete | verdicts |\n|---|---|---|---|---|---|")
        for e, v in rows:
            click.echo(f"| {e.id} | {e.run} | {for_markdown(e.team)} | {e.window_end} | {'yes' if e.complete else 'no'}"
                       f" | {for_markdown(_verdict_text(v))} |")
        return
    for e, v in rows:
        click.echo(f"{e.id:>5}  {e.run}  {for_terminal(e.team):<12} {e.window_start} → {e.window_end}  "
                   f"{'complete  ' if e.complete else 'INCOMPLETE'}  {for_terminal(_verdict_text(v))}")


@history.command("show")
@click.argument("run", type=int)
@_options
@click.option("--format", "fmt", type=click.Choice(formats()), default="text", show_default=True)
def show_cmd(run: int, path: str | None, config_path: str | None, fmt: str) -> None:
    """The report recorded as RUN (an id from `history list`), rendered as `analyze` would."""
    with _open(path, config_path) as h:
        report = _get(h, run)
    click.echo(render(report, fmt, color=sys.stdout.isatty() and fmt == "text"), nl=False)


@history.command("diff")
@click.argument("a", type=int)
@click.argument("b", type=int)
@_options
@click.option("--format", "fmt", type=click.Choice(LIST_FORMATS), default="text", show_default=True)
@click.option("--regression-pct", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True,
              help="p99 or total time up by more than this is a regression.")
def diff_cmd(a: int, b: int, path: str | None, config_path: str | None, fmt: str, regression_pct: float) -> None:
    """What changed from run A to run B: verdicts, new and resolved hot spots, regressions."""
    with _open(path, config_path) as h:
        before, after = _get(h, a), _get(h, b)
    changes = week_over_week(after, before, a, regression_pct)
    if fmt == "json":
        click.echo(json.dumps({"from": a, "to": b, **changes}, indent=2, ensure_ascii=False))
        return
    lines = week_over_week_lines({"week_over_week": changes})
    if fmt == "md":
        click.echo(f"## Run {a} → run {b}\n\n" + "\n".join(f"- {for_markdown(line)}" for line in lines))
    else:
        click.echo(f"run {a} → run {b}\n" + "\n".join(f"  {for_terminal(line)}" for line in lines))


def _open(path: str | None, config_path: str | None) -> History:
    if path is None and config_path is not None:
        try:
            path = load_config(config_path).sections.get("history", {}).get("path")
        except ConfigError as err:
            raise UserError(str(err)) from err
    try:
        return History(path or DEFAULT_PATH, create=False)
    except HistoryError as err:
        raise UserError(str(err)) from err


def _get(h: History, run: int) -> dict:
    try:
        return h.get(run)[1]
    except HistoryError as err:
        raise UserError(str(err)) from err


def _verdicts(report: dict) -> dict[str, str]:
    return {s["service"]: s["verdict"]["rust_rewrite"] for s in report["services"]}


def _verdict_text(verdicts: dict[str, str]) -> str:
    return ", ".join(f"{name} {v}" for name, v in verdicts.items())

