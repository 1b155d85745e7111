"""Which category explains a hot spot's time.

Every category gets the share (0..1) of the hot spot's critical-path time that its measured
evidence explains:

1. Trace shares: the breakdown's critical-path parts. `database` and `cache` spans count for
   database and caching; remote calls (the downstream's server time and the wire gap) and
   messaging count for network. Self time counts for nothing: in-process time is never
   evidence of CPU or GC work by itself, only runtime metrics make it so (step 3).
2. Time whose cause is the cache moves to caching. A database (or downstream) fetch that
   runs only because a cache read missed is caching's share, not the database's: fixing the
   cache removes it, tuning the database only makes misses cheaper. Detectors mark such time
   with an evidence entry whose signal is one of `MOVES` (fall-through fetches of
   cache-aside misses, PF-CACHE001/002; identical reads a cache would serve, PF-CACHE004) and
   whose value is the share moved. When several findings repeat one measurement (PF-CACHE001
   and PF-CACHE002 see the same fall-through), it is moved once (the largest), and never more
   than the source category has.
3. Findings raise their category to their own share when it is larger, after discounting
   what was moved out of that category: so a slow-statement finding on a fall-through query
   cannot take back the time moved to caching, while evidence from outside the spans (pool
   wait from metrics, GC and CPU from runtime metrics) still counts.

The shares of database, network and caching therefore never add up to more than the
critical path's non-self time, plus what metrics-based findings add.

The hot spot's category is the largest share when it is material (>= `min_share`) and ahead
of the next by `margin`; otherwise `unknown`.
"""

from __future__ import annotations

from dataclasses import dataclass

from analyzer.model.findings import CATEGORIES, UNKNOWN, Finding
from analyzer.hotspots import Hotspot

# Evidence signals that move a share of one category's time to the finding's category.
FALL_THROUGH_DATABASE = "fall_through_database_share"
FALL_THROUGH_NETWORK = "fall_through_network_share"
CACHEABLE_DATABASE = "cacheable_database_share"
MOVES = {FALL_THROUGH_DATABASE: "database", FALL_THROUGH_NETWORK: "network", CACHEABLE_DATABASE: "database"}


@dataclass(frozen=True)
class ClassifyConfig:
    min_share: float = 0.30
    margin: float = 0.10


def trace_shares(h: Hotspot) -> dict[str, float]:
    """Shares measured directly on the critical path (step 1)."""
    shares = dict.fromkeys(CATEGORIES, 0.0)
    shares["database"] = h.part_share("database")
    shares["caching"] = h.part_share("cache")
    shares["network"] = h.part_share("remote_server", "remote_gap", "messaging")
    return shares


def category_shares(h: Hotspot, findings: list[Finding]) -> dict[str, float]:
    shares = trace_shares(h)
    moves: dict[tuple[str, str], float] = {}
    for f in findings:
        if f.category not in shares:
            continue
        for e in f.evidence:
            if e.signal in MOVES and e.value > 0:
                key = (e.signal, f.category)
                moves[key] = max(moves.get(key, 0.0), float(e.value))
    removed = dict.fromkeys(CATEGORIES, 0.0)
    for (signal, to), value in sorted(moves.items()):
        source = MOVES[signal]
        moved = min(value, shares[source])
        shares[source] -= moved
        shares[to] += moved
        removed[source] += moved
    for f in findings:
        if f.category in shares:
            shares[f.category] = min(1.0, max(shares[f.category], f.share - removed[f.category]))
    return shares


def pick(shares: dict[str, float], cfg: ClassifyConfig) -> tuple[str, float]:
    """(category, share): the dominant category, or ('unknown', unexplained share)."""
    ranked = sorted(shares.items(), key=lambda kv: -kv[1])
    (top, top_share), runner_up = ranked[0], (ranked[1][1] if len(ranked) > 1 else 0.0)
    if top_share >= cfg.min_share and top_share - runner_up >= cfg.margin:
        return top, top_share
    return UNKNOWN, max(0.0, 1.0 - sum(shares.values()))
