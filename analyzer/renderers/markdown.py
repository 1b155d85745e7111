"""The Markdown report: each service's verdict and reason first, then the fix-first list, then
the hot spots with their breakdown and findings."""

from __future__ import annotations

from analyzer.renderers.phrases import PARTS, VERDICT_LABEL, ceiling_text, input_notes
from analyzer.renderers.run_notes import incomplete_lines, week_over_week_lines


def to_markdown(report: dict) -> str:
    w = report["window"]
    inp = report["input"]
    out = [
        "# profile-first report",
        "",
        f"Window {w['start']} → {w['end']} · {inp['spans']:,} spans in {inp['traces']:,} traces"
        + input_notes(inp),
        "",
    ]
    incomplete = incomplete_lines(report)
    if incomplete:
        out += ["> **Incomplete report:**", ">"] + [f"> - {_md(line)}" for line in incomplete] + [""]
    for s in report["services"]:
        v = s["verdict"]
        out += [f"## {s['service']} ({s['runtime']})", "",
                f"**{VERDICT_LABEL[v['rust_rewrite']]}** — cause: `{v['cause']}`. {v['reason']}", ""]
        ceiling = s.get("rewrite_ceiling")
        if ceiling:
            out += [f"Rewrite ceiling: {ceiling_text(ceiling)}", ""]
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
    changes = week_over_week_lines(report)
    if changes:
        since = report["week_over_week"]["previous"]
        out += ["## Since the previous run", "", f"Compared with run {since['run']} ({since['window_end']}).", ""]
        out += [f"- {_md(line)}" for line in changes] + [""]
    missing = inp.get("missing_evidence") or []
    if missing:
        out += ["## Missing evidence", ""]
        out += [f"- `{m['signal']}`: {m['reason']}" + (f" — enable {m['enable']}" if m.get("enable") else "") for m in missing]
        out.append("")
    return "\n".join(out)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
