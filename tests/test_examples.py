"""The README's example data: every recording in examples/ analyzes into a report that validates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.report_schema import validate_report

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.otlp.jsonl"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_report_validates_against_the_shipped_schema(path):
    p = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--traces", str(path), "--format", "json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    validate_report(report)
    assert report["input"]["spans"] > 0 and not report["input"]["skipped"]
    assert report["services"]
