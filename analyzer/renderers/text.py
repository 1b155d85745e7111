"""The terminal report (rich): the same order as the Markdown one.

Every string that came from telemetry (service, runtime, operation, messages that quote
statements, evidence sources, errors from a server) goes through `for_rich_markup`: it is shown,
never interpreted as rich markup or terminal control sequences. Emoji codes are off for the same
reason (`:thumbs_up:` in a span name stays text).
"""

from __future__ import annotations

import io

from analyzer.renderers import profile as profile_section
from analyzer.renderers.escape import for_rich_markup as esc
from analyzer.renderers.phrases import (VERDICT_LABEL, Said, breakdown_parts, ceiling_text, environment_note,
                                        input_notes, per_request, reason_text, remedy_text, requests, span_counts)
from analyzer.renderers.run_notes import incomplete_lines, week_over_week_lines

STYLE = {"recommended": "bold red", "not_recommended": "bold green", "insufficient_evidence": "bold yellow"}


def to_text(report: dict, width: int = 120, color: bool = False) -> str:
    # rich costs ~40 ms to import: only runs that print text pay it, not `--format json`.
    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    con = Console(file=buf, width=width, force_terminal=color, color_system="standard" if color else None,
                  highlight=False, emoji=False)
    w, inp = report["window"], report["input"]
    con.print(f"[bold]profile-first[/] {esc(w['start'])} → {esc(w['end'])} · {span_counts(report)}"
              f"{esc(input_notes(inp) + environment_note(report))}")
    for line in incomplete_lines(report):
        con.print(f"[bold yellow]INCOMPLETE:[/] {esc(line)}")
    said = Said()
    for s in report["services"]:
        v, service = s["verdict"], s["service"]
        con.print()
        con.print(f"[bold]{esc(service)}[/] ({esc(s['runtime'])}): "
                  f"[{STYLE[v['rust_rewrite']]}]{VERDICT_LABEL[v['rust_rewrite']]}[/] — cause [bold]{esc(v['cause'])}[/]")
        con.print(f"  {esc(reason_text(v['reason'], service, said))}")
        if s.get("rewrite_ceiling"):
            con.print(f"  Rewrite ceiling: {esc(ceiling_text(s['rewrite_ceiling'], service, said))}")
        fix_no = {}
        for i, f in enumerate(s.get("fix_first") or [], 1):
            fix_no[(f["rule"], f["operation"])] = i
            con.print(f"  {i}. [cyan]{esc(f['rule'])}[/] {esc(f['operation'])}: {esc(f['message'])} "
                      f"→ saves {f['saving_ms_per_request']:.1f} ms {esc(per_request(f['operation']))}")
        if s.get("profile"):
            for part in profile_section.text_section(s["profile"]):
                con.print(part)
        if not s["hotspots"]:
            continue
        table = Table(show_edge=False, pad_edge=False)
        table.add_column("operation", overflow="fold", min_width=12)  # never cut: it is what to look for
        table.add_column("category", min_width=9)
        for col in ("share", "requests", "p50 ms", "p95 ms", "p99 ms"):
            table.add_column(col, justify="right", no_wrap=True)
        table.add_column("mean critical path, ms", min_width=15)
        for h in s["hotspots"]:
            table.add_row(esc(h["operation"]), esc(h["category"]), f"{h['share']:.0%}", requests(h),
                          f"{h['p50_ms']:.1f}", f"{h['p95_ms']:.1f}", f"{h['p99_ms']:.1f}", "\n".join(breakdown_parts(h["breakdown"])))  # a part per line: never split
        con.print(table)
        for h in s["hotspots"]:
            for f in h["findings"]:
                loc = f" at {esc(f['location'])}" if f.get("location") else ""
                no = fix_no.get((f["rule"], h["operation"]))
                message = f"fix first #{no} above" if no else esc(f["message"])
                con.print(f"  [cyan]{esc(f['rule'])}[/] {esc(h['operation'])}: {message}{loc}")
                where = f"{f['rule']} on {service} {h['operation']}"
                con.print(f"    fix: {esc(remedy_text(f['remedy'], where, said))}")
    changes = week_over_week_lines(report)
    if changes:
        con.print()
        con.print(f"[bold]Since the previous run[/] ({esc(report['week_over_week']['previous']['window_end'])})")
        for line in changes:
            con.print(f"  {esc(line)}")
    for m in inp.get("missing_evidence") or []:
        con.print(f"[yellow]missing evidence[/] {esc(m['signal'])}: {esc(m['reason'])}")
    return buf.getvalue()
