"""Rule documentation: generated from the detectors, complete, current, and printed by the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from heuristics.docs import expected
from heuristics.registry import all_rules

SECTIONS = ("## What it detects", "## How it measures", "## False positives", "## How to fix")
RULES = all_rules()


def test_every_category_has_rules():
    categories = {r.category for r in RULES.values()}
    assert {"database", "network", "caching", "gc_pause", "cpu_bound"} <= categories


@pytest.mark.parametrize("code", sorted(RULES))
def test_rule_doc_has_every_section(code):
    doc = RULES[code].doc
    for section in SECTIONS:
        assert section in doc, f"{code} lacks {section!r}"


def test_docs_pages_are_current():
    stale = [p.name for p, text in expected().items() if not p.exists() or p.read_text() != text]
    assert not stale, f"stale rule pages (run `make docs`): {stale}"


def test_rule_command_prints_the_doc_and_thresholds():
    p = subprocess.run([sys.executable, "-m", "analyzer", "rule", "pf-db001"], capture_output=True, text=True)
    assert p.returncode == 0
    assert p.stdout.startswith("PF-DB001 n-plus-one-queries (database)")
    assert "## How to fix" in p.stdout and "min_repetitions = 5" in p.stdout


def test_unknown_rule_is_exit_2():
    p = subprocess.run([sys.executable, "-m", "analyzer", "rule", "PF-XX999"], capture_output=True, text=True)
    assert p.returncode == 2 and "no rule" in p.stderr
