"""Standard errors of the figures a weighted sample estimates (collectors/sampling.py).

Each sampled request i stands for w_i requests of the window (w_i = 1 / its inclusion
probability). The estimators are Horvitz-Thompson ones, and their variance is taken as for
Poisson sampling with the same inclusion probabilities:

    total   Y = sum w y                    Var ~ sum w (w - 1) y^2
    ratio   R = sum w y / sum w x          Var ~ sum w (w - 1) (y - R x)^2 / (sum w x)^2
    q-quantile                             Woodruff: the error of the estimated share of requests
                                           at or below it, mapped back through the quantile function

A request kept with certainty (weight 1: the whole tail under the cap) adds no error. For a
stratified draw without replacement this slightly overstates the error (it ignores the finite
population correction and that each stratum's count is known), so an estimate within two or
three of these errors of the whole window's figure is what a correct sample gives.
"""

from __future__ import annotations

import numpy as np

from analyzer.hotspots import Hotspot
from analyzer.model.arrays import weighted_quantile

MS = 1e6


def total_se(y: np.ndarray, w: np.ndarray) -> float:
    """Standard error of sum(w * y)."""
    y, w = np.asarray(y, dtype=np.float64), np.asarray(w, dtype=np.float64)
    return float(np.sqrt(np.sum(w * (w - 1.0) * y * y)))


def ratio_se(y: np.ndarray, x: np.ndarray, w: np.ndarray) -> float:
    """Standard error of sum(w * y) / sum(w * x) (a mean when x is all ones, a share otherwise)."""
    y, x, w = (np.asarray(a, dtype=np.float64) for a in (y, x, w))
    den = float(w @ x)
    if den <= 0:
        return 0.0
    r = float(w @ y) / den
    return total_se(y - r * x, w) / den


def quantile_se(values: np.ndarray, q: float, w: np.ndarray) -> float:
    """Woodruff's standard error of the weighted q-quantile of `values`."""
    w = np.asarray(w, dtype=np.float64)
    if not values.size:
        return 0.0
    at = weighted_quantile(values, q, w)
    below = (values <= at).astype(np.float64)
    se_p = ratio_se(below, np.ones_like(below), w)
    lo = weighted_quantile(values, max(0.0, q - se_p), w)
    hi = weighted_quantile(values, min(1.0, q + se_p), w)
    return (hi - lo) / 2.0


def hotspot_errors(h: Hotspot, parts: dict[str, tuple[int, ...]]) -> dict[str, float]:
    """Standard errors of a sampled hot spot's figures, in the report's units (ms, requests,
    ratios); `parts` names the breakdown columns of each share (PARTS indices). Per part, the error
    of its share and of its mean ms per request: a finding's saving is part of one of them."""
    w = h.weights if h.weights is not None else np.ones(h.count)
    d = h.durations.astype(np.float64)
    ones = np.ones_like(d)
    out = {
        "estimated_count": total_se(ones, w),
        "total_ms": total_se(d, w) / MS,
        "mean_ms": ratio_se(d, ones, w) / MS,
        **{f"p{round(q * 100)}_ms": quantile_se(d, q, w) / MS for q in (0.50, 0.95, 0.99)},
    }
    for name, idx in parts.items():
        part = h.parts[:, list(idx)].sum(axis=1).astype(np.float64)
        out[f"{name}_share"] = ratio_se(part, d, w)
        out[f"{name}_ms"] = ratio_se(part, ones, w) / MS  # per request: the scale of the rules' savings
    return {k: round(float(v), 3) for k, v in out.items()}
