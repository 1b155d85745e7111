"""What detectors return: findings with the measured evidence behind them."""

from __future__ import annotations

from dataclasses import dataclass, field

CATEGORIES = ("database", "network", "caching", "gc_pause", "cpu_bound")
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Evidence:
    """One measurement: what (signal), how much (value, unit) and where it came from (source:
    the statement, a sample trace id, or the PromQL query)."""

    signal: str
    value: float
    unit: str
    source: str

    def to_dict(self) -> dict:
        return {"signal": self.signal, "value": _round(self.value), "unit": self.unit, "source": self.source}


@dataclass
class Finding:
    """A rule that fired on a hot spot.

    `share` is the fraction (0..1) of the hot spot's critical-path time the finding explains;
    `saving_ms` is the mean per-request latency the remedy would save (0 when not estimable).
    `category` is one of CATEGORIES, or "unknown" for findings that explain nothing
    (e.g. unattributed wait)."""

    rule: str
    category: str
    message: str
    remedy: str
    share: float = 0.0
    saving_ms: float = 0.0
    evidence: list[Evidence] = field(default_factory=list)
    location: str | None = None  # "path:line (function)" of the code issuing the query or call

    def to_dict(self) -> dict:
        d = {
            "rule": self.rule,
            "category": self.category,
            "message": self.message,
            "share": _round(self.share),
            "saving_ms": _round(self.saving_ms),
            "evidence": [e.to_dict() for e in self.evidence],
            "remedy": self.remedy,
        }
        if self.location:
            d["location"] = self.location
        return d


def _round(x: float) -> float:
    return float(f"{x:.6g}")
