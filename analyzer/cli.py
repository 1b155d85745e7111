"""The `profile-first` command line.

Exit codes: 0 success; 2 unusable input or arguments (a missing file, a file that is not
OTLP, a bad time, an unreachable Prometheus); 1 an internal error (a bug: please report it).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import click

from analyzer import __version__
from analyzer.config import ConfigError, load_config
from analyzer.pipeline import Inputs, analyze
from analyzer.render import to_json, to_markdown, to_text
from collectors.otlp_files import InputError
from collectors.otlp_traces import load_traces

EXIT_USAGE = 2
FORMATS = ("text", "json", "md")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class UserError(click.ClickException):
    """An error the user can fix; printed as one line, exit code 2."""

    exit_code = EXIT_USAGE

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.echo(f"profile-first: error: {self.message}", err=True)


def parse_time(value: str) -> float:
    """RFC 3339 (`2026-11-20T00:00:00Z`) or unix seconds -> unix seconds."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise UserError(f"time {value!r} is neither RFC 3339 (2026-11-20T00:00:00Z) nor unix seconds") from e
    if dt.tzinfo is None:
        raise UserError(f"time {value!r} has no time zone; add Z or an offset such as +02:00")
    return dt.timestamp()


def parse_duration(value: str) -> float:
    """`30s`, `10m`, `2h`, `7d`, `1w` -> seconds."""
    m = _DURATION.match(value.strip())
    if not m:
        raise UserError(f"duration {value!r} is not like 30s, 10m, 2h, 7d or 1w")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def resolve_window(start: str | None, end: str | None, window: str | None) -> tuple[float | None, float | None]:
    if window and start:
        raise UserError("give either --start or --window (with an optional --end), not both")
    s = parse_time(start) if start else None
    e = parse_time(end) if end else None
    if window:
        e = e if e is not None else datetime.now(timezone.utc).timestamp()
        s = e - parse_duration(window)
    if s is not None and e is not None and s >= e:
        raise UserError("the window is empty: --start must be before --end")
    return s, e


def write_atomically(path: str, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a report."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent or Path("."), prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render(report: dict, fmt: str, to_terminal: bool) -> str:
    if fmt == "json":
        return to_json(report)
    if fmt == "md":
        return to_markdown(report)
    return to_text(report, color=to_terminal)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="profile-first")
def main() -> None:
    """Profile before you rewrite: find what makes a service slow, from the telemetry you have."""


@main.command("analyze")
@click.option("--traces", "traces", multiple=True, metavar="PATH",
              help="OTLP trace file or directory (JSON lines, protobuf, framed, gzip/zstd). Repeatable.")
@click.option("--start", metavar="T", help="Window start: RFC 3339 or unix seconds.")
@click.option("--end", metavar="T", help="Window end: RFC 3339 or unix seconds.")
@click.option("--window", metavar="DURATION", help="Window length ending at --end or now, e.g. 7d.")
@click.option("--service", "services", multiple=True, metavar="NAME", help="Only these services. Repeatable.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format (default: from --output's extension, else text).")
@click.option("--output", metavar="FILE", help="Write the report here (atomically) instead of stdout.")
@click.option("--config", "config_path", metavar="FILE", help="TOML config: thresholds, overrides, Prometheus.")
def analyze_cmd(traces: tuple[str, ...], start: str | None, end: str | None, window: str | None,
                services: tuple[str, ...], fmt: str | None, output: str | None, config_path: str | None) -> None:
    """Analyze traces (and metrics) and print the verdict per service."""
    if not traces:
        raise UserError("nothing to analyze: give --traces PATH")
    s, e = resolve_window(start, end, window)
    try:
        config = load_config(config_path)
        loaded = load_traces(list(traces))
    except (InputError, ConfigError) as err:
        raise UserError(str(err)) from err
    if len(loaded.table) == 0:
        raise UserError(f"no spans could be read from {', '.join(traces)}")
    report = analyze(Inputs(loaded.table, loaded.sources, loaded.repairs), config,
                     start_ns=int(s * 1e9) if s is not None else None,
                     end_ns=int(e * 1e9) if e is not None else None,
                     services=list(services) or None)
    if fmt is None:
        fmt = {".json": "json", ".md": "md"}.get(Path(output).suffix, "text") if output else "text"
    if output:
        write_atomically(output, render(report, fmt, to_terminal=False))
    else:
        click.echo(render(report, fmt, to_terminal=sys.stdout.isatty()), nl=False)



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
        click.echo(f"{r.code}  {r.category:<9}  {r.name}: {r.summary}")


if __name__ == "__main__":
    main()
