"""Sentences the text and Markdown reports both say, worded once.

`Said` keeps what a report has explained already, so that a later service refers back ("as for
orders above") instead of repeating a paragraph: the same ceiling assumptions, the same
metrics to enable, the same remedy.
"""

from __future__ import annotations

from analyzer.verdict import ENABLE_CLAUSE

VERDICT_LABEL = {
    "recommended": "Rust rewrite: RECOMMENDED",
    "not_recommended": "Rust rewrite: not recommended",
    "insufficient_evidence": "Rust rewrite: insufficient evidence",
}
PARTS = ("self", "database", "cache", "remote", "messaging")


def requests(hotspot: dict) -> str:
    """A hot spot's request count: the estimate with the traces it rests on when the run was a
    sample (`~12,400 (150 sampled)`), else the count."""
    if "estimated_count" in hotspot:
        return f"~{hotspot['estimated_count']:,.0f} ({hotspot['count']:,} sampled)"
    return f"{hotspot['count']:,}"


class Said:
    """Explanations already given in one report, and where."""

    def __init__(self) -> None:
        self._where: dict[str, str] = {}

    def before(self, text: str, where: str) -> str | None:
        """Where `text` was said before; None (and `where` recorded) the first time."""
        if text in self._where:
            return self._where[text]
        self._where[text] = where
        return None


def reason_text(reason: str, service: str, said: Said) -> str:
    """A verdict's reason; its list of metrics to enable only the first time it is the same."""
    head, sep, tail = reason.partition(ENABLE_CLAUSE)
    if not sep:
        return reason
    first = said.before(tail, service)
    return reason if first is None else f"{head}{sep}the same metrics as for {first} above."


def remedy_text(remedy: str, where: str, said: Said) -> str:
    first = said.before(remedy, where)
    return remedy if first is None else f"as for {first} above."


def breakdown_parts(b: dict) -> list[str]:
    """A hot spot's mean critical path ("database 156.8"), largest part first, parts under
    0.05 ms left out."""
    parts = sorted(((b[p], p) for p in PARTS if b.get(p, 0) >= 0.05), reverse=True)
    return [f"{p} {v:.1f}" for v, p in parts] or ["0.0"]


def span_counts(report: dict) -> str:
    """What the report is made of: the spans in the window when one was given, beside all read."""
    w, inp = report["window"], report["input"]
    if "spans" in w:
        return f"{w['spans']:,} spans in {w['traces']:,} traces in the window ({inp['spans']:,} spans read)"
    return f"{inp['spans']:,} spans in {inp['traces']:,} traces"


def environment_note(report: dict) -> str:
    """" · deployment.environment production: 120 of 240 spans read kept (left out: staging 120)", when
    the report's environment filter left spans out; "" otherwise."""
    f = report.get("environment_filter")
    if not f or f["spans_kept"] == f["spans_read"]:
        return ""
    out = [f"{n:,} {name}" for name, n in sorted(f["by_environment"].items(), key=lambda x: -x[1])
           if name and name not in f["environments"]]
    return (f" · deployment.environment {' or '.join(f['environments'])}: {f['spans_kept']:,} of "
            f"{f['spans_read']:,} spans read kept (left out: {', '.join(out)})")


def input_notes(inp: dict) -> str:
    skipped = sum(inp.get("skipped", {}).values())
    repaired = sum(inp.get("repaired", {}).values())
    notes = []
    if skipped:
        notes.append(f"{skipped:,} skipped ({', '.join(f'{k} {v}' for k, v in inp['skipped'].items() if v)})")
    if repaired:
        notes.append(f"{repaired:,} repaired ({', '.join(f'{k} {v}' for k, v in inp['repaired'].items() if v)})")
    for src in inp.get("sources", ()):
        push, sample = src.get("pushdown"), src.get("sampling")
        if push and sample:  # a store did the whole-window work: say the spans above are a sample of it
            notes.append(f"a weighted sample of {sample['pulled']:,} of {push['window_traces']:,} traces from "
                         f"{push['engine']} {push['table']}, whose {push['window_spans']:,} spans ranked the hot spots")
    return (" · " + "; ".join(notes)) if notes else ""


def per_request(operation: str) -> str:
    """The base of a hot spot's saving: "per GET /orders request"."""
    return f"per {operation} request"


def ceiling_text(c: dict, service: str | None = None, said: Said | None = None) -> str:
    """`rewrite_ceiling` as one sentence: what a rewrite could cut at most, beside the fix-first saving."""
    cuts = [f"{q} {c[q + '_ms']:.1f} ms ({c[q + '_pct']:.0f}%)" for q in ("p50", "p99", "mean") if q + "_ms" in c]
    text = "a rewrite could cut at most " + (", ".join(cuts) if cuts else "nothing measurable")
    if "cpu_cost_pct" in c:
        text += f" and {c['cpu_cost_pct']:.0f}% of CPU cost"
    assumes = (c.get("basis") or {}).get("assumes")
    if assumes:
        first = said.before(assumes, service or "the service") if said is not None else None
        text += f" ({assumes})" if first is None else f" (on the same basis as for {first} above)"
    if "fix_first_ms" in c:
        text += (f"; fixing the top cause first saves {c['fix_first_ms']:.1f} ms ({c['fix_first_pct']:.0f}%) "
                 f"per request to {service or 'the service'}")
    return text + "."
