"""How long a process's threads waited for a CPU core, measurable: Linux schedstat, exported.

Process CPU time says how long a process ran, not how long its runnable threads waited while
other processes held the cores. On a busy host a CPU-bound request then looks slower than its
CPU explains, as if it were waiting on I/O. Linux counts that wait per thread
(`/proc/<pid>/task/<tid>/schedstat`, second field: ns runnable but not running). One call in
the service exports it:

    from analyzer.instrument import core_wait
    core_wait.install()

as the OpenTelemetry counter `process.cpu.wait.time` (unit s) through the global MeterProvider or
the one passed in, and, when `prometheus_client` is importable, the counter
`process_cpu_wait_seconds_total` in its default registry or the one passed in. The analyzer
reads it (as it reads cAdvisor's `container_cpu_schedstat_runqueue_seconds_total`) to tell the
service's own CPU work from waiting for a core another process holds. Off Linux nothing is
exported.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

OTEL_NAME = "process.cpu.wait.time"
PROMETHEUS_NAME = "process_cpu_wait_seconds"  # exposed with the counter suffix: _total


class CoreWait:
    """A process's total run-queue wait, kept monotonic: a thread that ended keeps what it waited."""

    def __init__(self, pid: int | str = "self") -> None:
        self.pid = pid
        self._last: dict[str, int] = {}  # thread id -> its wait in ns when last read
        self._lock = threading.Lock()

    def seconds(self) -> float | None:
        """Seconds the process's threads have waited for a core; None off Linux."""
        try:
            tasks = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return None
        with self._lock:
            for task in tasks:
                try:
                    with open(f"/proc/{self.pid}/task/{task}/schedstat") as f:
                        self._last[task] = max(self._last.get(task, 0), int(f.read().split()[1]))
                except (OSError, IndexError, ValueError):  # a thread that just ended
                    continue
            return sum(self._last.values()) / 1e9


_installed: CoreWait | None = None


def otel_counter(reader: CoreWait, meter_provider: Any = None) -> None:
    """Export `reader` as `process.cpu.wait.time` through `meter_provider` (the global one if None).
    Unlike `install`, once per provider: a process that sets up several providers (the demo's
    telemetry in tests) gets the counter in each."""
    from opentelemetry import metrics
    from opentelemetry.metrics import Observation

    def observe(_options: Any) -> Iterable[Any]:
        s = reader.seconds()
        return [] if s is None else [Observation(s)]

    meter = (meter_provider or metrics.get_meter_provider()).get_meter("analyzer.instrument.core_wait")
    meter.create_observable_counter(OTEL_NAME, [observe], unit="s",
                                    description="Time the process's threads were runnable but waited for a CPU")


def install(meter_provider: Any = None, prometheus_registry: Any = None, otel: bool = True,
            prometheus: bool = True) -> CoreWait:
    """Export the process's core wait (idempotent: a second call returns the first reader)."""
    global _installed
    if _installed is not None:
        return _installed
    reader = CoreWait()
    if otel:
        otel_counter(reader, meter_provider)
    if prometheus:
        try:
            from prometheus_client import REGISTRY
            from prometheus_client.core import CounterMetricFamily
        except ImportError:
            pass
        else:
            class _Collector:
                def collect(self) -> Iterable[Any]:
                    s = reader.seconds()
                    if s is not None:
                        yield CounterMetricFamily(PROMETHEUS_NAME, "Time the process's threads were runnable but "
                                                                   "waited for a CPU (Linux schedstat)", value=s)

            (prometheus_registry if prometheus_registry is not None else REGISTRY).register(_Collector())
    _installed = reader
    return reader
