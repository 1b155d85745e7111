"""The HTML report: one self-contained file to forward, attach to an e-mail or drop into a wiki.

Order of reading: the verdict per service (reason, rewrite ceiling beside the fix-first saving),
then per service its charts over the window and its hot spots by impact, each with the
critical path of its mean request as a stacked bar, its findings (rule code linked to the
rule's documentation, embedded at the end), evidence, remedy, code location and sample traces.
With `history`, a week-over-week section follows the verdicts. What the report could not answer
(`completeness`, from `report`) comes first.

Self-contained: no script, no external stylesheet, font or image; charts are inline SVG from
matplotlib (analyzer/renderers/charts.py). A Content-Security-Policy forbids scripts and every
fetch, as a second line behind escaping. Every string from the report passes `for_html`; links
are made only from http(s) trace-UI templates, never from telemetry.

`history` (optional), as the weekly report passes it:

    {"runs": [{"id": "2026-W47", "report": {...v1 report...}}, ...],   # earlier runs, oldest first
     "changes": [{"kind": "regression", "service": "orders", "operation": "GET /orders",
                  "message": "p99 412 ms -> 530 ms (+29%)"}, ...]}

`kind` is free text shown as a label (new, resolved, regression, improvement, verdict, ...).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from urllib.parse import urlsplit

from analyzer.renderers import charts
from analyzer.renderers import profile as profile_section
from analyzer.renderers.escape import for_html as h
from analyzer.renderers.phrases import VERDICT_LABEL, ceiling_text, environment_note, input_notes, requests
from analyzer.renderers.run_notes import incomplete_lines

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
TRACE_SOURCE = re.compile(r"^trace ([0-9a-f]{32})$")
MAX_TREND_RUNS = 12
MAX_TREND_HOTSPOTS = 5
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

_CSS = """
:root { --fg:#1b1f24; --muted:#57606a; --line:#d0d7de; --bg:#ffffff; --soft:#f6f8fa;
        --rec:#b42318; --not:#1a7f37; --ins:#9a6700; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); background: var(--bg); margin: 0 auto; max-width: 1080px; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 32px 0 8px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; } h4 { font-size: 14px; margin: 12px 0 4px; }
.meta, .muted { color: var(--muted); } code, pre, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
code { background: var(--soft); padding: 0 3px; border-radius: 3px; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; overflow-wrap: anywhere; }
th { background: var(--soft); font-weight: 600; } td.num, th.num { text-align: right; } td.num { white-space: nowrap; }
h2, h3, h4, p, li { overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; font-size: 12px; color: #fff; white-space: nowrap; }
.recommended { background: var(--rec); } .not_recommended { background: var(--not); } .insufficient_evidence { background: var(--ins); }
.notice { border-left: 4px solid var(--ins); background: #fff8c5; padding: 6px 10px; margin: 8px 0; }
.pair { display: flex; gap: 12px; flex-wrap: wrap; margin: 8px 0; }
.pair > div { flex: 1 1 300px; border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; }
.pair .big { font-size: 20px; font-weight: 600; }
.hotspot { border: 1px solid var(--line); border-radius: 6px; padding: 4px 14px 10px; margin: 12px 0; }
.finding { border-top: 1px dashed var(--line); padding-top: 6px; margin-top: 8px; }
.legend span { display: inline-block; margin-right: 12px; font-size: 12px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: -1px; }
figure { margin: 6px 0; } figure svg { max-width: 100%; height: auto; } figure.breakdown svg { width: 100%; }
details.rule { border: 1px solid var(--line); border-radius: 6px; padding: 4px 10px; margin: 6px 0; }
details.rule pre { white-space: pre-wrap; }
.kind { font-weight: 600; text-transform: uppercase; font-size: 11px; color: var(--muted); }
@media print { details.rule { break-inside: avoid; } .hotspot { break-inside: avoid; } }
"""


def render_html(report: dict, history: dict | None = None, trace_url_template: str | None = None) -> str:
    """The report as one self-contained HTML document."""
    links = TraceLinks(trace_url_template)
    services = report["services"]
    body = [_header(report, links)]
    body.append(_verdict_table(services))
    if history:
        body.append(_week_over_week(report, history))
    for s in services:
        body.append(_service(s, links))
    body.append(_missing(report["input"]))
    body.append(_rule_docs(_rule_codes(services)))
    title = "profile-first report · " + ", ".join(s["service"] for s in services[:5]) + ("…" if len(services) > 5 else "")
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<meta name=\"generator\" content=\"profile-first {h(report.get('tool', {}).get('version', ''))}\">\n"
        f"<title>{h(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )


def trace_url_problem(template: str) -> str | None:
    """Why `template` cannot link traces, or None when it can: an http(s) URL with a host and `{trace_id}`."""
    if "{trace_id}" not in template:
        return f"trace URL template {template!r} has no {{trace_id}} placeholder"
    parts = urlsplit(template.replace("{trace_id}", "0" * 32))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"trace URL template {template!r} is not an http(s) URL with a host"
    return None


class TraceLinks:
    """Links to a trace UI from a URL template holding `{trace_id}` (Jaeger
    `https://jaeger.example/trace/{trace_id}`, Grafana Explore with Tempo, ...).

    Only http(s) templates make links; any other (`javascript:`, `data:`, no host) makes none and
    is reported once at the top. The id is substituted literally (no str.format: Grafana URLs hold
    JSON braces), and only well-formed 32-hex ids are linked."""

    def __init__(self, template: str | None) -> None:
        self.template: str | None = None
        self.rejected: str | None = None
        if template:
            if trace_url_problem(template) is None:
                self.template = template
            else:
                self.rejected = template

    def id(self, trace_id: str) -> str:
        """The trace id as a link when a template is set, else as code."""
        if self.template and TRACE_ID.match(trace_id):
            url = self.template.replace("{trace_id}", trace_id)
            return f'<a class="mono" href="{h(url)}" rel="noreferrer noopener" target="_blank">{h(trace_id)}</a>'
        return f"<code>{h(trace_id)}</code>"


def _header(report: dict, links: TraceLinks) -> str:
    w, inp = report["window"], report["input"]
    tool = report.get("tool", {})
    out = ["<header>", "<h1>profile-first report</h1>",
           f"<p class=\"meta\">Window <b>{h(w['start'])}</b> → <b>{h(w['end'])}</b> · {inp['spans']:,} spans in "
           f"{inp['traces']:,} traces{h(input_notes(inp) + environment_note(report))}"
           + (f" · generated {h(report['generated_at'])}" if report.get("generated_at") else "")
           + (f" by {h(tool.get('name', 'profile-first'))} {h(tool.get('version', ''))}" if tool else "") + "</p>"]
    problems = incomplete_lines(report)
    if problems:  # what the report could not answer comes before any verdict
        out.append("<div class=\"notice incomplete\"><b>This report is incomplete:</b><ul>"
                   + "".join(f"<li>{h(p)}</li>" for p in problems) + "</ul></div>")
    if not report["services"]:
        out.append("<p class=\"notice\">No service matched: nothing was analyzed in this window.</p>")
    missing = inp.get("missing_evidence") or []
    if missing:
        out.append(f"<p class=\"notice\">{len(missing)} measurement(s) could not be made; the verdicts below do not "
                   "use them. See <a href=\"#missing\">missing evidence</a>.</p>")
    if links.rejected is not None:
        out.append(f"<p class=\"notice\">The trace URL template <code>{h(links.rejected)}</code> was not used: only "
                   "http(s) URLs containing <code>{trace_id}</code> are linked.</p>")
    out.append("</header>")
    return "\n".join(out)


def _verdict_table(services: list[dict]) -> str:
    if not services:
        return ""
    rows = []
    for s in services:
        v = s["verdict"]
        c = s.get("rewrite_ceiling") or {}
        rows.append(
            f"<tr><td><a href=\"#{_anchor('svc', s['service'])}\">{h(s['service'])}</a>"
            f"<div class=\"muted\">{h(s['runtime'])}</div></td>"
            f"<td>{_badge(v['rust_rewrite'])}<div class=\"muted\">cause: {h(v['cause'])}</div></td>"
            f"<td>{h(v['reason'])}</td>"
            f"<td class=\"num\">{_cut(c, 'p99')}</td><td class=\"num\">{_fix_saving(c)}</td></tr>")
    return ("<section id=\"verdicts\"><h2>Verdicts</h2><table><thead><tr><th>service</th><th>Rust rewrite</th>"
            "<th>why</th><th class=\"num\">rewrite could cut (p99)</th><th class=\"num\">fixing first saves (mean)</th>"
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></section>")


def _service(s: dict, links: TraceLinks) -> str:
    v = s["verdict"]
    out = [f"<section class=\"service\" id=\"{_anchor('svc', s['service'])}\">",
           f"<h2>{h(s['service'])} <span class=\"muted\">({h(s['runtime'])})</span> {_badge(v['rust_rewrite'])}</h2>",
           f"<p><b>{h(VERDICT_LABEL[v['rust_rewrite']])}</b> — cause <code>{h(v['cause'])}</code>. {h(v['reason'])}</p>"]
    c = s.get("rewrite_ceiling")
    if c:
        out.append(_ceiling_pair(c))
    if s.get("fix_first"):
        out.append("<h3>Fix first</h3><ol>")
        for f in s["fix_first"]:
            out.append(f"<li>{_rule_link(f['rule'])} <b>{h(f['operation'])}</b>: {h(f['message'])} "
                       f"<span class=\"muted\">(saves {f.get('saving_ms_per_request', 0):.1f} ms per request, "
                       f"{f['saving_total_ms'] / 1000:,.1f} s over the window)</span>"
                       + (f"<br>{h(f['remedy'])}" if f.get("remedy") else "") + "</li>")
        out.append("</ol>")
    ts = s.get("timeseries")
    chart = charts.timeseries_chart(ts) if ts else None
    if chart:
        step = ts["step_s"]
        out.append(f"<h3>Over the window</h3><figure class=\"chart timeseries\">{chart}"
                   f"<figcaption class=\"muted\">Per {_duration(step)}: request latency percentiles of the "
                   "service's entry spans; GC and CPU from its runtime metrics"
                   + "".join(f" · <code>{h(name)}</code> from <code>{h(src)}</code>"
                             for name, src in (ts.get("sources") or {}).items())
                   + "</figcaption></figure>")
    if s.get("profile"):
        out.append(profile_section.html_section(s["profile"]))
    if s["hotspots"]:
        out.append(f"<h3>Hot spots by impact</h3>{_legend()}")
        for rank, hs in enumerate(s["hotspots"], 1):
            out.append(_hotspot(rank, hs, links))
    elif not s.get("timeseries"):
        out.append("<p class=\"muted\">No traced requests for this service in the window.</p>")
    out.append("</section>")
    return "\n".join(out)


def _ceiling_pair(c: dict) -> str:
    """The rewrite ceiling beside the fix-first saving, as two figures of the same unit."""
    left = (f"<div><div class=\"muted\">A Rust rewrite could cut at most</div>"
            f"<div class=\"big\">{_cut(c, 'p99')} <span class=\"muted\">at p99</span></div>"
            f"<div class=\"muted\">{h(ceiling_text(c))}</div></div>")
    ff = c.get("fix_first")
    saving = f"{_fix_saving(c)} <span class=\"muted\">per request</span>" if ff else "nothing measured"
    right = ("<div><div class=\"muted\">Fixing the top cause first saves</div>"
             f"<div class=\"big\">{saving}</div>"
             + (f"<div class=\"muted\">{_rule_link(ff['rule'])} ({h(ff['category'])})</div>" if ff else
                "<div class=\"muted\">no database, network or caching cause measured</div>")
             + "</div>")
    return f"<div class=\"pair\">{left}{right}</div>"


def _hotspot(rank: int, hs: dict, links: TraceLinks) -> str:
    out = [f"<article class=\"hotspot\" id=\"{_anchor('hs', hs['operation'], str(rank))}\">",
           f"<h4>#{rank} {h(hs['operation'])} <span class=\"muted\">· {h(hs['category'])} "
           f"{hs['share']:.0%}</span></h4>",
           "<table><thead><tr><th class=\"num\">requests</th><th class=\"num\">p50 ms</th><th class=\"num\">p95 ms</th>"
           "<th class=\"num\">p99 ms</th><th class=\"num\">total s</th></tr></thead><tbody><tr>"
           f"<td class=\"num\">{h(requests(hs))}</td><td class=\"num\">{hs['p50_ms']:.1f}</td>"
           f"<td class=\"num\">{hs['p95_ms']:.1f}</td><td class=\"num\">{hs['p99_ms']:.1f}</td>"
           f"<td class=\"num\">{hs.get('total_ms', 0) / 1000:,.1f}</td></tr></tbody></table>",
           f"<figure class=\"chart breakdown\">{charts.breakdown_bar(hs)}</figure>"]
    samples = hs.get("sample_traces") or []
    if samples:
        out.append("<p>Sample traces: " + ", ".join(
            f"{h(t['label'])} ({t['duration_ms']:.1f} ms) {links.id(t['trace_id'])}" for t in samples) + "</p>")
    for f in hs["findings"]:
        out.append(_finding(f, links))
    out.append("</article>")
    return "\n".join(out)


def _finding(f: dict, links: TraceLinks) -> str:
    saving = f" · saves {f['saving_ms']:.1f} ms per request" if f.get("saving_ms") else ""
    out = ["<div class=\"finding\">",
           f"<p>{_rule_link(f['rule'])} {h(f['message'])} <span class=\"muted\">(explains {f.get('share', 0):.0%}"
           f"{saving})</span></p>"]
    if f.get("location"):
        out.append(f"<p>Code: <code>{h(f['location'])}</code></p>")
    if f["evidence"]:
        out.append("<table class=\"evidence\"><thead><tr><th>measured</th><th class=\"num\">value</th>"
                   "<th>source</th></tr></thead><tbody>")
        for e in f["evidence"]:
            m = TRACE_SOURCE.match(str(e["source"]))
            source = f"trace {links.id(m.group(1))}" if m else f"<code>{h(e['source'])}</code>"
            out.append(f"<tr><td>{h(e['signal'])}</td><td class=\"num\">{e['value']:g} {h(e['unit'])}</td>"
                       f"<td>{source}</td></tr>")
        out.append("</tbody></table>")
    out.append(f"<p><b>Remedy:</b> {h(f['remedy'])}</p></div>")
    return "\n".join(out)


def _week_over_week(report: dict, history: dict) -> str:
    out = ["<section id=\"week-over-week\"><h2>Week over week</h2>"]
    changes = history.get("changes") or []
    if changes:
        out.append("<ul class=\"changes\">")
        for c in changes:
            where = h(c.get("service", "")) + (f" · <b>{h(c['operation'])}</b>" if c.get("operation") else "")
            out.append(f"<li><span class=\"kind\">{h(c.get('kind', ''))}</span> {where}{': ' if where else ''}"
                       f"{h(c.get('message', ''))}</li>")
        out.append("</ul>")
    else:
        out.append("<p class=\"muted\">No changes against the previous run.</p>")
    runs = [r for r in (history.get("runs") or []) if isinstance(r, dict) and isinstance(r.get("report"), dict)]
    runs = runs[-(MAX_TREND_RUNS - 1):]
    if runs and runs[-1]["report"].get("generated_at") != report.get("generated_at"):
        runs.append({"id": "this run", "report": report})
    if len(runs) >= 2:
        labels = [str(r.get("id") or r["report"]["window"]["end"][:10]) for r in runs]
        for s in report["services"]:
            ops = [hs["operation"] for hs in s["hotspots"][:MAX_TREND_HOTSPOTS]]
            if not ops:
                continue
            series = [(op, [_p99(r["report"], s["service"], op) for r in runs]) for op in ops]
            if sum(v is not None for _, values in series for v in values) <= len(ops):
                continue  # each hot spot in this run only: nothing to compare
            out.append(f"<h3>{h(s['service'])}: p99 of its top hot spots per run</h3>"
                       f"<figure class=\"chart trend\">{charts.trend_chart(labels, series, 'p99 latency (ms)')}</figure>")
    out.append("</section>")
    return "\n".join(out)


def _missing(inp: dict) -> str:
    missing = inp.get("missing_evidence") or []
    if not missing:
        return ""
    items = "".join(
        f"<li><code>{h(m['signal'])}</code>: {h(m['reason'])}"
        + (f" — enable {h(m['enable'])}" if m.get("enable") else "")
        + (f"<br><span class=\"muted\">query</span> <code>{h(m['query'])}</code>" if m.get("query") else "") + "</li>"
        for m in missing)
    return f"<section id=\"missing\"><h2>Missing evidence</h2><ul>{items}</ul></section>"


def _rule_docs(codes: Iterable[str]) -> str:
    from heuristics.registry import all_rules

    rules = all_rules()
    known = [rules[c] for c in sorted(set(codes)) if c in rules]
    if not known:
        return ""
    out = ["<section id=\"rules\"><h2>Rules referenced</h2>",
           "<p class=\"muted\">The documentation of each rule code above, as <code>profile-first rule CODE</code> "
           "prints it.</p>"]
    for r in known:
        thresholds = "".join(f"<li><code>{h(k)} = {v:g}</code></li>" for k, v in r.defaults.items())
        out.append(f"<details class=\"rule\" id=\"{_anchor('rule', r.code)}\"><summary><b>{h(r.code)}</b> "
                   f"{h(r.name)} ({h(r.category)}): {h(r.summary)}</summary><pre>{_multiline(r.doc)}</pre>"
                   + (f"<p>Thresholds (override under <code>[rules.\"{h(r.code)}\"]</code>):</p><ul>{thresholds}</ul>"
                      if thresholds else "") + "</details>")
    out.append("</section>")
    return "\n".join(out)


def _multiline(text: str) -> str:
    """Our own multi-line text (rule docs): each line through `for_html`, which shows line breaks
    in telemetry as `\\n`, the breaks kept."""
    return "\n".join(h(line) for line in text.splitlines())


def _rule_codes(services: list[dict]) -> list[str]:
    codes = [f["rule"] for s in services for hs in s["hotspots"] for f in hs["findings"]]
    codes += [f["rule"] for s in services for f in s.get("fix_first") or []]
    codes += [c["fix_first"]["rule"] for s in services if (c := s.get("rewrite_ceiling")) and c.get("fix_first")]
    return codes


def _rule_link(code: str) -> str:
    return f"<a class=\"mono\" href=\"#{_anchor('rule', code)}\">{h(code)}</a>"


def _badge(verdict: str) -> str:
    label = {"recommended": "rewrite recommended", "not_recommended": "rewrite not recommended",
             "insufficient_evidence": "insufficient evidence"}.get(verdict, verdict)
    return f"<span class=\"badge {h(verdict)}\">{h(label)}</span>"


def _legend() -> str:
    return "<p class=\"legend\">Critical path of the mean request: " + "".join(
        f"<span><i style=\"background:{colour}\"></i>{h(label)}</span>" for _, label, colour in charts.PARTS) + "</p>"


def _cut(c: dict, q: str) -> str:
    if f"{q}_ms" not in c:
        return "—"
    bound = "" if c.get("measured", True) else " (upper bound)"
    return f"{c[f'{q}_ms']:.1f} ms ({c[f'{q}_pct']:.0f}%){bound}"


def _fix_saving(c: dict) -> str:
    if "fix_first_ms" not in c:
        return "—"
    return f"{c['fix_first_ms']:.1f} ms ({c['fix_first_pct']:.0f}%)"


def _p99(report: dict, service: str, operation: str) -> float | None:
    for s in report.get("services", []):
        if s.get("service") == service:
            for hs in s.get("hotspots", []):
                if hs.get("operation") == operation:
                    return hs.get("p99_ms")
    return None


def _anchor(kind: str, *names: str) -> str:
    """An id safe in an attribute and a URL fragment, stable for the same names."""
    text = "-".join(names)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "x"
    return f"{kind}-{slug}-{_crc(text)}" if kind != "rule" else f"rule-{slug}"


def _crc(text: str) -> str:
    return f"{zlib.crc32(text.encode('utf-8', 'surrogatepass')):08x}"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"
