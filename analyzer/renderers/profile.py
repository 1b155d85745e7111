"""A service's CPU-profile section, for each output: the hot functions, whose code they are, the
cheaper fixes, and the partial-rewrite target. Function names come from profiles, which are
input like any telemetry: each output escapes them with its own function from escape.py."""

from __future__ import annotations

from analyzer.renderers import charts
from analyzer.renderers.escape import for_html, for_markdown, for_rich_markup, markdown_code

ROWS = 8
RECOMMENDATION = {
    "partial": "rewrite only these functions as a native extension",
    "full": "a partial rewrite would not reach most of the CPU",
    "fix_first": "fix the cheaper causes first",
    "none": "no rewrite is recommended",
}


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def summary_line(p: dict) -> str:
    """Owners and the rewrite target in one sentence (plain text, no telemetry in it)."""
    o = p["by_owner"]
    part = p["partial_rewrite"]
    unit = "CPU s" if p["unit"] == "seconds" else "samples"
    text = (f"{p['total']:,.2f} {unit} profiled ({', '.join(p['formats'])}): own code {_pct(o['own'])}, "
            f"libraries {_pct(o['library'])}, runtime {_pct(o['runtime'])}")
    if p.get("gc_share"):
        text += f" (GC {_pct(p['gc_share'])})"
    if part["functions"]:
        text += (f". {len(part['functions'])} own function{'s' if len(part['functions']) != 1 else ''} hold "
                 f"{_pct(part['covers'])} of the CPU")
        if part.get("ceiling_ms") is not None:
            text += (f"; rewriting only them saves at most {part['ceiling_ms']:.1f} ms per request "
                     f"(full rewrite: {part['full_ceiling_ms']:.1f} ms)")
    return text + f" — {RECOMMENDATION[part.get('recommendation', 'none')]}."


def text_section(p: dict) -> list:
    """Renderables for rich: a heading line, the function table, the target, the cheaper fixes."""
    from rich.table import Table  # only text output imports rich (see text.to_text)

    out: list = [f"  [bold]CPU profile[/]: {summary_line(p)}"]
    table = Table(show_edge=False, pad_edge=False, box=None)
    for col, just in (("function", "left"), ("owner", "left"), ("package", "left"), ("self %", "right"),
                      ("cumulative %", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for f in p["functions"][:ROWS]:
        table.add_row(for_rich_markup(f["function"]), f["owner"], for_rich_markup(f["package"]),
                      _pct(f["self_share"]), _pct(f["cumulative_share"]))
    out.append(table)
    targets = p["partial_rewrite"]["functions"]
    if targets:
        out.append("  rewrite target: " + ", ".join(
            f"{for_rich_markup(t['function'])} ({_pct(t['share'])})" for t in targets[:6]))
    for c in p.get("cheaper_fixes") or []:
        out.append(f"  [cyan]{c['rule']}[/] {_pct(c['cpu_share'])} of CPU is {for_rich_markup(c['what'])}: "
                   f"{for_rich_markup(c['remedy'])}")
    return out


def markdown_section(p: dict) -> list[str]:
    out = ["### CPU profile", "", summary_line(p), "",
           "| function | owner | package | self % | cumulative % |", "|---|---|---|---:|---:|"]
    for f in p["functions"][:ROWS]:
        out.append(f"| {markdown_code(f['function'], in_table=True)} | {f['owner']} | "
                   f"{for_markdown(f['package'])} | {_pct(f['self_share'])} | {_pct(f['cumulative_share'])} |")
    out.append("")
    targets = p["partial_rewrite"]["functions"]
    if targets:
        out += ["Rewrite target: " + ", ".join(f"{markdown_code(t['function'])} ({_pct(t['share'])})"
                                               for t in targets[:6]), ""]
    for c in p.get("cheaper_fixes") or []:
        out += [f"- `{c['rule']}` {_pct(c['cpu_share'])} of CPU is {for_markdown(c['what'])}: "
                f"{for_markdown(c['remedy'])}"]
    if p.get("cheaper_fixes"):
        out.append("")
    return out


def html_section(p: dict) -> str:
    rows = "".join(
        f"<tr><td><code title=\"{for_html(f['file'])}\">{for_html(f['function'])}</code></td>"
        f"<td>{for_html(f['owner'])}</td><td>{for_html(f['package'])}</td>"
        f"<td class=\"num\">{_pct(f['self_share'])}</td><td class=\"num\">{_pct(f['cumulative_share'])}</td></tr>"
        for f in p["functions"][:ROWS])
    out = [f"<h3>CPU profile</h3><p>{for_html(summary_line(p))}</p>",
           "<table><thead><tr><th>function</th><th>owner</th><th>package</th><th>self</th><th>cumulative</th>"
           f"</tr></thead><tbody>{rows}</tbody></table>"]
    targets = p["partial_rewrite"]["functions"]
    if targets:
        out.append("<p>Rewrite target: " + ", ".join(
            f"<code>{for_html(t['function'])}</code> ({_pct(t['share'])})" for t in targets[:6]) + "</p>")
    fixes = p.get("cheaper_fixes") or []
    if fixes:
        out.append("<ul>" + "".join(f"<li><code>{for_html(c['rule'])}</code> {_pct(c['cpu_share'])} of CPU is "
                                    f"{for_html(c['what'])}: {for_html(c['remedy'])}</li>" for c in fixes) + "</ul>")
    chart = charts.flame_chart(p.get("flame") or [])
    if chart:
        out.append(f"<figure class=\"chart flame\">{chart}<figcaption class=\"muted\">Where the profiled CPU "
                   "goes: callers above callees, width is the share of CPU; red is the service's own code, "
                   "blue libraries, grey the runtime.</figcaption></figure>")
    return "\n".join(out)
