"""The Prometheus collector against a real Prometheus holding N services x D days of runtime metrics.

    python -m benchmarks.bench_prometheus [--services 50] [--days 7] [--interval 60] [--keep DIR]
        [--rebuild] [--no-cache]

What it proves (performance issue target): a D-day report over N services sends a number of
requests that does not grow with N (one `by (pf_service)` query per signal variant, never one
per service), each within Prometheus' 11,000 points per series, and every service's signals
come back with the values that were written.

1. Generate the fleet: service i runs KINDS[i % 5] (Go client_golang, JVM Micrometer, Node
   prom-client, and Go / JVM on Kubernetes with cAdvisor CPU, quota and CFS throttling, mapped
   to the service with a selector), with a daily load cycle and noise, one sample per
   `--interval` seconds. The default 60 s (not a typical 15 s) keeps the first build bounded:
   50 x 7 d is ~600 series x 10,091 samples = 6 M samples, which promtool backfills in well
   under a minute on 2 cores; the query cost (points per series) depends on the step, not on
   the scrape interval.
2. Backfill with promtool, one input file per 2 h block (promtool 2.42 has no
   --max-block-duration and re-reads the whole input for every 2 h block it writes, so one
   7-day file costs 85 passes). The TSDB is cached under KEEP/prom-<N>x<D>d-<interval>s-v<V>,
   so later runs skip generation and backfill; `--rebuild` forces it.
3. Let Prometheus compact the 2 h blocks once, as a Prometheus that has held a week would have
   them (its first compaction runs a minute after start); this is part of the first build and
   cached with it (85 uncompacted blocks answer the same queries slower).
4. Start Prometheus on a free loopback port (retention 10 years, so nothing is dropped), run
   `collect()` over the whole window for all services discovered, all services listed, and the
   first 5 (which cover every kind), and count requests both in the client (`Signals.queries`)
   and on the server (`prometheus_http_requests_total`), and the CPU seconds of both processes
   (the machine may be shared; CPU time is what a run costs). Prometheus is stopped by its PID
   at the end, also on errors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests

from analyzer.model.signals import Signal, Signals
from collectors.prometheus import PromConfig, choose_step, chunks, collect
from tests.prom import PROMTOOL, OpenMetrics, Window, running

REPO = Path(__file__).resolve().parents[1]
VERSION = 1  # of the generated data; part of the cache key, bump when the generator changes
END = 1_793_577_600  # 2026-11-02T00:00:00Z: a fixed window keeps a cached TSDB valid forever
LEAD = 600  # seconds of data before the window, so rate()[5m] is complete at its first step
BLOCK = 7200  # promtool's (fixed) block length in 2.42
DAY = 86400.0
KINDS = ("go", "jvm", "node", "go-k8s", "jvm-k8s")
NAMESPACE = "bench"

_COMMON = {Signal.GC_SECONDS_PER_SECOND, Signal.GC_PAUSE_P50, Signal.GC_CYCLES_PER_SECOND, Signal.CPU_CORES_USED,
           Signal.REQUESTS_PER_SECOND}
EXPECTED: dict[str, set[str]] = {
    "go": _COMMON | {Signal.GC_PAUSE_MAX, Signal.CPU_CORES_AVAILABLE},
    "jvm": _COMMON | {Signal.GC_PAUSE_P99, Signal.GC_PAUSE_MAX, Signal.CPU_CORES_AVAILABLE},
    "node": _COMMON | {Signal.GC_PAUSE_P99, Signal.EVENT_LOOP_LAG},
}
EXPECTED["go-k8s"] = EXPECTED["go"] | {Signal.CPU_THROTTLED_FRACTION}
EXPECTED["jvm-k8s"] = EXPECTED["jvm"] | {Signal.CPU_THROTTLED_FRACTION}
RUNTIME = {"go": "go", "jvm": "jvm", "node": "node", "go-k8s": "go", "jvm-k8s": "jvm"}
CHECKED_MEANS = (Signal.REQUESTS_PER_SECOND, Signal.CPU_CORES_USED, Signal.CPU_CORES_AVAILABLE)
MEAN_TOLERANCE = 0.02  # rate() sampled at the step vs. the exact increase over the window


def service_name(i: int) -> str:
    return f"svc-{i:02d}-{KINDS[i % len(KINDS)]}"


def selector(name: str) -> str:
    """Kubernetes services: app series and cAdvisor's share namespace and container labels."""
    return f'{{namespace="{NAMESPACE}", container="{name}"}}'


# ---- generation


class _Fleet:
    """Writes one service's series into an OpenMetrics and records the value each checked
    signal must have on average over the query window."""

    def __init__(self, om: OpenMetrics, window_start: float) -> None:
        self.om = om
        self.t = np.asarray(om.window.times())
        self.tl = self.t.tolist()
        self.q0 = int(np.searchsorted(self.t, window_start))  # first sample inside the query window

    def _add(self, name: str, labels: dict[str, str], values: np.ndarray, digits: int = 6) -> np.ndarray:
        values = np.round(values, digits)  # short decimal text; promtool input stays small
        self.om.add(name, labels, list(zip(self.tl, values.tolist())))
        return values

    def counter(self, name: str, labels: dict[str, str], per_second: np.ndarray) -> float:
        """A counter whose rate follows `per_second`; returns its exact mean rate over the window."""
        dt = np.diff(self.t, prepend=self.t[0])
        v = self._add(name, labels, np.cumsum(per_second * dt), 3)
        return float((v[-1] - v[self.q0]) / (self.t[-1] - self.t[self.q0]))

    def gauge(self, name: str, labels: dict[str, str], values: np.ndarray | float) -> float:
        v = self._add(name, labels, np.broadcast_to(np.asarray(values, dtype=float), self.t.shape))
        return float(v[self.q0:].mean())

    def histogram(self, name: str, labels: dict[str, str], count_rate: np.ndarray, mean: float,
                  shares: dict[str, float]) -> None:
        """Cumulative buckets: bucket `le` holds `share` of the observations, +Inf all of them."""
        for le, share in (*shares.items(), ("+Inf", 1.0)):
            self.counter(f"{name}_bucket", {**labels, "le": le}, count_rate * share)
        self.counter(f"{name}_sum", labels, count_rate * mean)
        self.counter(f"{name}_count", labels, count_rate)

    def service(self, i: int) -> dict[str, float]:
        name, kind = service_name(i), KINDS[i % len(KINDS)]
        rng = np.random.default_rng(i)
        # Daily cycle (peak at a per-service hour) with 5 % noise: less compressible than a
        # straight line, like real data.
        load = (1 + 0.5 * np.sin(2 * np.pi * self.t / DAY + rng.uniform(0, 2 * np.pi))) \
            * (1 + 0.05 * rng.standard_normal(self.t.size)).clip(0.5)
        req, cpu = rng.uniform(20, 200), rng.uniform(0.2, 1.5)
        L = {"job": name, "instance": f"10.0.{i // 200}.{i % 200 + 10}:8080"}
        if kind.endswith("-k8s"):
            L |= {"namespace": NAMESPACE, "pod": f"{name}-5d8f7b-x{i:02d}", "container": name}
        want: dict[str, float] = {}
        gc_rate = rng.uniform(0.2, 2.0) * load
        if kind.startswith("go"):
            want[Signal.REQUESTS_PER_SECOND] = self.counter("http_requests_total", {**L, "code": "200"}, req * load)
            want[Signal.CPU_CORES_USED] = self.counter("process_cpu_seconds_total", L, cpu * load)
            want[Signal.CPU_CORES_AVAILABLE] = self.gauge("go_sched_gomaxprocs_threads", L, rng.choice([2, 4, 8]))
            self.counter("go_gc_duration_seconds_count", L, gc_rate)
            self.counter("go_gc_duration_seconds_sum", L, gc_rate * 0.0004)
            for q, base in (("0", 5e-5), ("0.25", 2e-4), ("0.5", 3e-4), ("0.75", 5e-4), ("1", 3e-3)):
                self.gauge("go_gc_duration_seconds", {**L, "quantile": q}, base * load)
        elif kind.startswith("jvm"):
            want[Signal.REQUESTS_PER_SECOND] = self.counter(
                "http_server_requests_seconds_count",
                {**L, "method": "GET", "uri": "/api/orders", "status": "200", "outcome": "SUCCESS"}, req * load)
            cores = float(rng.choice([4, 8]))
            usage = self.gauge("process_cpu_usage", L, cpu * load / cores)
            want[Signal.CPU_CORES_USED] = usage * cores
            want[Signal.CPU_CORES_AVAILABLE] = self.gauge("system_cpu_count", L, cores)
            G = {**L, "gc": "G1 Young Generation", "action": "end of minor GC", "cause": "G1 Evacuation Pause"}
            self.histogram("jvm_gc_pause_seconds", G, gc_rate, 0.012, {"0.005": 0.3, "0.05": 0.9, "0.5": 1.0})
            self.gauge("jvm_gc_pause_seconds_max", G, 0.04 * load)
        else:  # node
            want[Signal.REQUESTS_PER_SECOND] = self.counter(
                "http_request_duration_seconds_count", {**L, "method": "GET", "route": "/", "status_code": "200"},
                req * load)
            want[Signal.CPU_CORES_USED] = self.counter("process_cpu_seconds_total", L, cpu * load)
            self.histogram("nodejs_gc_duration_seconds", {**L, "kind": "minor"}, gc_rate * 5, 0.002,
                           {"0.001": 0.6, "0.01": 0.95, "0.1": 1.0})
            self.gauge("nodejs_eventloop_lag_p99_seconds", L, 0.02 * load)
            self.gauge("nodejs_eventloop_lag_seconds", L, 0.005 * load)
        if kind.endswith("-k8s"):
            K = {"job": "kubelet", "namespace": NAMESPACE, "pod": L["pod"], "container": name}
            limit = float(math.ceil(cpu * 1.5 * 2) / 2)
            self.counter("container_cpu_usage_seconds_total", {**K, "cpu": "total"}, cpu * load * 1.03)
            want[Signal.CPU_CORES_AVAILABLE] = self.gauge("container_spec_cpu_quota", K, limit * 100_000) / 100_000
            self.gauge("container_spec_cpu_period", K, 100_000)
            self.counter("container_cpu_cfs_periods_total", K, np.full(self.t.size, 10.0))
            self.counter("container_cpu_cfs_throttled_periods_total", K, 10.0 * (0.3 * load - 0.25).clip(0))
        return want


def generate(n_services: int, days: float, interval: float) -> tuple[OpenMetrics, dict[str, dict[str, float]]]:
    om = OpenMetrics(Window(END - days * DAY - LEAD, END, interval))
    fleet = _Fleet(om, END - days * DAY)
    return om, {service_name(i): fleet.service(i) for i in range(n_services)}


# ---- backfill and cache


def backfill(om: OpenMetrics, data_dir: Path, workers: int = 2) -> int:
    """promtool once per 2 h block, `workers` at a time; returns the number of blocks.

    Every series shares the same timestamps, so one index range cuts all of them."""
    t = np.asarray(om.window.times())
    first = math.floor(t[0] / BLOCK) * BLOCK
    edges = np.searchsorted(t, np.arange(first, t[-1] + BLOCK, BLOCK))
    parts = [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    work = data_dir.parent / f"{data_dir.name}.parts"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    def one(k: int) -> None:
        a, b = parts[k]
        part = OpenMetrics(om.window, {key: pts[a:b] for key, pts in om.series.items()})
        src, out = work / f"{k:04d}.om", work / f"{k:04d}"
        src.write_text(part.text(), encoding="utf-8")
        proc = subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "-q", str(src), str(out)],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"promtool failed on block {k}: {proc.stderr.strip() or proc.stdout.strip()}")
        src.unlink()
        for block in out.iterdir():
            block.rename(data_dir / block.name)

    data_dir.mkdir(parents=True)
    with ThreadPoolExecutor(workers) as pool:  # promtool is the CPU cost; Python only formats text
        list(pool.map(one, range(len(parts))))
    shutil.rmtree(work)
    return len(parts)


@dataclass
class Dataset:
    data_dir: Path
    start: float  # the query window, without the warm-up lead
    end: float
    services: list[str]
    expected: dict[str, dict[str, float]]  # service -> signal -> mean over the window
    series: int
    samples: int
    generate_s: float | None  # None when read from the cache
    backfill_s: float | None
    blocks: int
    compacted: bool = False  # Prometheus has run its first compaction on data_dir


def mark_compacted(ds: Dataset) -> None:
    meta_path = ds.data_dir.parent / "meta.json"
    meta_path.write_text(json.dumps(json.loads(meta_path.read_text()) | {"compacted": True}, indent=1) + "\n")


def dataset(n_services: int, days: float, interval: float, root: Path, rebuild: bool = False) -> Dataset:
    """The cached TSDB for these parameters, built first if missing or incomplete."""
    base = root / f"prom-{n_services}x{days:g}d-{interval:g}s-v{VERSION}"
    data_dir, meta_path = base / "data", base / "meta.json"
    if rebuild or not meta_path.exists():  # meta.json is written last: without it the build did not finish
        shutil.rmtree(base, ignore_errors=True)
        t0 = time.perf_counter()
        om, expected = generate(n_services, days, interval)
        t1 = time.perf_counter()
        blocks = backfill(om, data_dir)
        meta = {"start": END - days * DAY, "end": END, "services": sorted(expected), "expected": expected,
                "series": len(om.series), "samples": sum(len(p) for p in om.series.values()),
                "generate_s": t1 - t0, "backfill_s": time.perf_counter() - t1, "blocks": blocks, "compacted": False}
        meta_path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        return Dataset(data_dir, **meta)
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return Dataset(data_dir, **(meta | {"generate_s": None, "backfill_s": None}))


def _metric(url: str, name: str, match: str = "") -> float:
    """Sum of a metric's samples on the server's own /metrics (lines containing `match`)."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)
               if match in m.group(0))


def wait_compacted(url: str, data_dir: Path, timeout: float = 240.0) -> float:
    """Block until Prometheus' first compaction has run to the end; returns the seconds waited."""
    t0 = time.perf_counter()
    last, since = -1.0, time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if _metric(url, "prometheus_tsdb_compactions_triggered_total") >= 1:
            done = _metric(url, "prometheus_tsdb_compactions_total")
            busy = any(p.name.endswith((".tmp-for-creation", ".tmp")) for p in data_dir.iterdir())
            if done != last or busy:
                last, since = done, time.perf_counter()
            elif time.perf_counter() - since > 3:  # none for 3 s (they run back to back): the planner is done
                return time.perf_counter() - t0
        time.sleep(0.5)
    raise RuntimeError(f"Prometheus did not finish compacting {data_dir} in {timeout:g} s")


# ---- measurement


def server_queries(url: str) -> tuple[int, float]:
    """(range queries answered, bytes sent for them), from the server's own /metrics: independent
    of our count. The bytes matter: the server's time follows the points it has to encode."""
    handler = 'handler="/api/v1/query_range"'
    return (int(_metric(url, "prometheus_http_requests_total", handler)),
            _metric(url, "prometheus_http_response_size_bytes_sum", handler))


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a process (utime and stime of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def max_points(start: float, end: float, config: PromConfig) -> int:
    """The most points per series any request asks for: the signal queries' chunks (same grid as
    collect()) and the discovery query."""
    step = choose_step(start, end, config)
    t0, t1 = math.ceil(start / step) * step, math.floor(end / step) * step
    signal = max(round((ce - cs) / step) + 1 for cs, ce in chunks(t0, t1, step, config.max_points))
    return max(signal, config.discovery_points + 1)


@dataclass
class Run:
    label: str
    services: int
    requests: int  # Signals.queries
    server_requests: int  # counted by Prometheus
    response_bytes: float  # sent by Prometheus for those requests
    max_points: int
    longest_series: int
    step: float
    seconds: float
    client_cpu: float  # this process, i.e. collect()
    server_cpu: float  # Prometheus
    complete: int  # services with every expected signal and the right values
    worst_error: float  # largest relative error of a checked mean (requests/s, CPU used and available)
    problems: list[str]

    def line(self, days: float) -> str:
        return (f"{self.label:<20} {self.services:>3} services {days:g} d  requests {self.requests:>3} "
                f"(server {self.server_requests:>3}, {self.response_bytes / 1e6:5.1f} MB on the wire)  "
                f"max points/series {self.max_points:>6,} "
                f"(step {self.step:g} s, longest {self.longest_series:,})  {self.seconds:6.2f} s  "
                f"cpu client {self.client_cpu:5.2f} s server {self.server_cpu:5.2f} s  "
                f"signals ok {self.complete}/{self.services} (means within {self.worst_error:.2%})")


def check(signals: Signals, ds: Dataset, services: list[str]) -> tuple[int, list[str], int, float]:
    """(services complete, problems, longest series, worst relative error of a checked mean): each
    expected signal present, and the means that were written come back."""
    problems: list[str] = []
    longest, worst = 0, 0.0
    for svc in services:
        kind = KINDS[int(svc.split("-")[1]) % len(KINDS)]
        ss = signals.services.get(svc)
        if ss is None:
            problems.append(f"{svc}: not returned")
            continue
        bad = [f"runtime {ss.runtime} != {RUNTIME[kind]}"] if ss.runtime != RUNTIME[kind] else []
        bad += [f"{name} missing ({ss.missing[name].reason if name in ss.missing else 'absent'})"
                for name in sorted(EXPECTED[kind]) if not ss.has(name)]
        for name, want in ds.expected[svc].items():
            if ss.has(name):
                got = ss.series[name].mean()
                worst = max(worst, abs(got - want) / abs(want))
                if abs(got - want) > MEAN_TOLERANCE * abs(want):
                    bad.append(f"{name} mean {got:.4g} != {want:.4g}")
        longest = max([longest, *(len(s.t) for s in ss.series.values())])
        problems += [f"{svc}: {b}" for b in bad]
    failed = {p.split(":")[0] for p in problems}
    return len(services) - len(failed), problems, longest, worst


def measure(url: str, pid: int, ds: Dataset, label: str, services: list[str] | None, config: PromConfig) -> Run:
    (sent0, bytes0), server0, client0 = server_queries(url), cpu_seconds(pid), time.process_time()
    t0 = time.perf_counter()
    signals = collect(url, services, ds.start, ds.end, config)
    seconds = time.perf_counter() - t0
    client_cpu, server_cpu = time.process_time() - client0, cpu_seconds(pid) - server0
    expect = services if services is not None else ds.services
    problems = [f"failure: {m.signal}: {m.reason}" for m in signals.failures]
    if services is None and sorted(signals.services) != ds.services:  # discovery must find exactly the fleet
        diff = sorted(set(signals.services) ^ set(ds.services))
        problems.append(f"discovered services differ from the fleet: {diff}")
    complete, bad, longest, worst = check(signals, ds, expect)
    sent, sent_bytes = server_queries(url)
    return Run(label, len(expect), signals.queries, sent - sent0, sent_bytes - bytes0,
               max_points(ds.start, ds.end, config), longest, choose_step(ds.start, ds.end, config), seconds,
               client_cpu, server_cpu, complete, worst, problems + bad)


# ---- cost follows the services asked (issue 17)


def _recording(recorded: list[tuple[str, dict[str, str], int]]):  # noqa: ANN202 - a context manager
    """Record every request collect() sends (path, form, decoded response bytes) for a replay."""
    import contextlib

    from collectors.http_client import HttpClient

    @contextlib.contextmanager
    def patch():  # noqa: ANN202
        original = HttpClient.request

        def request(self, method, path, form=None, params=None):  # noqa: ANN001, ANN202
            resp = original(self, method, path, form, params)
            recorded.append((path, dict(form or {}), len(resp.body)))
            return resp

        HttpClient.request = request  # type: ignore[method-assign]
        try:
            yield
        finally:
            HttpClient.request = original  # type: ignore[method-assign]

    return patch()


def bare_floor(url: str, recorded: list[tuple[str, dict[str, str], int]]) -> float:
    """CPU seconds of plain `requests` + `json.loads` for the same requests (the floor)."""
    session = requests.Session()
    t = time.process_time()
    for path, form, _ in recorded:
        json.loads(session.post(url + path, data=form, timeout=120).content)
    return time.process_time() - t


def scale(sizes: tuple[int, int], days: float, interval: float, ask: int, repeats: int, root: Path) -> bool:
    """The same `ask` services from a small and a large Prometheus (target: large within 1.3x of
    small, best of `repeats` interleaved runs), and the tool's CPU per response byte against
    bare requests + json.loads of the same responses (target: within 1.5x), all services asked."""
    import contextlib

    small_n, big_n = sizes
    dss = {n: dataset(n, days, interval, root) for n in sizes}
    for n, ds in dss.items():
        build = "cached" if ds.generate_s is None else f"built in {ds.generate_s + ds.backfill_s:.0f} s"
        print(f"{'tsdb':<20} {n:>3} services {days:g} d  {ds.series:,} series {ds.samples / 1e6:.2f} M samples "
              f"({build}; uncompacted 2 h blocks, the same for both)", flush=True)
    with contextlib.ExitStack() as stack:
        servers = {n: stack.enter_context(running(ds.data_dir)) for n, ds in dss.items()}
        best: dict[int, float] = {}
        cpu: dict[int, float] = {}
        for _ in range(repeats):
            for n, ds in dss.items():
                asked = ds.services[:ask]
                config = PromConfig(selectors={s: selector(s) for s in asked if s.endswith("-k8s")})
                t0, c0 = time.perf_counter(), time.process_time()
                signals = collect(servers[n].url, asked, ds.start, ds.end, config)
                wall, used = time.perf_counter() - t0, time.process_time() - c0
                if signals.failures or any(not signals.services[s].series for s in asked):
                    print(f"  PROBLEM {n} services: {[f.reason for f in signals.failures][:3]}", flush=True)
                best[n], cpu[n] = min(best.get(n, math.inf), wall), min(cpu.get(n, math.inf), used)
        ratio = best[big_n] / best[small_n]
        print(f"{ask} services asked     from {small_n}: {best[small_n]:.2f} s (cpu {cpu[small_n]:.2f})  from {big_n}: "
              f"{best[big_n]:.2f} s (cpu {cpu[big_n]:.2f})  x{ratio:.2f} (target <= 1.3, best of {repeats})",
              flush=True)

        # Every service named by its labels (the Kubernetes ones' selectors are one `or` part each,
        # server work that grows with their number; not what this figure is about).
        ds, url = dss[big_n], servers[big_n].url
        by_label = [s for s in ds.services if not s.endswith("-k8s")]
        recorded: list[tuple[str, dict[str, str], int]] = []
        with _recording(recorded):
            c0 = time.process_time()
            collect(url, by_label, ds.start, ds.end, PromConfig())
            tool = time.process_time() - c0
        floor = bare_floor(url, recorded)
        size = sum(b for *_, b in recorded)
        per_byte = tool / floor
        print(f"{len(by_label)} of {big_n} services  {len(recorded)} requests, {size / 1e6:.1f} MB of JSON: tool {tool:.2f} CPU s "
              f"({tool / size * 1e9:.1f} ns/B), bare requests + json.loads {floor:.2f} s ({floor / size * 1e9:.1f} "
              f"ns/B): x{per_byte:.2f} (target <= 1.5)", flush=True)
    return ratio <= 1.3 and per_byte <= 1.5


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_prometheus", description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--interval", type=float, default=60.0, help="seconds between samples (default 60)")
    ap.add_argument("--keep", type=Path, default=REPO / ".bench", help="cache directory for built TSDBs")
    ap.add_argument("--rebuild", action="store_true", help="build the TSDB even if cached")
    ap.add_argument("--no-cache", action="store_true", help="build in a temporary directory, delete it after")
    ap.add_argument("--small", type=int, default=5, help="size of the small service set (default 5)")
    ap.add_argument("--scale", metavar="SMALL,BIG", help="instead: the same --ask services from a SMALL- and a "
                    "BIG-service Prometheus over --scale-days, and CPU per response byte against the bare floor "
                    "(issue 17: 20,500)")
    ap.add_argument("--ask", type=int, default=11, help="with --scale: services asked (default 11)")
    ap.add_argument("--scale-days", type=float, default=1.0, help="with --scale: days of data (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="with --scale: interleaved runs, best taken (default 3)")
    args = ap.parse_args(argv)
    if args.scale:
        small_n, big_n = (int(x) for x in args.scale.split(","))
        ok = scale((small_n, big_n), args.scale_days, args.interval, args.ask, args.repeats, args.keep)
        if not ok:
            print("FAILED", file=sys.stderr)
        return 0 if ok else 1
    if args.services < args.small or args.small < len(KINDS):
        ap.error(f"need --services >= --small >= {len(KINDS)} so the small set covers every kind")

    wall = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="pf-bench-prom-") if args.no_cache else None
    try:
        ds = dataset(args.services, args.days, args.interval, Path(tmp.name) if tmp else args.keep,
                     rebuild=args.rebuild)
        build = ("cached" if ds.generate_s is None else
                 f"generate {ds.generate_s:.1f} s + promtool {ds.backfill_s:.1f} s ({ds.blocks} blocks of 2 h)")
        print(f"{'tsdb':<20} {len(ds.services):>3} services {args.days:g} d  {ds.series:,} series "
              f"{ds.samples / 1e6:.2f} M samples every {args.interval:g} s  {build}", flush=True)
        config = PromConfig(selectors={s: selector(s) for s in ds.services if s.endswith("-k8s")})
        t_start = time.perf_counter()
        with running(ds.data_dir) as server:  # stops Prometheus by PID on the way out, errors included
            print(f"{'prometheus ready':<20} {time.perf_counter() - t_start:.1f} s  {server.url}  pid {server.pid}",
                  flush=True)
            if not ds.compacted:  # fresh build: measure on compacted blocks, and cache them so
                print(f"{'first compaction':<20} {wait_compacted(server.url, ds.data_dir):.1f} s "
                      f"(Prometheus starts it 60 s after start; once per build)", flush=True)
                mark_compacted(ds)
            runs = []
            for label, services in (("collect, discovered", None), ("collect, listed", ds.services),
                                    ("collect, listed", ds.services[:args.small])):
                runs.append(measure(server.url, server.pid, ds, label, services, config))
                print(runs[-1].line(args.days), flush=True)
                for p in runs[-1].problems[:10]:
                    print(f"  PROBLEM {p}", flush=True)
        big, small = runs[1], runs[2]
        ratio = big.requests / small.requests
        print(f"requests {big.services} vs {small.services} services: x{ratio:.2f} "
              f"({big.requests} / {small.requests}; must be 1.00)", flush=True)
        print(f"{'total':<20} {time.perf_counter() - wall:.1f} s", flush=True)
        ok = ratio == 1.0 and len({r.requests for r in runs}) == 1 and all(
            not r.problems and r.max_points <= 11_000 and r.requests == r.server_requests for r in runs)
        if not ok:
            print("FAILED", file=sys.stderr)
        return 0 if ok else 1
    finally:
        if tmp:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
