"""What a scheduled run adds to a report, as sentences every renderer prints: what the report
could not answer (first, under the header) and the changes since the last run."""

from __future__ import annotations

from typing import NamedTuple


class Change(NamedTuple):
    service: str
    operation: str  # "" for a change of the whole service (its verdict)
    text: str

    def line(self) -> str:
        return f"{self.service} {self.operation}: {self.text}" if self.operation else f"{self.service}: {self.text}"


def incomplete_lines(report: dict) -> list[str]:
    """One sentence per problem of `report["completeness"]`; empty when complete or not assessed."""
    c = report.get("completeness")
    if not c or c["complete"]:
        return []
    return [p["message"] for p in c["problems"]]


def change_items(report: dict) -> list[tuple[str, Change]]:
    """(kind, change) since the previous run, each naming the service, the operation and the figure."""
    w = report.get("week_over_week")
    if not w:
        return []
    items = [("verdict", Change(c["service"], "", f"verdict {c['before']} ({c['cause_before']}) → "
                                                  f"{c['after']} ({c['cause_after']})"))
             for c in w["verdict_changes"]]
    items += [("regression", Change(r["service"], r["operation"], "slower, " + change_text(r)))
              for r in w["regressions"]]
    items += [("improvement", Change(r["service"], r["operation"], "faster, " + change_text(r)))
              for r in w["improvements"]]
    items += [("new", Change(h["service"], h["operation"], f"new hot spot ({h['category']}, p99 {h['p99_ms']:.1f} ms)"))
              for h in w["new_hotspots"]]
    items += [("resolved", Change(h["service"], h["operation"], f"no longer a hot spot (was p99 {h['p99_ms']:.1f} ms)"))
              for h in w["resolved_hotspots"]]
    return items


def week_over_week_lines(report: dict) -> list[str]:
    """The changes as lines; one line saying there were none when the report was compared."""
    if not report.get("week_over_week"):
        return []
    return [c.line() for _, c in change_items(report)] or ["no changes above the thresholds"]


def change_text(c: dict) -> str:
    """"p99 120.0 → 150.0 ms (+25 %)" or "total time 40.0 → 52.1 s (+30 %)"."""
    if c["metric"] == "total_ms":
        return f"total time {c['before'] / 1000:.1f} → {c['after'] / 1000:.1f} s ({c['change_pct']:+.0f} %)"
    return f"p99 {c['before']:.1f} → {c['after']:.1f} ms ({c['change_pct']:+.0f} %)"
