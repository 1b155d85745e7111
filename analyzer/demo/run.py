"""The demo orchestrator: receiver, service processes, phased load, analysis, report.

Why phases: the machine may have two cores. `render` must be CPU-bound by its own work and
`feed` must pause for its own GC, not wait for a core another demo process holds, so each runs
its load alone; the I/O-bound services (whose causes are database, network and cache time)
share the first phase. The analysis relates runtime metrics to each hot spot's own time
window, so a service idle in the other phases is not diluted by them.

Every child is started by this process in its own session (Ctrl-C reaches only the demo,
which then stops them), stopped by PID with SIGTERM (they flush their telemetry) and killed
if they do not exit; they also exit by themselves if the demo dies.
"""

from __future__ import annotations

import http.client
import os
import random
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

import analyzer
from analyzer.config import Config
from analyzer.demo import data
from analyzer.output import write_output
from analyzer.pipeline import Inputs, analyze
from analyzer.renderers import format_for_path, render
from collectors.capture import Capture, CaptureStats
from collectors.otlp_metrics import signals_from_file
from collectors.otlp_traces import load_traces
from collectors.profiles import LoadedProfiles, load_profiles
from collectors.receiver import OtlpReceiver, ReceiverConfig

DEFAULT_DURATION_S = 45.0
MIN_DURATION_S = 10.0
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0  # a stopping service exports what it still buffers first
REQUEST_TIMEOUT_S = 10.0
MAX_REQUESTS_PER_SERVICE = 5_000
#: Share of runnable time spent waiting for a core above which a service's phase is called
#: contended (see LoadStats.core_wait): PF-CPU001 needs CPU to cover half the self time.
CONTENDED = 0.35

#: The gateway's downstreams: (service.name, route, path the gateway calls, sleep range in ms).
DOWNSTREAMS = (
    ("inventory", "/stock/{sku}", "/stock/SKU-00042", "20,35"),
    ("pricing", "/quote", "/quote?cart=7", "30,50"),
    ("shipping", "/rates", "/rates?zip=10115", "25,40"),
)


@dataclass(frozen=True)
class Phase:
    title: str
    share: float  # of the load duration
    services: tuple[str, ...]


PHASES = (
    Phase("orders · gateway · profile", 0.40, ("orders", "gateway", "profile")),
    Phase("render", 0.30, ("render",)),
    Phase("feed", 0.30, ("feed",)),
)

#: Request paths the load generator sends to each service.
PATHS: dict[str, Callable[[random.Random], str]] = {
    "orders": lambda r: f"/orders?after={r.randrange(data.ORDERS - data.ORDERS_PER_PAGE)}",
    "gateway": lambda r: "/checkout",
    "profile": lambda r: f"/profile/{r.randrange(data.CUSTOMERS)}",
    "render": lambda r: f"/render/{r.randrange(1000)}",
    "feed": lambda r: f"/feed/{r.randrange(100_000)}",
}

#: What the demo is built to show: service -> (rust_rewrite, cause).
EXPECTED = {
    "orders": ("not_recommended", "database"),
    "gateway": ("not_recommended", "network"),
    "profile": ("not_recommended", "caching"),
    "render": ("recommended", "cpu_bound"),
    "feed": ("recommended", "gc_pause"),
}


class DemoError(RuntimeError):
    """The demo system could not be run (a service did not start, nothing arrived)."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[str]
    log: Path
    port: int = 0


@dataclass
class LoadStats:
    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    phase_s: dict[str, float] = field(default_factory=dict)
    # Share of the time each service's threads were runnable that they spent waiting for a core
    # (Linux schedstat) during its phase: other work on the host, which lowers the CPU measured
    # per request of a CPU-bound service by about that share.
    core_wait: dict[str, float] = field(default_factory=dict)


@dataclass
class DemoResult:
    report: dict
    load: LoadStats
    spans: int
    points: int
    load_s: float
    total_s: float
    capture_paths: list[Path] = field(default_factory=list)  # traces (and metrics), kept only when asked for
    pids: list[int] = field(default_factory=list)  # every process the demo started (all stopped by now)


# -- processes ---------------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    # A user's OTEL_* settings (a sampler, another endpoint) must not apply to the demo.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    root = str(Path(analyzer.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _spawn(name: str, module: str, args: list[str], workdir: Path) -> Child:
    log = workdir / f"{name}.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
            text=True, env=_child_env(), start_new_session=True,
        )
    return Child(name, proc, log)


def _wait_ready(children: list[Child], timeout_s: float) -> None:
    """Read each child's `READY <port>` line; raise with its log when one fails or is slow."""
    deadline = time.monotonic() + timeout_s
    for c in children:
        assert c.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(c.proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DemoError(f"demo service {c.name} did not start within {timeout_s:.0f} s{_log_tail(c)}")
                if sel.select(min(left, 0.5)):
                    line = c.proc.stdout.readline()
                    if line.startswith("READY "):
                        c.port = int(line.split()[1])
                        break
                    if not line:
                        c.proc.wait(5)
                        raise DemoError(f"demo service {c.name} exited with {c.proc.returncode}{_log_tail(c)}")


def _log_tail(c: Child, lines: int = 15) -> str:
    try:
        text = c.log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return (":\n  " + "\n  ".join(text)) if text else ""


def _stop(children: list[Child], timeout_s: float) -> None:
    """SIGTERM each child still running (by its PID), wait, then SIGKILL the ones left."""
    for c in children:
        if c.proc.poll() is None:
            c.proc.terminate()
    deadline = time.monotonic() + timeout_s
    for c in children:
        try:
            c.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.proc.kill()
            c.proc.wait(5)
        if c.proc.stdout is not None:
            c.proc.stdout.close()


@contextmanager
def _no_interrupts() -> Iterator[None]:
    """Cleanup must finish even if Ctrl-C is pressed again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# -- load ----------------------------------------------------------------------------------------


def _drive(service: str, port: int, deadline: float, stats: LoadStats, seed: int) -> None:
    """Closed-loop load, one request at a time over a keep-alive connection, until `deadline`."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    ok = errors = 0
    try:
        while time.monotonic() < deadline and ok + errors < MAX_REQUESTS_PER_SERVICE:
            try:
                conn.request("GET", PATHS[service](rng))
                resp = conn.getresponse()
                resp.read()
                ok += resp.status == 200
                errors += resp.status != 200
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()  # reconnects on the next request
                time.sleep(0.1)
    finally:
        conn.close()
        stats.requests[service] = stats.requests.get(service, 0) + ok
        stats.errors[service] = stats.errors.get(service, 0) + errors


def _sched_ns(pid: int) -> tuple[int, int] | None:
    """(ns on a core, ns runnable but waiting for one) of the process's threads, from
    /proc/PID/task/*/schedstat; None off Linux."""
    run = wait = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:  # not Linux, or the process is gone
        return None
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                fields = f.read().split()
            run, wait = run + int(fields[0]), wait + int(fields[1])
        except (OSError, IndexError, ValueError):  # a thread that just ended: the others still count
            continue
    return run, wait


def _run_phase(phase: Phase, seconds: float, children: dict[str, Child], stats: LoadStats,
               tick: Callable[[], None]) -> None:
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=_drive, args=(s, children[s].port, deadline, stats, i), name=f"load-{s}",
                                daemon=True)
               for i, s in enumerate(phase.services)]
    t0 = time.monotonic()
    sched = {s: _sched_ns(children[s].proc.pid) for s in phase.services}
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(0.25)
        tick()
    wall = time.monotonic() - t0
    stats.phase_s[phase.title] = wall
    for s, before in sched.items():
        after = _sched_ns(children[s].proc.pid)
        if before is not None and after is not None:
            ran, waited = after[0] - before[0], after[1] - before[1]
            if ran + waited > 0:
                stats.core_wait[s] = waited / (ran + waited)


# -- progress ------------------------------------------------------------------------------------


class _Progress:
    """A rich progress bar on stderr when it is a terminal, plain phase lines otherwise."""

    def __init__(self, console: Console, total_s: float, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled
        self.live = enabled and console.is_terminal
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(),
                             TextColumn("{task.fields[info]}"), console=console, transient=True) if self.live else None
        self._task = self._bar.add_task("starting", total=total_s, info="") if self._bar else None
        self._t0 = 0.0
        self._done = 0.0

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def note(self, text: str) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=text)
        elif self.enabled:
            self.console.print(f"demo: {text}", highlight=False)

    def phase(self, title: str) -> None:
        self._t0 = time.monotonic()
        self.note(title)

    def update(self, stats: CaptureStats) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=self._done + time.monotonic() - self._t0,
                             info=f"spans {stats.spans:,} · metric points {stats.points:,}")

    def end_phase(self) -> None:
        self._done += time.monotonic() - self._t0


# -- the demo ------------------------------------------------------------------------------------


class _System:
    """The demo's child processes, recorded as soon as each is spawned so cleanup finds them all."""

    def __init__(self, work: Path, endpoint: str, db: Path, life_s: float) -> None:
        self.work, self.endpoint, self.db = work, endpoint, db
        self.life = ["--max-seconds", str(int(life_s))]
        self.render_profile = work / "render.speedscope.json"  # the CPU-bound service profiles itself
        self.children: list[Child] = []

    def _spawn(self, name: str, module: str, args: list[str]) -> Child:
        child = _spawn(name, module, [*args, *self.life], self.work)
        self.children.append(child)
        return child

    def start(self) -> dict[str, Child]:
        """Start the cache and the downstreams, then the five services; return them by name."""
        cache = self._spawn("cache", "analyzer.demo.cache", [])
        downs = [self._spawn(name, "analyzer.demo.services", ["downstream", "--name", name, "--route", route,
                                                                "--latency-ms", ms, "--seed", str(i),
                                                                "--endpoint", self.endpoint])
                 for i, (name, route, _, ms) in enumerate(DOWNSTREAMS)]
        _wait_ready([cache, *downs], READY_TIMEOUT_S)
        common = ["--endpoint", self.endpoint, "--db", str(self.db)]
        calls = [a for d, (_, _, path, _) in zip(downs, DOWNSTREAMS, strict=True)
                 for a in ("--downstream", f"http://127.0.0.1:{d.port}{path}")]
        services = [
            self._spawn("orders", "analyzer.demo.services", ["orders", *common]),
            self._spawn("profile", "analyzer.demo.services",
                        ["profile", "--cache", f"127.0.0.1:{cache.port}", *common]),
            self._spawn("gateway", "analyzer.demo.services", ["gateway", *calls, *common]),
            self._spawn("render", "analyzer.demo.services", ["render", "--profile-out", str(self.render_profile),
                                                             *common]),
            self._spawn("feed", "analyzer.demo.services", ["feed", *common]),
        ]
        _wait_ready(services, READY_TIMEOUT_S)
        return {c.name: c for c in services}

    def stop(self, keep: Collection[str] = ()) -> None:
        with _no_interrupts():
            _stop([c for c in self.children if c.name not in keep], STOP_TIMEOUT_S)


def run_demo_detailed(duration_s: float = DEFAULT_DURATION_S, progress: bool = True,
                      save_capture: str | Path | None = None, console: Console | None = None) -> DemoResult:
    """Run the demo system for `duration_s` seconds of load and analyze what it exported."""
    if duration_s < MIN_DURATION_S:
        raise ValueError(f"duration must be at least {MIN_DURATION_S:.0f} s (each phase needs a few metric intervals)")
    console = console or Console(stderr=True)
    t_start = time.monotonic()
    stats = LoadStats()
    with tempfile.TemporaryDirectory(prefix="profile-first-demo-") as tmp, \
            _Progress(console, duration_s, progress) as bar:
        work = Path(tmp)
        bar.note("creating the SQLite database")
        db = data.make_db(work / "shop.db")
        capture = Capture(Path(save_capture) if save_capture else work / "capture.otlp.jsonl").start()
        receiver: OtlpReceiver | None = None
        system: _System | None = None
        closed = False
        try:
            receiver = OtlpReceiver(capture, ReceiverConfig(host="127.0.0.1", http_port=0, grpc_port=None)).start()
            system = _System(work, receiver.http_endpoint, db, life_s=duration_s + 240)
            bar.note("starting the demo services")
            services = system.start()

            t_load = time.monotonic()
            for i, phase in enumerate(PHASES, 1):
                bar.phase(f"load {i}/{len(PHASES)}: {phase.title}")
                _run_phase(phase, duration_s * phase.share, services, stats, lambda: bar.update(capture.stats()))
                bar.end_phase()
                if i < len(PHASES):
                    # Stop what no later phase needs, so it neither competes for a core with the
                    # next phase's service nor keeps exporting idle metrics.
                    bar.note("stopping them")
                    system.stop(keep={s for p in PHASES[i:] for s in p.services})
            load_s = time.monotonic() - t_load

            bar.note("flushing telemetry")
            system.stop()
            failed = [c.name for c in system.children
                      if c.name != "cache" and c.proc.returncode not in (0, -signal.SIGTERM)]
            if failed:
                console.print(f"demo: warning: {', '.join(failed)} did not stop cleanly; their last telemetry "
                              "may be missing", highlight=False)
            with _no_interrupts():
                receiver.stop()
                receiver = None
            result = capture.close()
            closed = True
        finally:
            if system is not None:
                system.stop()
            with _no_interrupts():
                if receiver is not None:
                    receiver.stop()
                if not closed:
                    capture.discard()
        assert system is not None
        if result.spans == 0:
            raise DemoError("no spans arrived from the demo services")
        bar.note("analyzing")
        loaded = load_traces([str(result.traces_path)])
        signals = signals_from_file(result.metrics_path) if result.metrics_path else None
        profiles = load_profiles([f"render={system.render_profile}"]) if system.render_profile.exists() \
            else LoadedProfiles()
        report = analyze(Inputs(loaded.table, loaded.sources, loaded.repairs, signals,
                            profiles=profiles.profiles, profile_sources=profiles.sources), Config())
        if save_capture is None:
            # The capture lived in the temp dir; a path there would point nowhere.
            for src in report["input"]["sources"] + report["input"].get("profiles", []):
                src["path"] = Path(src["path"]).name
            for svc in report["services"]:
                if "profile" in svc:
                    svc["profile"]["sources"] = [Path(p).name for p in svc["profile"]["sources"]]
    return DemoResult(report=report, load=stats, spans=result.spans, points=result.points, load_s=load_s,
                      total_s=time.monotonic() - t_start,
                      capture_paths=[p for p in (result.traces_path, result.metrics_path) if p is not None]
                      if save_capture is not None else [],
                      pids=[c.proc.pid for c in system.children])


def run_demo(duration_s: float = DEFAULT_DURATION_S, fmt: str | None = None, output: str | None = None,
             progress: bool = True, save_capture: str | None = None, out: IO[str] | None = None) -> dict:
    """Run the demo, print or write the report (`fmt`: text|json|md, default from `output`'s
    extension, else text), print a summary of what was measured on stderr; return the report."""
    console = Console(stderr=True)
    res = run_demo_detailed(duration_s, progress=progress, save_capture=save_capture, console=console)
    fmt = fmt or format_for_path(output)
    out = out or sys.stdout
    if output:
        write_output(output, render(res.report, fmt))
    else:
        out.write(render(res.report, fmt, color=out.isatty()))
        out.flush()
    if progress:  # last, so it is what stays on screen under the report
        console.print(summary(res) + (f"\ndemo: report written to {output}" if output else ""), highlight=False)
    return res.report


def summary(res: DemoResult) -> str:
    """What ran and what arrived, and each service's verdict against what the demo is built to show."""
    reqs = ", ".join(f"{s} {n}" for s, n in res.load.requests.items())
    errs = sum(res.load.errors.values())
    lines = [f"demo: {res.load_s:.0f} s of load ({reqs} requests{f', {errs} failed' if errs else ''}); "
             f"received {res.spans:,} spans and {res.points:,} metric points"]
    verdicts = {s["service"]: s["verdict"] for s in res.report["services"]}
    for service, (want, cause) in EXPECTED.items():
        v = verdicts.get(service)
        got = f"{v['rust_rewrite']} ({v['cause']})" if v else "no verdict"
        mark = "as designed" if v and (v["rust_rewrite"], v["cause"]) == (want, cause) else f"expected {want} ({cause})"
        wait = res.load.core_wait.get(service)
        if mark != "as designed" and cause == "cpu_bound" and wait is not None:
            mark += f"; it waited for a CPU core {wait:.0%} of the time it was ready to run"
            if wait >= CONTENDED:
                mark += (": other work on this host takes CPU from it, so its own CPU is too small a share of its "
                         "requests' time for the verdict")
        lines.append(f"demo: {service:<8} {got} — {mark}")
    if res.capture_paths:
        lines.append(f"demo: telemetry kept in {' and '.join(map(str, res.capture_paths))}")
    return "\n".join(lines)
