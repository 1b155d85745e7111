"""`profile-first demo` end to end: real service processes, real OTLP export, real analysis.

The demo is built so that each service has one measured cause; these tests are the contract
that the analysis reaches each intended verdict from what the services actually exported.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from analyzer.commands.demo import demo
from analyzer.demo import run as demo_run_module
from analyzer.demo.run import CONTENDED, EXPECTED, DemoError, DemoResult, run_demo_detailed, summary
from analyzer.report_schema import validate_report

ROOT = Path(__file__).resolve().parents[1]
DEMO_SECONDS = 22.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (it only waits to be reaped by its parent).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture(scope="module")
def demo_run() -> DemoResult:
    return run_demo_detailed(DEMO_SECONDS, progress=False)


def _host_busy_says_why(run: DemoResult, service: str) -> bool:
    """CPU per request is measured against wall time: when other work on the host keeps the
    CPU-bound service waiting for a core (measured from Linux schedstat), its CPU share reads
    low and PF-CPU001 rightly stays silent. Then the demo must say so, and the verdict must not
    blame another cause or recommend a rewrite for it. True when that is the case (the host,
    not a regression); False when the service was not contended."""
    wait = run.load.core_wait.get(service, 0.0)
    if wait < CONTENDED:
        return False
    verdict = next(s["verdict"] for s in run.report["services"] if s["service"] == service)
    assert verdict["rust_rewrite"] != "recommended" and verdict["cause"] in ("cpu_bound", "unknown"), verdict
    line = next(line for line in summary(run).splitlines() if line.startswith(f"demo: {service} "))
    assert f"waited for a CPU core {wait:.0%}" in line and "other work on this host" in line, line
    return True


#: Core wait (share of runnable time) up to which the CPU-bound service must keep its verdict: its
#: own CPU still covers the time it had a core, and is over 30% of its requests' time.
HOLDS_UP_TO = 0.6


def test_cpu_bound_service_keeps_its_verdict_beside_a_cpu_hog() -> None:
    """Principle 9: the demo on a 2-core machine that is also busy. One busy loop per core at normal
    priority (bounded: 120 s) runs beside the whole demo. A human would say render is still
    CPU-bound, and slower because neighbours take its core. Its own wait for a core is exported
    (analyzer.instrument.core_wait), so the tool tells its CPU work from that wait: `recommended`
    (cpu_bound), the wait named as contention; past HOLDS_UP_TO its CPU is too small a share of
    its time for the verdict, and the demo says why. Services built to wait never get a rewrite."""
    hog = "import time\nend = time.time() + 120\nwhile time.time() < end: pass"
    hogs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(len(os.sched_getaffinity(0)))]
    try:
        run = run_demo_detailed(DEMO_SECONDS, progress=False)
    finally:
        for h in hogs:
            h.terminate()
        for h in hogs:
            h.wait(timeout=30)
    by_name = {s["service"]: s for s in run.report["services"]}
    wait = run.load.core_wait.get("render", 0.0)
    assert wait >= 0.2, f"the hogs did not contend with render (core wait {wait:.0%})"
    render = by_name["render"]
    for name, (want, _) in EXPECTED.items():
        if want == "not_recommended":
            assert by_name[name]["verdict"]["rust_rewrite"] != "recommended", (name, by_name[name]["verdict"])
    if wait >= HOLDS_UP_TO and (render["verdict"]["rust_rewrite"], render["verdict"]["cause"]) != EXPECTED["render"]:
        assert _host_busy_says_why(run, "render")
        return
    assert (render["verdict"]["rust_rewrite"], render["verdict"]["cause"]) == EXPECTED["render"], (wait, render["verdict"])
    cpu = next(f for h in render["hotspots"] for f in h["findings"] if f["rule"] == "PF-CPU001")
    assert "for a core other processes held" in cpu["message"] and "process.cpu.wait.time" in cpu["message"]


def test_report_validates(demo_run: DemoResult) -> None:
    validate_report(demo_run.report)
    assert json.loads(json.dumps(demo_run.report)) == demo_run.report


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_each_service_reaches_its_designed_verdict(demo_run: DemoResult, service: str) -> None:
    by_name = {s["service"]: s for s in demo_run.report["services"]}
    assert service in by_name, f"no verdict for {service}; services: {sorted(by_name)}"
    s = by_name[service]
    want, cause = EXPECTED[service]
    verdict = s["verdict"]
    if (verdict["rust_rewrite"], verdict["cause"]) != (want, cause) and cause == "cpu_bound":
        if _host_busy_says_why(demo_run, service):
            return
    assert (verdict["rust_rewrite"], verdict["cause"]) == (want, cause), verdict["reason"]
    assert s["runtime"] == "python"
    assert s["hotspots"] and s["hotspots"][0]["category"] == cause


def test_causes_are_measured_not_assumed(demo_run: DemoResult) -> None:
    by_name = {s["service"]: s for s in demo_run.report["services"]}

    def rules(service: str) -> dict[str, dict]:
        return {f["rule"]: f for h in by_name[service]["hotspots"] for f in h["findings"]}

    def evidence(finding: dict, signal_name: str) -> dict:
        return next(e for e in finding["evidence"] if e["signal"] == signal_name)

    assert "PF-DB001" in rules("orders")  # N+1
    assert "PF-NET002" in rules("gateway")  # sequential fan-out
    assert "PF-CACHE001" in rules("profile")  # cache-aside misses
    assert evidence(rules("profile")["PF-CACHE001"], "cache_miss_ratio")["value"] > 0.8
    # The runtime verdicts rest on the exported metrics, named as their source.
    gc = rules("feed")["PF-GC001"]
    assert evidence(gc, "gc_seconds_per_second")["source"] == "cpython.gc.pause.duration"
    assert evidence(gc, "gc_seconds_per_second")["value"] > 0.4
    assert evidence(gc, "gc_pause_max_seconds")["value"] > 0.02  # full collections over the big heap
    if "PF-CPU001" not in rules("render") and _host_busy_says_why(demo_run, "render"):
        return
    cpu = rules("render")["PF-CPU001"]
    assert evidence(cpu, "cpu_cores_used")["source"] == "process.cpu.time"
    # One client back to back on CPU-bound requests: render is on a core or waiting for one most of
    # the time (its own run-queue wait is exported beside its CPU).
    assert evidence(cpu, "cpu_cores_used")["value"] + evidence(cpu, "cpu_run_queue_seconds_per_second")["value"] > 0.5


def test_everything_arrived_and_every_process_is_gone(demo_run: DemoResult) -> None:
    assert demo_run.spans == demo_run.report["input"]["spans"]
    assert demo_run.points > 0
    assert all(n > 5 for n in demo_run.load.requests.values()), demo_run.load.requests
    assert not any(demo_run.load.errors.values()), demo_run.load.errors
    assert len(demo_run.pids) == 9  # cache, 3 downstreams, 5 services
    assert [p for p in demo_run.pids if _alive(p)] == []


def test_cli_writes_the_markdown_report_atomically_and_keeps_the_capture(tmp_path: Path) -> None:
    out = tmp_path / "demo.md"
    result = CliRunner().invoke(demo, ["--duration", "10s", "--format", "md", "--output", str(out), "--quiet",
                                       "--save-capture", str(tmp_path / "demo.otlp.jsonl")])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith("# profile-first report")
    for service in EXPECTED:
        assert f"## {service} (python)" in text
    # No temporary file left behind; the capture can be analyzed again with `analyze`.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.md", "demo.metrics.otlp.jsonl", "demo.otlp.jsonl"]
    again = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--traces", str(tmp_path / "demo.otlp.jsonl"),
                            "--metrics", str(tmp_path / "demo.metrics.otlp.jsonl"), "--format", "json"],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert again.returncode == 0, again.stderr
    assert {s["service"] for s in json.loads(again.stdout)["services"]} >= set(EXPECTED)


@pytest.mark.parametrize("value", ["2s", "abc", "11m"])
def test_cli_rejects_bad_durations(value: str) -> None:
    result = CliRunner().invoke(demo, ["--duration", value])
    assert result.exit_code == 2


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_ctrl_c_stops_every_demo_process() -> None:
    code = "import sys; from analyzer.commands.demo import demo; sys.exit(demo(['--duration', '60s']))"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        kids: list[int] = []
        while time.monotonic() < deadline and len(kids) < 9:  # wait until every service runs
            time.sleep(0.5)
            kids = _children(proc.pid)
        assert len(kids) == 9, f"demo started {len(kids)} processes"
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert [k for k in kids if _alive(k)] == []


def test_an_error_mid_run_stops_every_process(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []
    real_start = demo_run_module._System.start

    def start(self: demo_run_module._System) -> dict:
        out = real_start(self)
        started.extend(c.proc.pid for c in self.children)
        return out

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(demo_run_module._System, "start", start)
    monkeypatch.setattr(demo_run_module, "_run_phase", boom)
    with pytest.raises(RuntimeError, match="boom"):
        run_demo_detailed(10, progress=False)
    assert len(started) == 9
    assert [p for p in started if _alive(p)] == []


def test_a_service_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    child = demo_run_module._spawn("broken", "analyzer.demo.services", ["no-such-service"], tmp_path)
    with pytest.raises(DemoError, match=r"(?s)broken exited with 2.*invalid choice"):
        demo_run_module._wait_ready([child], 30)


def test_cpu_bound_service_comes_with_its_profile_and_rewrite_target(demo_run: DemoResult) -> None:
    """render spends its CPU in the pure-Python fractal loop `mandelbrot`: the profile the demo takes
    names it as the function to rewrite, with the ceiling of rewriting only it."""
    render = next(s for s in demo_run.report["services"] if s["service"] == "render")
    prof = render["profile"]
    part = prof["partial_rewrite"]
    assert part["functions"][0]["function"] == "mandelbrot"
    assert part["functions"][0]["share"] >= 0.6
    assert prof["functions"][0]["function"] == "mandelbrot" and prof["functions"][0]["owner"] == "own"
    if render["verdict"]["rust_rewrite"] != "recommended" and _host_busy_says_why(demo_run, "render"):
        return
    assert part["recommendation"] == "partial"
    assert "mandelbrot" in render["verdict"]["reason"] and "PyO3" in render["verdict"]["reason"]
    assert part["ceiling_ms"] is not None and part["ceiling_ms"] <= part["full_ceiling_ms"]
