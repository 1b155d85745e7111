"""Sentences the text and Markdown reports both say, worded once."""

from __future__ import annotations

VERDICT_LABEL = {
    "recommended": "Rust rewrite: RECOMMENDED",
    "not_recommended": "Rust rewrite: not recommended",
    "insufficient_evidence": "Rust rewrite: insufficient evidence",
}
PARTS = ("self", "database", "cache", "remote", "messaging")


def span_counts(report: dict) -> str:
    """What the report is made of: the spans in the window when one was given, beside all read."""
    w, inp = report["window"], report["input"]
    if "spans" in w:
        return f"{w['spans']:,} spans in {w['traces']:,} traces in the window ({inp['spans']:,} spans read)"
    return f"{inp['spans']:,} spans in {inp['traces']:,} traces"


def input_notes(inp: dict) -> str:
    skipped = sum(inp.get("skipped", {}).values())
    repaired = sum(inp.get("repaired", {}).values())
    notes = []
    if skipped:
        notes.append(f"{skipped:,} skipped ({', '.join(f'{k} {v}' for k, v in inp['skipped'].items() if v)})")
    if repaired:
        notes.append(f"{repaired:,} repaired ({', '.join(f'{k} {v}' for k, v in inp['repaired'].items() if v)})")
    return (" · " + "; ".join(notes)) if notes else ""


def per_request(operation: str) -> str:
    """The base of a hot spot's saving: "per GET /orders request"."""
    return f"per {operation} request"


def ceiling_text(c: dict, service: str | None = None) -> str:
    """`rewrite_ceiling` as one sentence: what a rewrite could cut at most, beside the fix-first saving."""
    cuts = [f"{q} {c[q + '_ms']:.1f} ms ({c[q + '_pct']:.0f}%)" for q in ("p50", "p99", "mean") if q + "_ms" in c]
    text = "a rewrite could cut at most " + (", ".join(cuts) if cuts else "nothing measurable")
    if "cpu_cost_pct" in c:
        text += f" and {c['cpu_cost_pct']:.0f}% of CPU cost"
    assumes = (c.get("basis") or {}).get("assumes")
    if assumes:
        text += f" ({assumes})"
    if "fix_first_ms" in c:
        text += (f"; fixing the top cause first saves {c['fix_first_ms']:.1f} ms ({c['fix_first_pct']:.0f}%) "
                 f"per request to {service or 'the service'}")
    return text + "."
