"""What the report says, as a reader takes it (issue 11, issue 14 "Terminal and Markdown")."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", "analyze", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_every_saving_names_its_base(orders_n_plus_one_jsonl):
    """The N+1 fix saves ms per GET /orders request (the hot spot's base); the ceiling's fix-first
    figure is per request to the service: two bases, each named, so they never read as a
    contradiction."""
    for fmt in ("md", "text"):
        out = re.sub(r"\s+", " ", analyze("--traces", str(orders_n_plus_one_jsonl), "--format", fmt).stdout)
        assert re.search(r"PF-DB001 on GET /orders saves [\d.]+ ms per GET /orders request", out)
        assert re.search(r"fixing the top cause first saves [\d.]+ ms \(\d+%\) per request to orders", out)
        assert re.search(r"saves [\d.]+ ms per GET /orders request", out.split("Fix first")[-1] if fmt == "md" else out)
        assert "ms/request" not in out
