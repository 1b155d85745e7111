"""The rewrite ceiling (Amdahl): the most a Rust rewrite could cut from a service's latency and CPU
cost, beside what fixing its dominant non-runtime cause would save.

Only the GC share and the CPU share of a request can shrink in a rewrite. Per traced request j
of hot spot i (self_j = its self time, d_j = its duration):

    gc_j  = self_j * G_i / s_i                   G_i = hot spot i's GC share (its category share)
    cpu_j = self_j * C_i / s_i                   C_i = its CPU share, s_i = its self share
    saved_j = gc_j + cpu_j * (1 - 1/S)           S = assumed speed-up of CPU work (config, default 2)

G_i and C_i are the category shares the verdict reads (from the GC and CPU findings), so the
reason, the shares and the ceiling tell one story: a share no finding backs is 0 here too.

A hot spot without CPU or GC metrics has no measured share: its whole self time counts as the
bound (`measured` is false), never a zero we did not measure.

p50/p99/mean savings are the service's latency quantiles before minus after subtracting saved_j,
so a GC storm that hits the tail shows in p99 and not in p50. In a weighted sample each request
counts as the traces it stands for (quantiles, means and fix-first counts alike). CPU cost: cores used x
(GC CPU fraction + (1 - GC fraction) x (1 - 1/S)); the GC CPU fraction is known only for Go
(runtime/metrics), elsewhere GC CPU is inside the CPU figure. Everything is an upper bound
under these assumptions: allocation, I/O and waiting do not get faster.

The fix-first saving: the dominant non-runtime category (database, network or caching) of the
service, and per hot spot the largest `saving_ms` of that category's findings (findings of one
hot spot overlap, so they are not added), as mean ms per request and % of the mean latency.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from analyzer.model.arrays import weighted_quantile
from analyzer.sampling_error import ratio_se
from analyzer.verdict import OTHER_CAUSES, HotspotResult
from heuristics.context import HotspotContext
from heuristics.runtime import RuntimeMeasure, measure

DEFAULT_CPU_SPEEDUP = 2.0
MS = 1e6


def rewrite_ceiling(ctxs: Sequence[HotspotContext], results: Sequence[HotspotResult],
                    cpu_speedup: float = DEFAULT_CPU_SPEEDUP, signals_cores: float | None = None,
                    gc_cpu_fraction: float | None = None) -> dict:
    """The `rewrite_ceiling` of one service. `ctxs` and `results` are its hot spots, in the same order.

    `signals_cores` / `gc_cpu_fraction` are the service's window means, for a service without
    traced hot spots (metrics only)."""
    speed = max(1.0, float(cpu_speedup))
    keep = 1.0 - 1.0 / speed
    out: dict = {"cpu_speedup": speed}
    durations, saved, weights = [], [], []
    gc_ms = cpu_ms = 0.0
    cores, gc_frac = signals_cores, gc_cpu_fraction
    unmeasured = 0
    cost: dict = {}
    for ctx, r in zip(ctxs, results):
        m = measure(ctx)
        d, s, g, c = _per_request(ctx, r, m)
        durations.append(d)
        weights.append(ctx.req_weight)
        if m.cores_used is None and m.gc is None:
            # No CPU or GC metrics: 0 would be a claim we did not measure. The honest bound is
            # that all in-process time could go.
            unmeasured += 1
            saved.append(s)
            continue
        saved.append(g + c * keep)
        gc_ms += float(g @ ctx.req_weight) / MS
        cpu_ms += float(c @ ctx.req_weight) / MS
        if m.cores_used is not None:
            cores = m.cores_used.value
        cost = cost or runtime_cost(m)
        if m.gc_kind == "cpu" and m.gc_cpu_fraction is not None:
            gc_frac = m.gc_cpu_fraction.value
        elif m.gc_kind == "cpu" and m.cores_used is not None and m.cores_used.value > 0:
            gc_frac = m.gc.value / m.cores_used.value
    if durations:
        d = np.concatenate(durations).astype(np.float64)
        cut_ns = np.concatenate(saved)
        after = d - cut_ns
        sampled = any(c.sampled for c in ctxs)
        w = np.concatenate(weights) if sampled else None  # a sample's requests count as many as they stand for
        n = float(w.sum()) if w is not None else float(d.size)
        total_ms = float(d.sum() if w is None else d @ w) / MS
        for name, q in (("p50", 0.50), ("p99", 0.99)):
            before = weighted_quantile(d, q, w) / MS
            cut = before - weighted_quantile(after, q, w) / MS
            out[f"{name}_ms"] = _r(cut)
            out[f"{name}_pct"] = _r(100 * cut / before if before > 0 else 0.0)
        mean_cut = float(cut_ns.sum() if w is None else cut_ns @ w) / MS / n
        out["mean_ms"] = _r(mean_cut)
        out["mean_pct"] = _r(100 * mean_cut / (total_ms / n) if total_ms > 0 else 0.0)
        if w is not None:
            out["mean_ms_error"] = _r(ratio_se(cut_ns, np.ones_like(cut_ns), w) / MS)
        basis = {"gc_share": _r(gc_ms / total_ms if total_ms else 0.0),
                 "cpu_share": _r(cpu_ms / total_ms if total_ms else 0.0)}
    else:
        basis = {}
    if cores is not None and np.isfinite(cores) and cores > 0:
        f = min(1.0, max(0.0, gc_frac)) if gc_frac is not None and np.isfinite(gc_frac) else 0.0
        cut_frac = f + (1.0 - f) * keep
        out["cpu_cost_pct"] = _r(100 * cut_frac)
        basis["cpu_cores_used"] = _r(cores)
        basis["cpu_cores_saved"] = _r(cores * cut_frac)
        if gc_frac is not None:
            basis["gc_cpu_fraction"] = _r(f)
    fix = _fix_first(results, [c.n_requests for c in ctxs])
    if fix:
        out["fix_first_ms"] = fix["mean_ms"]
        out["fix_first_pct"] = fix["pct"]
        out["fix_first"] = fix
    basis["assumes"] = (f"GC time removed, CPU work {speed:g}x faster; waiting, I/O and downstream time unchanged"
                        + ("" if gc_frac is not None else "; GC CPU counted inside CPU work"))
    basis.update(cost)
    out["measured"] = unmeasured == 0
    if unmeasured:
        basis["assumes"] = ("no CPU or GC metrics, so an upper bound: all in-process (self) time of "
                            f"{unmeasured} of {len(results)} hot spots counted as removable")
    out["basis"] = basis
    return out


def runtime_cost(m: RuntimeMeasure) -> dict:
    """The service's per-request runtime cost split the shares rest on (service-wide figures, the
    same for every hot spot of the service); only what was measured."""
    out = {}
    for key, value in (("gc_ms_per_request", m.gc_ms_per_request), ("cpu_ms_per_request", m.work_ms_per_request),
                       ("background_cores", m.background_cores if m.cores_used is not None else float("nan")),
                       ("cpu_ceiling_cores", m.ceiling_cores), ("requests_in_process", m.in_flight),
                       ("gc_ms_before_spans_per_request", m.gc_outside_ms)):
        if np.isfinite(value):
            out[key] = _r(value)
    return out


def _per_request(ctx: HotspotContext, r: HotspotResult, m: RuntimeMeasure) -> tuple[np.ndarray, ...]:
    """(duration, self, gc, cpu) ns per entry span of the hot spot (see the module docstring)."""
    h = ctx.hotspot
    d = h.durations.astype(np.float64)
    self_ns = h.parts[:, 0].astype(np.float64)
    zero = np.zeros_like(d)
    if m.self_share <= 0:
        return d, self_ns, zero, zero
    # The verdict's category shares, backed by findings; never above the self share.
    gc_share = r.shares.get("gc_pause", 0.0) if _has(r, "gc_pause") else 0.0
    cpu_share = r.shares.get("cpu_bound", 0.0) if _has(r, "cpu_bound") else 0.0
    gc = self_ns * min(1.0, gc_share / m.self_share)
    cpu = np.minimum(self_ns - gc, self_ns * min(1.0, cpu_share / m.self_share))
    return d, self_ns, gc, np.maximum(cpu, 0.0)


def _has(r: HotspotResult, category: str) -> bool:
    return any(f.category == category and f.share > 0 for f in r.findings)


def _fix_first(results: Sequence[HotspotResult], counts: Sequence[float]) -> dict | None:
    total = sum(r.total_ms for r in results)
    n_all = sum(counts)
    if total <= 0 or n_all <= 0:
        return None
    weighted = {c: sum(r.shares.get(c, 0.0) * r.total_ms for r in results) / total for c in OTHER_CAUSES}
    category = max(weighted, key=lambda c: weighted[c])
    saved_ms, best = 0.0, (0.0, "")
    for r, n in zip(results, counts):
        fs = [f for f in r.findings if f.category == category and f.saving_ms > 0]
        if not fs or n <= 0:
            continue
        f = max(fs, key=lambda f: f.saving_ms)
        per = min(f.saving_ms, r.total_ms / n)  # a fix cannot save more than the request takes
        saved_ms += per * n
        best = max(best, (per * n, f.rule))
    if saved_ms <= 0:
        return None
    return {"category": category, "rule": best[1], "mean_ms": _r(saved_ms / n_all), "pct": _r(100 * saved_ms / total)}


def _r(x: float) -> float:
    return round(float(x), 3)
