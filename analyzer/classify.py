"""Which category explains a hot spot's time.

Every category gets the share (0..1) of the hot spot's critical-path time that its
measured evidence explains: time in database, cache or remote spans on the critical path
(from the breakdown), raised by detector findings that explain more (e.g. a GC finding from
runtime metrics). The hot spot's category is the largest share when it is material
(>= min_share) and ahead of the next by `margin`; otherwise `unknown`. Self time alone is
never evidence of CPU or GC work.
"""

from __future__ import annotations

from dataclasses import dataclass

from analyzer.findings import CATEGORIES, UNKNOWN, Finding
from analyzer.hotspots import Hotspot


@dataclass(frozen=True)
class ClassifyConfig:
    min_share: float = 0.30
    margin: float = 0.10


def trace_shares(h: Hotspot) -> dict[str, float]:
    """Shares measured directly on the critical path."""
    shares = dict.fromkeys(CATEGORIES, 0.0)
    shares["database"] = h.part_share("database")
    shares["caching"] = h.part_share("cache")
    shares["network"] = h.part_share("remote_server", "remote_gap", "messaging")
    return shares


def category_shares(h: Hotspot, findings: list[Finding]) -> dict[str, float]:
    shares = trace_shares(h)
    for f in findings:
        if f.category in shares:
            shares[f.category] = min(1.0, max(shares[f.category], f.share))
    return shares


def pick(shares: dict[str, float], cfg: ClassifyConfig) -> tuple[str, float]:
    """(category, share): the dominant category, or ('unknown', unexplained share)."""
    ranked = sorted(shares.items(), key=lambda kv: -kv[1])
    (top, top_share), runner_up = ranked[0], (ranked[1][1] if len(ranked) > 1 else 0.0)
    if top_share >= cfg.min_share and top_share - runner_up >= cfg.margin:
        return top, top_share
    return UNKNOWN, max(0.0, 1.0 - sum(shares.values()))
