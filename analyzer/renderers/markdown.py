"""The Markdown report: each service's verdict and reason first, then the fix-first list, then
the hot spots with their breakdown and findings.

Telemetry-derived strings go through `for_markdown` (prose, headings, cells) or `markdown_code`
(code spans): a span name cannot add HTML, a heading, a table row or a link to the document.
"""

from __future__ import annotations

from analyzer.renderers import profile as profile_section
from analyzer.renderers.escape import for_markdown as md
from analyzer.renderers.escape import markdown_code as code
from analyzer.renderers.phrases import (PARTS, VERDICT_LABEL, Said, ceiling_text, environment_note, input_notes,
                                        per_request, reason_text, remedy_text, requests, span_counts)
from analyzer.renderers.run_notes import incomplete_lines, week_over_week_lines


def to_markdown(report: dict) -> str:
    w = report["window"]
    inp = report["input"]
    out = [
        "# profile-first report",
        "",
        f"Window {md(w['start'])} → {md(w['end'])} · {span_counts(report)}"
        + md(input_notes(inp) + environment_note(report)),
        "",
    ]
    incomplete = incomplete_lines(report)
    if incomplete:
        out += ["> **Incomplete report:**", ">"] + [f"> - {md(line)}" for line in incomplete] + [""]
    said = Said()
    for s in report["services"]:
        v, service = s["verdict"], s["service"]
        out += [f"## {md(service)} ({md(s['runtime'])})", "",
                f"**{VERDICT_LABEL[v['rust_rewrite']]}** — cause: {code(v['cause'])}. "
                f"{md(reason_text(v['reason'], service, said))}", ""]
        ceiling = s.get("rewrite_ceiling")
        if ceiling:
            out += [f"Rewrite ceiling: {md(ceiling_text(ceiling, service, said))}", ""]
        fix_no = {}
        if s.get("fix_first"):
            out += ["Fix first:", ""]
            for i, f in enumerate(s["fix_first"], 1):
                fix_no[(f["rule"], f["operation"])] = i
                remedy = remedy_text(f["remedy"], f"{f['rule']} on {service} {f['operation']}", said)
                out.append(f"{i}. {code(f['rule'])} {md(f['operation'])}: {md(f['message'])} "
                           f"(saves {f['saving_ms_per_request']:.1f} ms {md(per_request(f['operation']))}, "
                           f"{f['saving_total_ms'] / 1000:.1f} s in the window). {md(remedy)}")
            out.append("")
        if s.get("profile"):
            out += profile_section.markdown_section(s["profile"])
        if s["hotspots"]:
            out += ["| operation | category | share | count | p50 ms | p95 ms | p99 ms | "
                    + " | ".join(f"{p} ms" for p in PARTS) + " |",
                    "|" + "---|" * (7 + len(PARTS))]
            for h in s["hotspots"]:
                b = h["breakdown"]
                out.append(f"| {md(h['operation'])} | {md(h['category'])} | {h['share']:.0%} | {requests(h)} | "
                           f"{h['p50_ms']:.1f} | {h['p95_ms']:.1f} | {h['p99_ms']:.1f} | "
                           + " | ".join(f"{b[p]:.1f}" for p in PARTS) + " |")
            out.append("")
            for h in s["hotspots"]:
                for f in h["findings"]:
                    no = fix_no.get((f["rule"], h["operation"]))
                    message = f"fix first #{no} above" if no else md(f["message"])
                    out.append(f"- **{md(f['rule'])}** {md(h['operation'])}: {message}"
                               + (f" at {code(f['location'])}" if f.get("location") else ""))
                    for e in f["evidence"]:
                        out.append(f"  - {md(e['signal'])} = {e['value']:g} {md(e['unit'])} — {code(e['source'])}")
                    remedy = remedy_text(f["remedy"], f"{f['rule']} on {service} {h['operation']}", said)
                    out.append(f"  - Remedy: {md(remedy)}")
            out.append("")
    changes = week_over_week_lines(report)
    if changes:
        since = report["week_over_week"]["previous"]
        out += ["## Since the previous run", "",
                f"Compared with run {md(since['run'])} (window ending {md(since['window_end'])}).", ""]
        out += [f"- {md(line)}" for line in changes] + [""]
    missing = inp.get("missing_evidence") or []
    if missing:
        out += ["## Missing evidence", ""]
        out += [f"- {code(m['signal'])}: {md(m['reason'])}" + (f" — enable {md(m['enable'])}" if m.get("enable") else "")
                for m in missing]
        out.append("")
    return "\n".join(out)
