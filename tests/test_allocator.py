"""`analyze` keeps the memory it frees (analyzer/allocator.py): the setting takes effect on glibc,
and a report does not change with it, even when every allocation reuses memory full of old bytes
(an array read before it is written would show it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.shared_data import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
NEZHA_HOUR = SHARED_DATA / "nezha" / "construct_data" / "2022-08-23" / "trace" / "17_00_trace.csv"


def child(code: str, keep: bool) -> str:
    env = {**os.environ, "PROFILE_FIRST_KEEP_FREED_MEMORY": "1" if keep else "0"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


FREED = """
import numpy as np
from analyzer.allocator import keep_freed_memory
def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) // 1024
took = keep_freed_memory()
before = rss()
a = np.ones(256 << 20, dtype=np.uint8)
del a
print(took, rss() - before)
"""


def test_a_freed_large_array_stays_with_the_process_only_when_kept() -> None:
    took, mib = child(FREED, keep=True).split()
    assert took == "True" and int(mib) >= 250  # freed into the heap, for the next arrays
    took, mib = child(FREED, keep=False).split()
    assert took == "False" and int(mib) < 50  # glibc's default: a large array is unmapped on free


REPORT = f"""
import numpy as np
from analyzer.allocator import keep_freed_memory
from analyzer.config import Config
from analyzer.pipeline import Inputs, analyze
from analyzer.renderers.json import to_json
from collectors.otlp_traces import load_traces
if keep_freed_memory():
    # Freed memory full of 0xA5 bytes: the heap then serves it to the analysis's arrays.
    junk = [np.full(n, 0xA5, dtype=np.uint8) for n in (128 << 20, *[1 << k for k in range(12, 26)] * 4)]
    del junk
loaded = load_traces([{str(NEZHA_HOUR)!r}])
print(to_json(analyze(Inputs(table=loaded.table, sources=loaded.sources, repairs=loaded.repairs), Config())))
"""


def test_the_report_is_the_same_with_freed_memory_reused() -> None:
    kept, default = (json.loads(child(REPORT, keep)) for keep in (True, False))
    assert kept["input"]["spans"] > 10_000 and kept["services"]  # it analyzed something
    kept.pop("generated_at"), default.pop("generated_at")
    assert kept == default
