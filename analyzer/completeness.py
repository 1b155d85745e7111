"""Whether a report answers what was asked: the problems a scheduled run must not keep quiet.

A report is incomplete when a requested service matched nothing, the environment filter matched
no span, the window holds no spans,
Prometheus gave no series for a service or a query failed, or a verdict could not be measured.
Each problem is one sentence naming the service, the window or the signal; renderers print
them first and `report` turns them into exit code 3.
"""

from __future__ import annotations

from analyzer.cliutil import closest
from analyzer.environments import asked_for, kept_nothing
from analyzer.model.signals import Signals

INSUFFICIENT = "insufficient_evidence"


def assess(report: dict, *, requested: list[str] | None, known: list[str], traces_given: bool,
           spans_in_window: int, span_window: tuple[str, str] | None, prometheus: str | None,
           signals: Signals | None, environment_filter: dict | None = None) -> dict:
    """`report["completeness"]`: {"complete": bool, "problems": [{"kind", "message", "service"?}]}.

    `spans_in_window` counts the spans of any service that start in the window; `span_window` is
    the time the traces read cover."""
    problems: list[dict] = []
    reported = {s["service"] for s in report["services"]}
    for name in requested or ():
        if name not in reported:
            near = closest(name, list(known))
            hint = f" (did you mean {near!r}?)" if near else (
                f"; services seen: {', '.join(sorted(known)[:20])}" if known else "")
            problems.append({"kind": "service_not_found", "service": name,
                             "message": f"service {name!r} is in no trace or metric of the window{hint}"})
    w = report["window"]
    env = environment_filter
    if (nothing := kept_nothing(env)) is not None:
        problems.append({"kind": "environment_not_found",
                         "message": f"{nothing} (list them in [scope] environments or --environment)"})
    elif traces_given and spans_in_window == 0:
        read = f" (the traces read cover {span_window[0]} → {span_window[1]})" if span_window else ""
        # A store that took the environment filter into its search may have returned nothing for it.
        asked = asked_for(env["environments"]) if env and not env["spans_read"] else ""
        problems.append({"kind": "no_spans_in_window",
                         "message": f"no spans start in the window {w['start']} → {w['end']}{read}{asked}"})
    if prometheus:
        for s in report["services"]:
            svc = signals.for_service(s["service"]) if signals else None
            if svc is None or not svc.series:
                problems.append({"kind": "no_series", "service": s["service"],
                                 "message": f"Prometheus at {prometheus} returned no series for {s['service']!r}"})
        for m in report["input"].get("missing_evidence") or ():
            if str(m.get("reason", "")).startswith("query failed"):
                problems.append({"kind": "metrics_query_failed",
                                 "message": f"a Prometheus query for {m['signal']} failed: {m['reason']}"})
    for s in report["services"]:
        v = s["verdict"]
        if v["rust_rewrite"] == INSUFFICIENT:
            problems.append({"kind": "verdict_unmeasured", "service": s["service"],
                             "message": f"{s['service']}: no verdict, the evidence it needs is missing: {v['reason']}"})
    return {"complete": not problems, "problems": problems}
