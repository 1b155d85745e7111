"""The `profile-first` command line.

Exit codes: 0 success; 2 unusable input or arguments (a missing file, a file that is not
OTLP, a bad time, an unreachable Prometheus); 1 an internal error (a bug: please report it).

Each command lives in its own module under analyzer/commands and is imported only when it
runs: `--version` and `--help` cost the interpreter and click, not numpy, gRPC and requests.
"""

from __future__ import annotations

import importlib

import click

from analyzer import __version__
from analyzer.cliutil import UserError

# command name -> "module:attribute", imported on first use
LAZY_COMMANDS = {
    "analyze": "analyzer.commands.analyze:analyze_cmd",
    "capture": "analyzer.commands.capture:capture",
    "demo": "analyzer.commands.demo:demo",
    "config": "analyzer.commands.config:config",
    "report": "analyzer.commands.report:report",
    "history": "analyzer.commands.history:history",
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS and name not in self.commands:
            module, attr = LAZY_COMMANDS[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="profile-first")
def main() -> None:
    """Profile before you rewrite: find what makes a service slow, from the telemetry you have."""


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


if __name__ == "__main__":
    main()
