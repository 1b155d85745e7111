"""The pre-rewrite evidence pack: one Markdown document to attach to a rewrite proposal.

It says, for one service, what was measured and where it came from, what a rewrite could gain at
most (the Amdahl ceiling), what to fix first and what that saves, what was NOT measured and how
to measure it, and the exact command and window that produced it, so a reviewer can re-run it.
Everything comes from the report dict (the v1 contract); every string from telemetry passes
the Markdown escaping of analyzer/renderers/escape.py.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from analyzer.renderers.escape import for_markdown as md
from analyzer.renderers.escape import markdown_code as code
from analyzer.renderers.phrases import VERDICT_LABEL, ceiling_text
from analyzer.verdict import ENABLE_RUNTIME_METRICS

WINDOW_FLAGS = ("--window", "--start", "--end")


def evidence_pack(report: dict, service: str, command: Sequence[str], window: dict | None = None) -> str:
    """The evidence pack of `service` as Markdown.

    `command` is the argv that produced `report` (e.g. `sys.argv`, or the `analyze` command the
    weekly report ran); `window` the {"start", "end"} it covered (RFC 3339), by default the
    report's. Raises ValueError when the report has no such service."""
    svc = next((s for s in report["services"] if s["service"] == service), None)
    if svc is None:
        names = ", ".join(s["service"] for s in report["services"]) or "none"
        raise ValueError(f"no service {service!r} in the report (services: {names})")
    window = window or report["window"]
    v = svc["verdict"]
    out = [f"# Pre-rewrite evidence: {md(service)}", "",
           f"Measured by profile-first {report.get('tool', {}).get('version', '')} over "
           f"{window['start']} → {window['end']} (UTC); report generated {report.get('generated_at', '')}.",
           "",
           "## Verdict", "",
           f"**{VERDICT_LABEL[v['rust_rewrite']]}** (runtime {code(svc['runtime'])}, cause {code(v['cause'])}). "
           f"{md(v['reason'])}", ""]
    out += _causes(svc)
    out += _ceiling(svc)
    out += _fix_first(svc)
    out += _not_measured(report, svc)
    out += _reproduce(report, command, window)
    return "\n".join(out) + "\n"


def _causes(svc: dict) -> list[str]:
    out = ["## Measured causes", ""]
    hotspots = svc["hotspots"]
    if not hotspots:
        return out + ["No traced requests of this service in the window: no request latency can be related to "
                      "its metrics.", ""]
    total = sum(h.get("total_ms", 0.0) for h in hotspots) or 1.0
    out += ["Hot spots by total time in the window; the breakdown is the mean request's critical path.", "",
            "| # | operation | share of service time | cause (share of its time) | requests | p50 ms | p99 ms "
            "| self ms | database ms | cache ms | remote ms | messaging ms |",
            "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, h in enumerate(hotspots, 1):
        b = h["breakdown"]
        out.append(f"| {i} | {code(h['operation'], in_table=True)} | {h.get('total_ms', 0.0) / total:.0%} | "
                   f"{h['category']} ({h['share']:.0%}) | {h['count']:,} | {h['p50_ms']:.1f} | {h['p99_ms']:.1f} | "
                   + " | ".join(f"{b[p]:.1f}" for p in ("self", "database", "cache", "remote", "messaging")) + " |")
    out.append("")
    for i, h in enumerate(hotspots, 1):
        if not h["findings"]:
            continue
        out += [f"### {i}. {md(h['operation'])}", ""]
        for f in h["findings"]:
            out.append(f"- **{f['rule']}** {md(f['message'])} (explains {f.get('share', 0):.0%} of the hot spot's "
                       f"time" + (f", saves {f['saving_ms']:.1f} ms per request" if f.get("saving_ms") else "") + ")")
            if f.get("location"):
                out.append(f"  - code: {code(f['location'])}")
            for e in f["evidence"]:
                out.append(f"  - {md(e['signal'])} = {e['value']:g} {md(e['unit'])}, from {code(e['source'])}")
            out.append(f"  - remedy: {md(f['remedy'])}")
        samples = h.get("sample_traces") or []
        if samples:
            out.append("- sample traces: " + ", ".join(f"{t['label']} {code(t['trace_id'])} ({t['duration_ms']:.1f} ms)"
                                                        for t in samples))
        out.append("")
    return out


def _ceiling(svc: dict) -> list[str]:
    c = svc.get("rewrite_ceiling")
    out = ["## What a rewrite could gain at most (Amdahl)", ""]
    if not c:
        return out + ["Not computed: the report carries no rewrite ceiling for this service.", ""]
    text = ceiling_text(c)
    out.append(md(text[:1].upper() + text[1:]))
    out.append("")
    out.append(f"Only GC time and CPU work can shrink in a rewrite: GC time is removed entirely and CPU work is "
               f"assumed {c['cpu_speedup']:g}× faster; waiting, I/O and downstream time stay as they are.")
    if c.get("measured") is False:
        out.append("**This is an upper bound, not a measurement:** some hot spots had no CPU or GC metrics, so all of "
                   "their in-process time was counted as removable (see *What was not measured*).")
    return out + [""]


def _fix_first(svc: dict) -> list[str]:
    items = svc.get("fix_first") or []
    out = ["## Fix first", ""]
    if not items:
        return out + ["No database, network or caching finding with an estimable saving.", ""]
    out += ["| # | rule | operation | saves per request (ms) | saves over the window (s) | what to do |",
            "|---:|---|---|---:|---:|---|"]
    for i, f in enumerate(items, 1):
        out.append(f"| {i} | {f['rule']} | {code(f['operation'], in_table=True)} | "
                   f"{f.get('saving_ms_per_request', 0.0):.1f} | {f['saving_total_ms'] / 1000:,.1f} | "
                   f"{md(f.get('remedy', ''))} |")
    c = svc.get("rewrite_ceiling") or {}
    if "fix_first_ms" in c and "mean_ms" in c:
        out += ["", f"Fixing the top cause first saves {c['fix_first_ms']:.1f} ms ({c['fix_first_pct']:.0f}%) of the "
                f"mean request; a rewrite could save at most {c['mean_ms']:.1f} ms ({c['mean_pct']:.0f}%)."]
    return out + [""]


def _not_measured(report: dict, svc: dict) -> list[str]:
    inp = report["input"]
    items = []
    c = svc.get("rewrite_ceiling") or {}
    runtime = svc["runtime"]
    if c.get("measured") is False or (svc["verdict"]["rust_rewrite"] == "insufficient_evidence"):
        items.append(f"Runtime metrics that tell GC from CPU from waiting for this {md(runtime)} service: enable "
                     f"{md(ENABLE_RUNTIME_METRICS.get(runtime, ENABLE_RUNTIME_METRICS['unknown']))}, then run the "
                     "command below with `--prometheus URL` or `--metrics FILE`.")
    ts = svc.get("timeseries") or {}
    if svc["hotspots"] and not any(k in ts for k in ("gc_seconds_per_second", "cpu_cores_used")):
        items.append("No GC or CPU time series over the window for this service, so GC- or CPU-driven tails cannot "
                     "be related to latency.")
    for m in inp.get("missing_evidence") or []:
        text = f"{code(m['signal'])}: {md(m['reason'])}"
        if m.get("enable"):
            text += f"; enable {md(m['enable'])}"
        if m.get("query"):
            text += f" (query {code(m['query'])})"
        items.append(text)
    for kind in ("skipped", "repaired"):
        counts = {k: n for k, n in (inp.get(kind) or {}).items() if n}
        if counts:
            items.append(f"Input {kind}: " + ", ".join(f"{md(k)} {n:,}" for k, n in counts.items())
                         + " (see the README's table of input counters).")
    sampled = [s for s in inp.get("sources") or [] if s.get("sampling")]
    for s in sampled:
        sm = s["sampling"]
        items.append(f"{code(s['path'])} is a sample ({md(sm['method'])}: {sm['pulled']:,} of {sm['considered']:,} "
                     "traces): request counts and totals are estimates weighted by inclusion probability.")
    out = ["## What was not measured", ""]
    if not items:
        return out + ["Nothing the verdict needs was missing.", ""]
    return out + [f"- {i}" for i in items] + [""]


def pinned_command(command: Sequence[str], window: dict) -> list[str]:
    """`command` with its window pinned: `--window 7d` means "the last 7 days" and would cover other
    requests tomorrow, so --window/--start/--end are replaced by the window's explicit bounds."""
    argv, skip = [], False
    for a in command:
        if skip:
            skip = False
        elif a in WINDOW_FLAGS:
            skip = True
        elif not a.startswith(tuple(f"{f}=" for f in WINDOW_FLAGS)):
            argv.append(a)
    return [*argv, "--start", window["start"], "--end", window["end"]]


def _reproduce(report: dict, command: Sequence[str], window: dict) -> list[str]:
    text = shlex.join(pinned_command(command, window))
    fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", text)), default=0))
    out = ["## Reproduce", "",
           "The command that produced this evidence, with its window pinned to explicit bounds so that a later run "
           "over the same telemetry covers the same requests:", "", f"{fence}sh", text, fence, "",
           f"Window: {window['start']} → {window['end']}. Inputs:", ""]
    for s in report["input"].get("sources") or []:
        out.append(f"- {code(s['path'])} ({md(s['format'])}, {s['spans']:,} spans)")
    out.append(f"- {report['input']['spans']:,} spans in {report['input']['traces']:,} traces in all; "
               f"{report['input'].get('metric_queries', 0)} metric queries")
    return out
