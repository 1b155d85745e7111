"""What a scheduled run adds to a report, as sentences the text and Markdown renderers both print:
what the report could not answer (first, under the header) and the changes since the last run."""

from __future__ import annotations


def incomplete_lines(report: dict) -> list[str]:
    """One sentence per problem of `report["completeness"]`; empty when complete or not assessed."""
    c = report.get("completeness")
    if not c or c["complete"]:
        return []
    return [p["message"] for p in c["problems"]]


def week_over_week_lines(report: dict) -> list[str]:
    """The changes since the previous run, each naming the service, the operation and the percentile."""
    w = report.get("week_over_week")
    if not w:
        return []
    lines = []
    for c in w.get("verdict_changes", []):
        lines.append(f"{c['service']}: verdict {c['before']} → {c['after']}")
    for r in w.get("regressions", []):
        lines.append(f"{r['service']} {r['operation']}: {r['metric']} {r['before']:.1f} → {r['after']:.1f}"
                     f" ({r['change_pct']:+.0f} %)")
    for r in w.get("improvements", []):
        lines.append(f"{r['service']} {r['operation']}: {r['metric']} {r['before']:.1f} → {r['after']:.1f}"
                     f" ({r['change_pct']:+.0f} %)")
    for h in w.get("new_hotspots", []):
        lines.append(f"{h['service']} {h['operation']}: new hot spot (p99 {h['p99_ms']:.1f} ms, {h['category']})")
    for h in w.get("resolved_hotspots", []):
        lines.append(f"{h['service']} {h['operation']}: no longer a hot spot (was p99 {h['p99_ms']:.1f} ms)")
    if not lines:
        lines.append("no changes above the thresholds")
    return lines
