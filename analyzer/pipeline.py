"""The analysis: SpanTable (+ Signals) -> breakdown -> hot spots -> findings -> verdicts -> report."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from threadpoolctl import threadpool_limits

from analyzer import __version__
from analyzer.breakdown import PARTS, compute
from analyzer.ceiling import DEFAULT_CPU_SPEEDUP, rewrite_ceiling
from analyzer.classify import category_shares, pick
from analyzer.config import Config
from analyzer.model.findings import Finding
from analyzer.hotspots import Hotspot, find_hotspots
from analyzer.model.spans import SpanTable
from analyzer.model.profile import Profile
from analyzer.profile_verdict import attach, profile_config, views_by_service
from analyzer.sampling_error import hotspot_errors
from analyzer.model.signals import Signal, Signals
from analyzer.model.store_figures import OperationFigures, StoreFigures
from analyzer.model.table import Repairs
from analyzer.timeseries import sample_traces, service_timeseries
from analyzer.verdict import HotspotResult, decide
from collectors.otlp_files import SourceStats
from heuristics.context import HotspotContext
from heuristics.engine import run_rules
from heuristics.profiles import CHEAPER_FIX_RULES

SCHEMA = "profile-first.report/v1"
MAX_HOTSPOTS_PER_SERVICE = 20

# The breakdown parts of each trace share the verdict reads (analyzer/classify.py `trace_shares`).
SHARE_PARTS = {k: tuple(PARTS.index(p) for p in v) for k, v in (
    ("self", ("self",)), ("database", ("database",)), ("caching", ("cache",)),
    ("network", ("remote_server", "remote_gap", "messaging")))}


@dataclass
class Inputs:
    table: SpanTable
    sources: list[SourceStats] = field(default_factory=list)
    repairs: Repairs = field(default_factory=Repairs)
    signals: Signals | None = None
    store: StoreFigures | None = None  # whole-window figures a trace store computed (ClickHouse)
    profiles: list[Profile] = field(default_factory=list)
    profile_sources: list = field(default_factory=list)  # collectors.profiles.ProfileSource


def analyze(inputs: Inputs, config: Config, start_ns: int | None = None, end_ns: int | None = None,
            services: list[str] | None = None) -> dict:
    """The report as a dict following the `profile-first.report/v1` schema."""
    # One BLAS thread: the analysis's dot products (sums over a hot spot's requests or spans) are
    # too short to gain from OpenBLAS's threads, which spin between them and, at 10M spans, doubled
    # the rules' CPU time. One thread also adds in the same order on every machine.
    with threadpool_limits(limits=1, user_api="blas"):
        return _analyze(inputs, config, start_ns, end_ns, services)


def _analyze(inputs: Inputs, config: Config, start_ns: int | None, end_ns: int | None,
             services: list[str] | None) -> dict:
    t = inputs.table
    b = compute(t)
    hotspots = find_hotspots(t, b, start_ns, end_ns, services)
    if inputs.store is not None:  # a sample: rank by the store's exact whole-window totals
        hotspots.sort(key=lambda h: -_exact_total_ms(h, inputs.store))
    ignored = [h for h in hotspots if config.ignores_operation(h.operation)]
    hotspots = [h for h in hotspots if not config.ignores_operation(h.operation)]
    signals = inputs.signals or Signals()
    if start_ns is not None or end_ns is not None:
        signals = signals.within(_seconds(start_ns), _seconds(end_ns))
    all_hotspots = tuple(hotspots)

    by_service: dict[str, list[Hotspot]] = {}
    for h in hotspots:
        by_service.setdefault(h.service, []).append(h)
    if services is None:
        # Services seen only in metrics still get a verdict (they have no trace hot spots).
        for name in signals.services:
            by_service.setdefault(name, [])
    elif signals.services:
        for name in services:
            if name in signals.services:
                by_service.setdefault(name, [])
    views = views_by_service(inputs.profiles, config)
    for name in views:  # a profiled service gets its profile summary even without traced requests
        if services is None or name in services:
            by_service.setdefault(name, [])

    service_reports = []
    for service, hs in by_service.items():
        svc_signals = signals.for_service(service)
        runtime = t.runtimes.get(service, "unknown")
        if runtime == "unknown" and svc_signals is not None:
            runtime = svc_signals.runtime
        hot_reports, results, ctxs = [], [], []
        for h in hs:
            ctx = HotspotContext(table=t, breakdown=b, hotspot=h, signals=svc_signals,
                                 all_hotspots=all_hotspots, classify=config.classify, store=inputs.store,
                                 profile=views.get(service))
            ctxs.append(ctx)
            findings = run_rules(ctx, config)
            shares = category_shares(h, findings)
            category, share = pick(shares, config.classify)
            results.append(HotspotResult(h.operation, h.total_ms, h.part_share("self"), category, shares, findings))
            hot_reports.append(_hotspot_dict(h, category, share, shares, findings, inputs.store))
            hot_reports[-1]["sample_traces"] = sample_traces(t, h)
        fix_first = _fix_first(results, hs)
        verdict = decide(service, runtime, results, config.classify,
                         has_runtime_metrics=bool(svc_signals and svc_signals.series),
                         signals=svc_signals, fix_first=fix_first)
        service_report = {
            "service": service,
            "runtime": runtime,
            "verdict": verdict.to_dict(),
            "total_ms": _r(sum(h.total_ms for h in hs)),
            "fix_first": fix_first,
            "rewrite_ceiling": _ceiling(ctxs, results, svc_signals, config),
            "hotspots": hot_reports[:MAX_HOTSPOTS_PER_SERVICE],
        }
        series = service_timeseries(t, hs, svc_signals, _seconds(start_ns), _seconds(end_ns))
        if series is not None:
            service_report["timeseries"] = series
        if service in views:
            attach(service_report, views[service], profile_config(config), CHEAPER_FIX_RULES)
        service_reports.append(service_report)
    service_reports.sort(key=lambda s: (-s["total_ms"], s["service"]))
    return {
        "schema": SCHEMA,
        "tool": {"name": "profile-first", "version": __version__},
        "generated_at": rfc3339(datetime.now(timezone.utc).timestamp()),
        "window": _window(t, b.entries, start_ns, end_ns),
        "input": _input(inputs, t, ignored),
        "services": service_reports,
    }


def _ceiling(ctxs: list[HotspotContext], results: list[HotspotResult], svc_signals, config: Config) -> dict:
    """The rewrite ceiling (analyzer/ceiling.py); `[rewrite] cpu_speedup` in the config sets S."""
    speedup = float(dict(config.sections.get("rewrite", {}) or {}).get("cpu_speedup", DEFAULT_CPU_SPEEDUP))
    cores = gc_frac = None
    if not ctxs and svc_signals is not None:  # metrics only: whole-window means
        used, frac = svc_signals.get(Signal.CPU_CORES_USED), svc_signals.get(Signal.GC_CPU_FRACTION)
        cores = used.mean() if used is not None else None
        gc_frac = frac.mean() if frac is not None else None
    return rewrite_ceiling(ctxs, results, cpu_speedup=speedup, signals_cores=cores, gc_cpu_fraction=gc_frac)


def _hotspot_dict(h: Hotspot, category: str, share: float, shares: dict[str, float], findings,
                  store: StoreFigures | None = None) -> dict:
    m = h.mean_parts_ms()
    whole = store.operation(h.service, h.operation) if store is not None else None
    return {
        "operation": h.operation,
        "category": category,
        "share": _r(share),
        "category_shares": {k: _r(v) for k, v in shares.items()},
        "count": h.count,
        **({"estimated_count": _r(h.estimated_count),
            "sampling_error": hotspot_errors(h, SHARE_PARTS)} if h.weights is not None else {}),
        "p50_ms": _r(h.quantile_ms(0.50)),
        "p95_ms": _r(h.quantile_ms(0.95)),
        "p99_ms": _r(h.quantile_ms(0.99)),
        "total_ms": _r(h.total_ms),
        "breakdown": {
            "self": _r(m["self"]),
            "database": _r(m["database"]),
            "cache": _r(m["cache"]),
            "remote": _r(m["remote_server"] + m["remote_gap"]),
            "messaging": _r(m["messaging"]),
        },
        "remote_detail": {"server": _r(m["remote_server"]), "gap": _r(m["remote_gap"])},
        "findings": [f.to_dict() for f in findings],
        **({"window_figures": _window_figures(h, whole, store.engine)} if whole is not None else {}),
    }


def _exact_total_ms(h: Hotspot, store: StoreFigures) -> float:
    whole = store.operation(h.service, h.operation)
    return whole.total_ns / 1e6 if whole is not None else h.total_ms


def _window_figures(h: Hotspot, whole: OperationFigures, engine: str) -> dict:
    """The store's exact figures, and how far the sample's weighted total is from its total."""
    exact_ms = whole.total_ns / 1e6
    error = (h.total_ms - exact_ms) / exact_ms if exact_ms > 0 else 0.0
    return {**whole.to_dict(), "computed_in": engine, "sample_total_error": _r(error)}


def _fix_first(results: list[HotspotResult], hs: list[Hotspot]) -> list[dict]:
    """Findings with a saving, ordered by the total time their fix would save over the window.

    Findings of one category about exactly the same statements or downstreams (their evidence
    sources, sample traces aside) on one operation measure the same time, e.g. an N+1 loop and
    the slow statement it repeats: only the one with the largest saving is listed, so the same
    milliseconds are not promised twice. Different remedies over different sets (running three
    queries concurrently vs. indexing one of them) are both listed."""
    items = []
    for r, h in zip(results, hs):
        best: dict[tuple[str, frozenset[str]], Finding] = {}
        for f in r.findings:
            if f.saving_ms > 0 and (f.category in ("database", "network", "caching") or f.rule in CHEAPER_FIX_RULES):
                sources = frozenset(e.source for e in f.evidence if not e.source.startswith("trace "))
                subject = (f.category, sources or frozenset({f.rule}))
                if subject not in best or f.saving_ms > best[subject].saving_ms:
                    best[subject] = f
        for f in best.values():
            items.append({
                "rule": f.rule,
                "operation": r.operation,
                "message": f.message,
                "saving_ms_per_request": _r(f.saving_ms),
                "saving_total_ms": _r(f.saving_ms * h.estimated_count),
                "remedy": f.remedy,
            })
    items.sort(key=lambda i: -i["saving_total_ms"])
    return items[:10]


def _input(inputs: Inputs, t: SpanTable, ignored: list[Hotspot]) -> dict:
    skipped: dict[str, int] = {}
    repaired: dict[str, int] = dict(inputs.repairs.to_dict())
    for s in inputs.sources:
        for k, v in s.skipped.items():
            skipped[k] = skipped.get(k, 0) + int(v)
        for k, v in s.repaired.items():
            repaired[k] = repaired.get(k, 0) + int(v)
    signals = inputs.signals
    return {
        "spans": len(t),
        "traces": t.n_traces,
        "skipped": skipped,
        "repaired": {k: v for k, v in repaired.items()},
        "sources": [s.to_dict() for s in inputs.sources],
        "missing_evidence": [
            {"signal": m.signal, "reason": m.reason, "enable": m.enable, "query": m.query}
            for m in (signals.failures if signals else [])
        ],
        "metric_queries": signals.queries if signals else 0,
        # hot spots left out by the config's scope.ignore_operations, so none disappears unseen
        "ignored_operations": [{"service": h.service, "operation": h.operation, "count": h.count} for h in ignored],
        **({"profiles": [p.to_dict() for p in inputs.profile_sources]} if inputs.profile_sources else {}),
    }


def _window(t: SpanTable, entries: np.ndarray, start_ns: int | None, end_ns: int | None) -> dict:
    """The window, and with an explicit one the spans and traces in it: those of the traces
    whose entry spans start in it (what the hot spots are made of)."""
    window: dict = {}
    if start_ns is not None or end_ns is not None:
        st = t.start[entries]
        lo = start_ns if start_ns is not None else np.iinfo(np.int64).min
        hi = end_ns if end_ns is not None else np.iinfo(np.int64).max
        in_window = np.zeros(t.n_traces, dtype=bool)  # by trace code: no sort of the table's traces
        in_window[t.trace[entries[(st >= lo) & (st < hi)]]] = True
        window = {"spans": int(np.count_nonzero(in_window[t.trace])), "traces": int(np.count_nonzero(in_window))}
    if start_ns is None:
        start_ns = int(t.start[entries].min()) if entries.size else 0
    if end_ns is None:
        end_ns = int(t.end[entries].max()) if entries.size else 0
    return {"start": rfc3339(start_ns / 1e9), "end": rfc3339(end_ns / 1e9), **window}


def _seconds(ns: int | None) -> float | None:
    return None if ns is None else ns / 1e9


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _r(x: float) -> float:
    return round(float(x), 3)

