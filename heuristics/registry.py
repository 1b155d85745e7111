"""The rule registry: every detector is a `Rule` with a stable code, defaults and its docs.

Like a linter's registry, the registry decides what runs; a rule's documentation is the
docstring of its detector function (what it detects, how it measures, thresholds, false
positives, how to fix), so `profile-first rule CODE` and docs/rules/ cannot drift from code.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from analyzer.model.findings import Finding
    from heuristics.context import HotspotContext

Detector = Callable[["HotspotContext", Mapping[str, float]], "list[Finding]"]


@dataclass(frozen=True)
class Rule:
    code: str  # "PF-DB001"
    name: str  # "n-plus-one-queries"
    category: str  # one of analyzer.model.findings.CATEGORIES, or "unknown"
    summary: str  # one line
    defaults: Mapping[str, float]  # threshold name -> default value
    detect: Detector

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.detect.__doc__ or "")


RULES: dict[str, Rule] = {}


def rule(code: str, name: str, category: str, summary: str, **defaults: float) -> Callable[[Detector], Detector]:
    """Register the decorated detector as rule `code` with threshold `defaults`."""

    def register(fn: Detector) -> Detector:
        if code in RULES:
            raise ValueError(f"rule code {code} registered twice")
        RULES[code] = Rule(code, name, category, summary, dict(defaults), fn)
        return fn

    return register


def all_rules() -> dict[str, Rule]:
    """Every rule, after importing the detector modules that register them."""
    import heuristics.detectors  # noqa: F401  (imports each category module)

    return dict(sorted(RULES.items()))
