"""`profile-first demo`: run a small instrumented system on loopback and analyze it.

    profile-first demo                                  # ~45 s of load, report on stdout
    profile-first demo --duration 20s --format md --output demo.md
    profile-first demo --save-capture demo.otlp.jsonl   # keep the telemetry to analyze again

Nothing needs to be installed or running: the demo starts profile-first's own OTLP receiver
and five services (plus three downstreams and a cache server) as child processes on
127.0.0.1, each with one real cause, and stops them all when it ends or on Ctrl-C.
"""

from __future__ import annotations

import click

from analyzer.cliutil import UserError, parse_duration
from analyzer.demo.run import DEFAULT_DURATION_S, MIN_DURATION_S, DemoError, run_demo
from analyzer.output import check_output
from analyzer.renderers import format_for_path, formats

__all__ = ["demo"]

MAX_DURATION_S = 600.0


def _duration(value: str) -> float:
    seconds = parse_duration(value)
    if not MIN_DURATION_S <= seconds <= MAX_DURATION_S:
        raise UserError(f"--duration must be between {MIN_DURATION_S:.0f}s and {MAX_DURATION_S / 60:.0f}m")
    return seconds


@click.command("demo")
@click.option("--duration", default=f"{DEFAULT_DURATION_S:.0f}s", show_default=True, metavar="DURATION",
              help="How long to load the demo services, e.g. 20s or 1m (startup and analysis come on top).")
@click.option("--format", "fmt", type=click.Choice(formats()), default=None,
              help="Report format (default: from --output's extension, else text).")
@click.option("--output", metavar="FILE", help="Write the report here (atomically) instead of stdout.")
@click.option("--save-capture", metavar="FILE", type=click.Path(dir_okay=False),
              help="Keep what was received as OTLP JSON lines: traces in FILE, metrics beside it "
                   "(demo.otlp.jsonl -> demo.metrics.otlp.jsonl), for `analyze --traces F --metrics M`.")
@click.option("--quiet", is_flag=True, help="No progress bar or summary on stderr.")
def demo(duration: str, fmt: str | None, output: str | None, save_capture: str | None, quiet: bool) -> None:
    """Run a demo system (database, network, cache, CPU and GC causes) and analyze it."""
    seconds = _duration(duration)
    for path in (output, save_capture):
        if path is not None:
            check_output(path)
    fmt = fmt or format_for_path(output)  # refused now, not after the demo ran
    try:
        run_demo(seconds, fmt=fmt, output=output, progress=not quiet, save_capture=save_capture)
    except DemoError as e:
        raise click.ClickException(f"demo failed: {e}") from e
    except KeyboardInterrupt:
        click.echo("profile-first: demo interrupted; every demo process was stopped", err=True)
        raise SystemExit(130) from None
