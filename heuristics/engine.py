"""Runs the registered rules over one hot spot, honouring the config's thresholds and ignores."""

from __future__ import annotations

from analyzer.config import Config
from analyzer.model.findings import Finding
from heuristics.context import HotspotContext
from heuristics.registry import all_rules


def run_rules(ctx: HotspotContext, config: Config) -> list[Finding]:
    h = ctx.hotspot
    findings: list[Finding] = []
    for code, rule in all_rules().items():
        if not config.enabled(code, h.service, h.operation):
            continue
        thresholds = config.thresholds(code, rule.defaults, h.service, h.operation)
        findings.extend(rule.detect(ctx, thresholds))
    findings.sort(key=lambda f: (-f.share, f.rule))
    return findings
