"""`profile-first config check FILE`: every problem of a config file, one per line (exit 2), or ok."""

from __future__ import annotations

import click

from analyzer.cliutil import EXIT_USAGE
from analyzer.config import ConfigError, read_config
from analyzer.renderers.escape import for_terminal


@click.group("config")
def config() -> None:
    """Check config files (the reference is docs/config.md)."""


@config.command("check")
@click.argument("path", metavar="FILE")
def check(path: str) -> None:
    """Validate FILE against the config schema: unknown names (with a did-you-mean) and bad values."""
    try:
        data = read_config(path)
    except ConfigError as err:
        for problem in err.problems:
            click.echo(f"{for_terminal(path)}: {for_terminal(problem)}", err=True)
        raise SystemExit(EXIT_USAGE) from None
    click.echo(f"{for_terminal(path)}: ok ({', '.join(sorted(data)) or 'empty'})")
