"""`analyze` and `report` fix glibc's malloc thresholds (analyzer/allocator.py): mid-sized
temporaries are then served from pages the process already has instead of being faulted in again
after every free, and a report does not change with it, even when every allocation reuses memory
full of old bytes (an array read before it is written would show it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.shared_data import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
NEZHA_HOUR = SHARED_DATA / "nezha" / "construct_data" / "2022-08-23" / "trace" / "17_00_trace.csv"


def child(code: str, fixed: bool) -> str:
    env = {**os.environ, "PROFILE_FIRST_MALLOC_DEFAULTS": "0" if fixed else "1"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


# What the reader does per chunk: a temporary of 400 KB made from another, both freed.
TEMPORARIES = """
import resource
import numpy as np
from analyzer.allocator import fix_malloc_thresholds
took = fix_malloc_thresholds()
a = np.arange(50_000, dtype=np.int64)
np.minimum(a + 8, 10**9)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(300):
    np.minimum(a + 8, 10**9)
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_temporaries_are_not_faulted_in_again_once_thresholds_are_fixed() -> None:
    took, faults = child(TEMPORARIES, fixed=True).split()
    assert took == "True" and int(faults) < 1_000  # pages reused from the heap
    took, faults = child(TEMPORARIES, fixed=False).split()
    # glibc's defaults: the heap top is handed back and faulted in again, ~100 pages per call
    assert took == "False" and int(faults) > 10_000


REPORT = f"""
import numpy as np
from analyzer.allocator import fix_malloc_thresholds
from analyzer.config import Config
from analyzer.pipeline import Inputs, analyze
from analyzer.renderers.json import to_json
from collectors.otlp_traces import load_traces
if fix_malloc_thresholds():
    # Freed memory full of 0xA5 bytes: the heap then serves it to the analysis's arrays.
    junk = [np.full(n, 0xA5, dtype=np.uint8) for n in [1 << k for k in range(12, 25)] * 4]
    del junk
loaded = load_traces([{str(NEZHA_HOUR)!r}])
print(to_json(analyze(Inputs(table=loaded.table, sources=loaded.sources, repairs=loaded.repairs), Config())))
"""


def test_the_report_is_the_same_with_fixed_thresholds() -> None:
    fixed, default = (json.loads(child(REPORT, fixed)) for fixed in (True, False))
    assert fixed["input"]["spans"] > 10_000 and fixed["services"]  # it analyzed something
    fixed.pop("generated_at"), default.pop("generated_at")
    assert fixed == default
