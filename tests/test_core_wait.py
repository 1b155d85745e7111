"""analyzer.instrument.core_wait: a process's own wait for a CPU core (Linux schedstat), exported
through the REAL OpenTelemetry SDK and prometheus_client under the names the analyzer reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from collectors.otlp_metrics import CORE_WAIT
from collectors.promql import CATALOG
from analyzer.model.signals import Signal

ROOT = Path(__file__).resolve().parents[1]

# A process that spins for 1.5 s of wall time and reports what both exporters carry.
CHILD = """
import json, time
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from analyzer.instrument import core_wait
reader, registry = InMemoryMetricReader(), CollectorRegistry()
w = core_wait.install(MeterProvider(metric_readers=[reader]), registry)
assert core_wait.install() is w
cpu0, end = time.process_time(), time.time() + 1.5
while time.time() < end:
    pass
ran = time.process_time() - cpu0
points = [p.value for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
          for m in sm.metrics if m.name == "process.cpu.wait.time" for p in m.data.data_points]
text = generate_latest(registry).decode()
line = next(l for l in text.splitlines() if l.startswith("process_cpu_wait_seconds_total "))
print(json.dumps({"ran": ran, "otel": points, "prom": float(line.split()[1])}))
"""


def test_wait_for_a_core_another_process_holds_is_exported():
    """The spinning process shares one core with a busy loop at the same priority: about half of
    its 1.5 s it waits for the core, and both exporters say so; the CPU it ran plus that wait is
    its wall time."""
    core = str(sorted(os.sched_getaffinity(0))[-1])
    hog = subprocess.Popen(["taskset", "-c", core, sys.executable, "-c",
                            "import time\nend = time.time() + 10\nwhile time.time() < end: pass"])
    try:
        out = subprocess.run(["taskset", "-c", core, sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, check=True).stdout
    finally:
        hog.terminate()
        hog.wait(timeout=10)
    got = json.loads(out)
    assert got["otel"] and got["otel"][0] >= 0.3, got
    assert got["prom"] >= 0.3 and got["prom"] >= got["otel"][0], got  # read later, never less
    assert got["ran"] + got["prom"] >= 1.2, got


def test_the_analyzer_reads_both_names():
    spec = next(s for s in CATALOG if s.name == Signal.CPU_RUN_QUEUE_SECONDS_PER_SECOND)
    assert "process_cpu_wait_seconds_total" in {n for v in spec.variants for n in v.needs}
    assert CORE_WAIT == "process.cpu.wait.time"


def test_each_meter_provider_of_one_process_gets_the_counter():
    """The demo's telemetry set up twice in one process (as the report tests record `feed` in
    the test process) exports the wait through both providers, not only the first."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from analyzer.instrument import core_wait

    names = []
    for _ in range(2):
        reader = InMemoryMetricReader()
        core_wait.otel_counter(core_wait.CoreWait(), MeterProvider(metric_readers=[reader]))
        data = reader.get_metrics_data()
        names.append({m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics})
    assert names == [{CORE_WAIT}, {CORE_WAIT}]
