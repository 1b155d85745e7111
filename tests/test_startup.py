"""Start-up stays cheap: `--version` imports neither numpy nor any transport, and analyzing a file
imports no gRPC, requests or capture code (checked on the real import trace, not by timing,
which a shared CI machine makes noisy; the README gives the timings), and a JSON report imports
neither rich nor the ClickHouse reader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported(*args: str) -> set[str]:
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "analyzer", *args], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return {line.split("|")[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}


def test_version_imports_only_the_command_line() -> None:
    mods = imported("--version")
    assert not {m for m in mods if m.split(".")[0] in {"numpy", "grpc", "requests", "urllib3", "rich", "google",
                                                       "opentelemetry", "collectors", "heuristics"}}
    assert not {m for m in mods if m.startswith("analyzer.commands")}


def test_analyzing_a_file_imports_no_transport_or_capture(orders_n_plus_one_jsonl) -> None:
    mods = imported("analyze", "--traces", str(orders_n_plus_one_jsonl), "--format", "json")
    assert "analyzer.pipeline" in mods  # it did run
    # rich is for text output only; the ClickHouse reader for --clickhouse only.
    heavy = {m for m in mods if m.split(".")[0] in {"grpc", "requests", "urllib3", "rich"}
             or m.startswith("collectors.clickhouse")
             or m in {"collectors.receiver", "collectors.capture", "collectors.prometheus", "analyzer.demo",
                      "analyzer.commands.capture", "analyzer.commands.demo"}}
    assert not heavy, sorted(heavy)
