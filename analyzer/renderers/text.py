"""The terminal report (rich): the same order as the Markdown one.

Every string that came from telemetry (service, runtime, operation, messages that quote
statements, evidence sources, errors from a server) goes through `for_rich_markup`: it is shown,
never interpreted as rich markup or terminal control sequences. Emoji codes are off for the same
reason (`:thumbs_up:` in a span name stays text).
"""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

from analyzer.renderers.escape import for_rich_markup as esc
from analyzer.renderers.phrases import PARTS, VERDICT_LABEL, ceiling_text, input_notes, per_request, span_counts
from analyzer.renderers.run_notes import incomplete_lines, week_over_week_lines

STYLE = {"recommended": "bold red", "not_recommended": "bold green", "insufficient_evidence": "bold yellow"}


def to_text(report: dict, width: int = 120, color: bool = False) -> str:
    buf = io.StringIO()
    con = Console(file=buf, width=width, force_terminal=color, color_system="standard" if color else None,
                  highlight=False, emoji=False)
    w, inp = report["window"], report["input"]
    con.print(f"[bold]profile-first[/] {esc(w['start'])} → {esc(w['end'])} · {span_counts(report)}"
              f"{esc(input_notes(inp))}")
    for line in incomplete_lines(report):
        con.print(f"[bold yellow]INCOMPLETE:[/] {esc(line)}")
    for s in report["services"]:
        v = s["verdict"]
        con.print()
        con.print(f"[bold]{esc(s['service'])}[/] ({esc(s['runtime'])}): "
                  f"[{STYLE[v['rust_rewrite']]}]{VERDICT_LABEL[v['rust_rewrite']]}[/] — cause [bold]{esc(v['cause'])}[/]")
        con.print(f"  {esc(v['reason'])}")
        if s.get("rewrite_ceiling"):
            con.print(f"  Rewrite ceiling: {esc(ceiling_text(s['rewrite_ceiling'], s['service']))}")
        for i, f in enumerate(s.get("fix_first") or [], 1):
            con.print(f"  {i}. [cyan]{esc(f['rule'])}[/] {esc(f['operation'])}: {esc(f['message'])} "
                      f"→ saves {f['saving_ms_per_request']:.1f} ms {esc(per_request(f['operation']))}")
        if not s["hotspots"]:
            continue
        table = Table(show_edge=False, pad_edge=False)
        for col, just in (("operation", "left"), ("category", "left"), ("share", "right"), ("count", "right"),
                          ("p50", "right"), ("p95", "right"), ("p99", "right")):
            table.add_column(col, justify=just)  # type: ignore[arg-type]
        for p in PARTS:
            table.add_column(p, justify="right")
        for h in s["hotspots"]:
            b = h["breakdown"]
            table.add_row(esc(h["operation"]), esc(h["category"]), f"{h['share']:.0%}", str(h["count"]),
                          f"{h['p50_ms']:.1f}", f"{h['p95_ms']:.1f}", f"{h['p99_ms']:.1f}",
                          *(f"{b[p]:.1f}" for p in PARTS))
        con.print(table)
        for h in s["hotspots"]:
            for f in h["findings"]:
                loc = f" at {esc(f['location'])}" if f.get("location") else ""
                con.print(f"  [cyan]{esc(f['rule'])}[/] {esc(h['operation'])}: {esc(f['message'])}{loc}")
                con.print(f"    fix: {esc(f['remedy'])}")
    changes = week_over_week_lines(report)
    if changes:
        con.print()
        con.print(f"[bold]Since the previous run[/] ({esc(report['week_over_week']['previous']['window_end'])})")
        for line in changes:
            con.print(f"  {esc(line)}")
    for m in inp.get("missing_evidence") or []:
        con.print(f"[yellow]missing evidence[/] {esc(m['signal'])}: {esc(m['reason'])}")
    return buf.getvalue()
