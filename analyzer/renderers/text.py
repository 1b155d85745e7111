"""The terminal report (rich): the same order as the Markdown one."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

from analyzer.renderers.phrases import PARTS, VERDICT_LABEL, ceiling_text, input_notes
from analyzer.renderers.run_notes import incomplete_lines, week_over_week_lines


def to_text(report: dict, width: int = 120, color: bool = False) -> str:
    buf = io.StringIO()
    con = Console(file=buf, width=width, force_terminal=color, color_system="standard" if color else None,
                  highlight=False)
    w, inp = report["window"], report["input"]
    con.print(f"[bold]profile-first[/] {w['start']} → {w['end']} · {inp['spans']:,} spans, "
              f"{inp['traces']:,} traces{input_notes(inp)}")
    for line in incomplete_lines(report):
        con.print("INCOMPLETE: ", style="bold yellow", end="")
        con.print(line, markup=False)
    style = {"recommended": "bold red", "not_recommended": "bold green", "insufficient_evidence": "bold yellow"}
    for s in report["services"]:
        v = s["verdict"]
        con.print()
        con.print(f"[bold]{s['service']}[/] ({s['runtime']}): [{style[v['rust_rewrite']]}]{VERDICT_LABEL[v['rust_rewrite']]}[/]"
                  f" — cause [bold]{v['cause']}[/]")
        con.print(f"  {v['reason']}")
        if s.get("rewrite_ceiling"):
            con.print(f"  Rewrite ceiling: {ceiling_text(s['rewrite_ceiling'])}")
        for i, f in enumerate(s.get("fix_first") or [], 1):
            con.print(f"  {i}. [cyan]{f['rule']}[/] {f['operation']}: {f['message']} "
                      f"→ saves {f['saving_ms_per_request']:.1f} ms/request")
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
            table.add_row(h["operation"], h["category"], f"{h['share']:.0%}", str(h["count"]),
                          f"{h['p50_ms']:.1f}", f"{h['p95_ms']:.1f}", f"{h['p99_ms']:.1f}",
                          *(f"{b[p]:.1f}" for p in PARTS))
        con.print(table)
        for h in s["hotspots"]:
            for f in h["findings"]:
                loc = f" at {f['location']}" if f.get("location") else ""
                con.print(f"  [cyan]{f['rule']}[/] {h['operation']}: {f['message']}{loc}")
                con.print(f"    fix: {f['remedy']}")
    changes = week_over_week_lines(report)
    if changes:
        con.print()
        con.print(f"[bold]Since the previous run[/] ({report['week_over_week']['previous']['window_end']})")
        for line in changes:
            con.print("  " + line, markup=False)
    for m in inp.get("missing_evidence") or []:
        con.print(f"[yellow]missing evidence[/] {m['signal']}: {m['reason']}")
    return buf.getvalue()
