"""Renderers of the report dict: JSON (the contract), Markdown, and the terminal (rich).

Markdown and text lead with each service's verdict and its one-sentence reason, then the
fix-first list, then the hot spots with their breakdown and findings.
"""

from __future__ import annotations

import io
import json

from rich.console import Console
from rich.table import Table

VERDICT_LABEL = {
    "recommended": "Rust rewrite: RECOMMENDED",
    "not_recommended": "Rust rewrite: not recommended",
    "insufficient_evidence": "Rust rewrite: insufficient evidence",
}
PARTS = ("self", "database", "cache", "remote", "messaging")


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


def to_markdown(report: dict) -> str:
    w = report["window"]
    inp = report["input"]
    out = [
        "# profile-first report",
        "",
        f"Window {w['start']} → {w['end']} · {inp['spans']:,} spans in {inp['traces']:,} traces"
        + _input_notes(inp),
        "",
    ]
    for s in report["services"]:
        v = s["verdict"]
        out += [f"## {s['service']} ({s['runtime']})", "",
                f"**{VERDICT_LABEL[v['rust_rewrite']]}** — cause: `{v['cause']}`. {v['reason']}", ""]
        ceiling = s.get("rewrite_ceiling")
        if ceiling:
            out += [f"Rewrite ceiling: {_ceiling_text(ceiling)}", ""]
        if s.get("fix_first"):
            out += ["Fix first:", ""]
            for i, f in enumerate(s["fix_first"], 1):
                out.append(f"{i}. `{f['rule']}` {f['operation']}: {f['message']} "
                           f"(saves {f['saving_ms_per_request']:.1f} ms/request, {f['saving_total_ms'] / 1000:.1f} s in the window). "
                           f"{f['remedy']}")
            out.append("")
        if s["hotspots"]:
            out += ["| operation | category | share | count | p50 ms | p95 ms | p99 ms | "
                    + " | ".join(f"{p} ms" for p in PARTS) + " |",
                    "|" + "---|" * (7 + len(PARTS))]
            for h in s["hotspots"]:
                b = h["breakdown"]
                out.append(f"| {_md(h['operation'])} | {h['category']} | {h['share']:.0%} | {h['count']} | "
                           f"{h['p50_ms']:.1f} | {h['p95_ms']:.1f} | {h['p99_ms']:.1f} | "
                           + " | ".join(f"{b[p]:.1f}" for p in PARTS) + " |")
            out.append("")
            for h in s["hotspots"]:
                for f in h["findings"]:
                    out.append(f"- **{f['rule']}** {_md(h['operation'])}: {f['message']}"
                               + (f" at `{f['location']}`" if f.get("location") else ""))
                    for e in f["evidence"]:
                        out.append(f"  - {e['signal']} = {e['value']:g} {e['unit']} — `{_md(e['source'])}`")
                    out.append(f"  - Remedy: {f['remedy']}")
            out.append("")
    missing = inp.get("missing_evidence") or []
    if missing:
        out += ["## Missing evidence", ""]
        out += [f"- `{m['signal']}`: {m['reason']}" + (f" — enable {m['enable']}" if m.get("enable") else "") for m in missing]
        out.append("")
    return "\n".join(out)


def to_text(report: dict, width: int = 120, color: bool = False) -> str:
    buf = io.StringIO()
    con = Console(file=buf, width=width, force_terminal=color, color_system="standard" if color else None,
                  highlight=False)
    w, inp = report["window"], report["input"]
    con.print(f"[bold]profile-first[/] {w['start']} → {w['end']} · {inp['spans']:,} spans, "
              f"{inp['traces']:,} traces{_input_notes(inp)}")
    style = {"recommended": "bold red", "not_recommended": "bold green", "insufficient_evidence": "bold yellow"}
    for s in report["services"]:
        v = s["verdict"]
        con.print()
        con.print(f"[bold]{s['service']}[/] ({s['runtime']}): [{style[v['rust_rewrite']]}]{VERDICT_LABEL[v['rust_rewrite']]}[/]"
                  f" — cause [bold]{v['cause']}[/]")
        con.print(f"  {v['reason']}")
        if s.get("rewrite_ceiling"):
            con.print(f"  Rewrite ceiling: {_ceiling_text(s['rewrite_ceiling'])}")
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
    for m in inp.get("missing_evidence") or []:
        con.print(f"[yellow]missing evidence[/] {m['signal']}: {m['reason']}")
    return buf.getvalue()


def _input_notes(inp: dict) -> str:
    skipped = sum(inp.get("skipped", {}).values())
    repaired = sum(inp.get("repaired", {}).values())
    notes = []
    if skipped:
        notes.append(f"{skipped:,} skipped ({', '.join(f'{k} {v}' for k, v in inp['skipped'].items() if v)})")
    if repaired:
        notes.append(f"{repaired:,} repaired ({', '.join(f'{k} {v}' for k, v in inp['repaired'].items() if v)})")
    return (" · " + "; ".join(notes)) if notes else ""


def _ceiling_text(c: dict) -> str:
    """`rewrite_ceiling` as one sentence: what a rewrite could cut at most, beside the fix-first saving."""
    cuts = [f"{q} {c[q + '_ms']:.1f} ms ({c[q + '_pct']:.0f}%)" for q in ("p50", "p99", "mean") if q + "_ms" in c]
    text = "a rewrite could cut at most " + (", ".join(cuts) if cuts else "nothing measurable")
    if "cpu_cost_pct" in c:
        text += f" and {c['cpu_cost_pct']:.0f}% of CPU cost"
    assumes = (c.get("basis") or {}).get("assumes")
    if assumes:
        text += f" ({assumes})"
    if "fix_first_ms" in c:
        text += f"; fixing the top cause first saves {c['fix_first_ms']:.1f} ms ({c['fix_first_pct']:.0f}%) per request"
    return text + "."


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
