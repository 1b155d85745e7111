"""Week over week: what changed between two reports over the same services.

Hot spots are matched by (service, operation). A regression is a matched hot spot whose p99 or
total time (its impact over the window) rose by more than `regression_pct` percent; an
improvement fell by as much. Every change names the service, the operation and the figure.
"""

from __future__ import annotations

METRICS = ("p99_ms", "total_ms")


def week_over_week(current: dict, previous: dict, previous_run: int, regression_pct: float) -> dict:
    """`report["week_over_week"]` (schema: week_over_week)."""
    before_services = {s["service"]: s for s in previous["services"]}
    now_services = {s["service"]: s for s in current["services"]}
    verdict_changes = []
    for name, s in now_services.items():
        old = before_services.get(name)
        if old is None:
            continue
        a, b = old["verdict"], s["verdict"]
        if (a["rust_rewrite"], a["cause"]) != (b["rust_rewrite"], b["cause"]):
            verdict_changes.append({"service": name, "before": a["rust_rewrite"], "after": b["rust_rewrite"],
                                    "cause_before": a["cause"], "cause_after": b["cause"]})
    before = _hotspots(previous, only=set(now_services))
    now = _hotspots(current, only=set(before_services))
    regressions, improvements = [], []
    for key in now.keys() & before.keys():
        for metric in METRICS:
            a, b = float(before[key][metric]), float(now[key][metric])
            if a <= 0:
                continue
            pct = (b - a) / a * 100
            change = {"service": key[0], "operation": key[1], "metric": metric, "before": a, "after": b,
                      "change_pct": round(pct, 1)}
            if pct > regression_pct:
                regressions.append(change)
            elif pct < -regression_pct:
                improvements.append(change)
    regressions.sort(key=lambda c: -c["change_pct"])
    improvements.sort(key=lambda c: c["change_pct"])
    return {
        "previous": {"run": previous_run, "window_start": previous["window"]["start"],
                     "window_end": previous["window"]["end"], "generated_at": previous.get("generated_at", "")},
        "regression_pct": regression_pct,
        "verdict_changes": verdict_changes,
        "regressions": regressions,
        "improvements": improvements,
        "new_hotspots": [_brief(key, now[key]) for key in sorted(now.keys() - before.keys())],
        "resolved_hotspots": [_brief(key, before[key]) for key in sorted(before.keys() - now.keys())],
    }


def _hotspots(report: dict, only: set[str]) -> dict[tuple[str, str], dict]:
    """Hot spots of the services both reports cover: one that appears or vanishes with its whole
    service is a change of scope (completeness says so), not of the service's behaviour."""
    return {(s["service"], h["operation"]): h for s in report["services"] if s["service"] in only
            for h in s["hotspots"]}


def _brief(key: tuple[str, str], h: dict) -> dict:
    return {"service": key[0], "operation": key[1], "category": h["category"], "p99_ms": h["p99_ms"],
            "total_ms": h["total_ms"]}
