"""CPU profiles as evidence: profiles taken by real profilers from real processes, read into the
report, and turned into the partial-rewrite target or a cheaper fix.

- py-spy (speedscope and raw folded output) on two instrumented CPython HTTP services whose traces
  and process CPU time go over OTLP to the project's own receiver, as in the demo;
- `node --cpu-prof` on a Node program; `runtime/pprof` in a Go program (Debian's golang).
"""

from __future__ import annotations

import copy
import glob
import gzip
import http.client
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analyzer.config import Config
from analyzer.pipeline import Inputs, analyze
from analyzer.profile_summary import merge, summarize
from analyzer.profile_verdict import ProfileConfig, attach
from analyzer.report_schema import validate_report
from collectors.capture import Capture
from collectors.otlp_metrics import signals_from_file
from collectors.otlp_traces import load_traces
from collectors.profiles import load_profiles
from collectors.receiver import OtlpReceiver, ReceiverConfig
from heuristics.profiles import CHEAPER_FIX_RULES, SERIALIZATION

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ROOT / "tests" / "workloads"
LOAD_SECONDS = 7.0


def _py_spy() -> str:
    exe = Path(sys.executable).with_name("py-spy")
    found = str(exe) if exe.exists() else shutil.which("py-spy")
    assert found, "py-spy is not installed (pip install py-spy: it is in the [test] extra)"
    return found


def profiled_service(kind: str, tmp: Path, fmt: str) -> tuple[dict, Path]:
    """Run tests/workloads/profiled.py KIND under py-spy with sequential requests for a few
    seconds; return the report of its traces, metrics and profile, and the profile's path."""
    out = tmp / f"{kind}.{'speedscope.json' if fmt == 'speedscope' else 'folded'}"
    capture = Capture(tmp / "capture.otlp.jsonl").start()
    receiver = OtlpReceiver(capture, ReceiverConfig(host="127.0.0.1", http_port=0, grpc_port=None)).start()
    proc = subprocess.Popen(
        [_py_spy(), "record", "--nonblocking", "--full-filenames", "--rate", "100", "--format", fmt, "--output", str(out), "--",
         sys.executable, "-m", "tests.workloads.profiled", kind, "--endpoint", receiver.http_endpoint,
         "--max-seconds", str(LOAD_SECONDS + 1.5)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []  # py-spy writes its own notes to the same stdout first
        while not (line := proc.stdout.readline()).startswith("READY") and line and len(seen) < 20:
            seen.append(line)
        assert line.startswith("READY"), f"workload did not start: {seen!r}"
        port = int(line.split()[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        route = "report" if kind == "json" else "checksum"
        end, n = time.monotonic() + LOAD_SECONDS, 0
        while time.monotonic() < end and n < 5000:
            conn.request("GET", f"/{route}/{n}")
            conn.getresponse().read()
            n += 1
        conn.close()
        proc.communicate(timeout=60)  # the workload exits by itself; py-spy then writes the profile
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        receiver.stop()
    result = capture.close()
    assert out.exists(), f"py-spy wrote no profile (exit {proc.returncode})"
    loaded = load_traces([str(result.traces_path)])
    signals = signals_from_file(str(result.metrics_path)) if result.metrics_path else None
    profiles = load_profiles([f"{kind}={out}"], list(loaded.table.services))
    report = analyze(Inputs(loaded.table, loaded.sources, loaded.repairs, signals,
                            profiles=profiles.profiles, profile_sources=profiles.sources), Config())
    return report, out


@pytest.fixture(scope="module")
def json_service(tmp_path_factory) -> dict:
    return profiled_service("json", tmp_path_factory.mktemp("json"), "speedscope")[0]


@pytest.fixture(scope="module")
def checksum_service(tmp_path_factory) -> tuple[dict, Path]:
    return profiled_service("checksum", tmp_path_factory.mktemp("checksum"), "raw")


def _service(report: dict, name: str) -> dict:
    return next(s for s in report["services"] if s["service"] == name)


def test_json_heavy_service_is_told_to_change_its_serializer_not_its_language(json_service):
    """Workload: each request encodes a 400-record report six times with the json module. A human
    names JSON serialization as the cause, and a faster serializer as the fix."""
    validate_report(json_service)
    svc = _service(json_service, "json")
    prof = svc["profile"]
    assert prof["formats"] == ["speedscope"]
    # The standard library's encoder is where the CPU goes, and it is library code, not the service's.
    json_fns = [f for f in prof["functions"] if f["package"] == "json"]
    assert json_fns and json_fns[0]["owner"] == "library"
    assert sum(f["self_share"] for f in json_fns) >= 0.5
    findings = [f for h in svc["hotspots"] for f in h["findings"] if f["rule"] == "PF-PROF001"]
    assert findings, "PF-PROF001 did not fire on a JSON-bound service"
    assert "orjson" in findings[0]["remedy"]
    assert findings[0]["evidence"][0]["value"] >= 0.5
    v = svc["verdict"]
    # The serializer, not the language: CPU work never earns a rewrite here.
    assert not (v["rust_rewrite"] == "recommended" and v["cause"] == "cpu_bound"), v
    if v["cause"] == "cpu_bound":
        assert "serialization" in v["reason"]
        assert prof["partial_rewrite"]["recommendation"] == "fix_first"
        assert svc["fix_first"][0]["rule"] == "PF-PROF001"


def test_cpu_bound_service_profile_names_its_own_hot_function(checksum_service):
    """Workload: a pure-Python checksum loop in the service's own `checksum` function. A human
    names `checksum` as the code a rewrite would touch, and no cheaper fix."""
    report, _ = checksum_service
    svc = _service(report, "checksum")
    part = svc["profile"]["partial_rewrite"]
    assert part["functions"][0]["function"] == "checksum"
    assert part["functions"][0]["share"] >= 0.5  # the rest: imports at start-up, HTTP handling
    assert svc["profile"]["by_owner"]["own"] >= 0.6
    assert not [f for h in svc["hotspots"] for f in h["findings"] if f["rule"].startswith("PF-PROF")]
    v = svc["verdict"]
    if v["rust_rewrite"] == "recommended":
        assert part["recommendation"] == "partial" and "checksum" in v["reason"], v
    else:
        assert part["recommendation"] == "none"


def test_recommended_verdict_with_a_profile_names_the_functions_and_the_partial_ceiling(checksum_service):
    """The same measured service, as the report reads when runtime metrics make CPU the cause
    (on a quiet machine): the verdict names `checksum` as the target of a PyO3 extension, with
    the ceiling of rewriting only it beside the full rewrite's."""
    report, _ = checksum_service
    svc = copy.deepcopy(_service(report, "checksum"))
    svc["verdict"] = {"rust_rewrite": "recommended", "cause": "cpu_bound",
                      "reason": "90% of checksum's request time is CPU work."}
    view = merge("checksum", load_profiles([f"checksum={checksum_service[1]}"]).profiles)
    attach(svc, view, ProfileConfig(), CHEAPER_FIX_RULES)
    part, v = svc["profile"]["partial_rewrite"], svc["verdict"]
    assert v["rust_rewrite"] == "recommended"
    assert part["recommendation"] == "partial"
    assert "checksum" in v["reason"] and "PyO3" in v["reason"]
    # Rewriting only `checksum` saves less than a full rewrite, in proportion to the CPU it holds.
    ceiling = svc["rewrite_ceiling"]
    assert part["full_ceiling_ms"] == ceiling["mean_ms"]
    assert 0 <= part["ceiling_ms"] <= part["full_ceiling_ms"]
    expected = (ceiling["mean_ms"] / (ceiling["mean_pct"] / 100) * ceiling["basis"]["cpu_share"] * part["covers"]
                * (1 - 1 / ceiling["cpu_speedup"])) if ceiling["mean_pct"] else 0.0
    assert part["ceiling_ms"] == pytest.approx(expected, rel=1e-3, abs=1e-3)


def test_py_spy_folded_output_reads_through_the_cli(checksum_service, tmp_path):
    """The same folded profile given on the command line, with the service taken from the file name."""
    _, folded = checksum_service
    named = tmp_path / "checksum.folded"
    named.write_bytes(folded.read_bytes())
    traces = tmp_path / "none.otlp.jsonl"
    proc = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--profile", str(named), "--service",
                           "checksum", "--format", "json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json

    report = json.loads(proc.stdout)
    svc = _service(report, "checksum")
    assert svc["profile"]["functions"][0]["function"] == "checksum"
    assert report["input"]["profiles"][0]["format"] == "folded"
    assert not traces.exists()


def test_node_cpu_prof_names_the_hot_functions(tmp_path):
    """Workload: a Node program alternating 20 ms of a recursive fib and 20 ms of JSON.stringify
    in encodeReport. A human names fib and encodeReport, about half each."""
    node = shutil.which("node")
    assert node, "node is not installed"
    subprocess.run([node, "--cpu-prof", f"--cpu-prof-dir={tmp_path}", str(WORKLOADS / "profiled_node" / "work.js"), "2"],
                   check=True, timeout=60, capture_output=True)
    path = glob.glob(str(tmp_path / "*.cpuprofile"))[0]
    loaded = load_profiles([f"node-svc={path}"])
    assert loaded.profiles and loaded.sources[0].format == "cpuprofile"
    s = summarize(merge("node-svc", loaded.profiles))
    top = {f["function"]: f["self_share"] for f in s["functions"][:3]}
    assert {"fib", "encodeReport"} <= set(top), top
    assert 0.25 <= top["fib"] <= 0.75 and 0.25 <= top["encodeReport"] <= 0.75
    assert s["unit"] == "seconds" and 1.0 <= s["total"] <= 2.5
    names = {f["function"] for f in s["partial_rewrite"]["functions"]}
    assert names == {"fib", "encodeReport"}


def test_go_pprof_names_the_hot_function_and_the_serializer(tmp_path):
    """Workload: a Go program alternating 20 ms of a checksum loop and 20 ms of encoding/json. A
    human names main.checksum (own code) and JSON encoding (library) at about half each."""
    go = shutil.which("go")
    assert go, "go is not installed (Debian golang-go)"
    out = tmp_path / "go.pprof"
    env = {**os.environ, "GO111MODULE": "off", "GOCACHE": str(tmp_path / "gocache"), "GOFLAGS": ""}
    subprocess.run([go, "run", "main.go", str(out), "3"], cwd=WORKLOADS / "profiled_go", env=env, check=True,
                   timeout=240, capture_output=True)
    assert gzip.decompress(out.read_bytes())  # Go writes gzip-compressed protobuf
    loaded = load_profiles([f"go-svc={out}"])
    view = merge("go-svc", loaded.profiles)
    s = summarize(view)
    assert s["functions"][0]["function"] == "main.checksum"
    assert 0.3 <= s["functions"][0]["self_share"] <= 0.7
    serialization = view.share_of_stacks_with(view.frame_mask(SERIALIZATION.matches))
    assert 0.25 <= serialization <= 0.7
    assert s["gc_share"] > 0  # encoding/json allocates: the Go GC shows in the profile
    assert s["partial_rewrite"]["functions"][0]["function"] in ("main.checksum", "main.encodeReport")
    # GC the profiler saw joins the GC evidence: the verdict's reason says it.
    svc = {"service": "go-svc", "runtime": "go", "hotspots": [], "rewrite_ceiling": {},
           "verdict": {"rust_rewrite": "insufficient_evidence", "cause": "unknown", "reason": "No GC metrics."}}
    attach(svc, view, ProfileConfig(), CHEAPER_FIX_RULES)
    if s["gc_share"] >= 0.05:
        assert f"{s['gc_share']:.0%} of the service's CPU in the runtime's garbage collector" in svc["verdict"]["reason"]


@pytest.mark.parametrize("content,reason", [
    (b"", "not a CPU profile"),
    (b"\x1f\x8b\x08\x00garbage", ""),
    (b'{"nodes": 5, "samples": []}', ""),
    (b"a;b;c notanumber\n", "not a CPU profile"),
])
def test_bad_profiles_are_counted_and_skipped(tmp_path, content, reason):
    bad = tmp_path / "bad.prof"
    bad.write_bytes(content)
    good = tmp_path / "good.folded"
    good.write_text("main;work 10\n")
    loaded = load_profiles([f"svc={bad}", f"svc={good}"])
    assert len(loaded.profiles) == 1
    src = loaded.sources[0]
    assert src.error and sum(src.skipped.values()) >= 1
    assert reason in src.error


def test_a_profile_with_no_service_says_how_to_name_it(tmp_path):
    p = tmp_path / "cpu.folded"
    p.write_text("main;work 10\n")
    loaded = load_profiles([str(p)], ["checkout"])
    assert not loaded.profiles
    assert "SERVICE=PATH" in loaded.sources[0].error


# -- Pyroscope ------------------------------------------------------------------------------------
# No Pyroscope server can be installed here: a stand-in on loopback answers the render API with a
# flamebearer built from a real profile (node --cpu-prof), as Pyroscope encodes one.


def _flamebearer(profile, keep=lambda names: True) -> dict:
    """Pyroscope's single-format flamebearer of `profile` in nanosecond ticks: a tree of the
    stacks, one level per depth, each node (x offset delta, total, self, name index)."""
    tree: dict = {}
    for i in range(profile.n_stacks):
        names = [profile.frames[c].name for c in profile.stack_of(i)]
        if not names or not keep(names):
            continue
        node = tree
        ticks = int(profile.weights[i] * 1e9)
        for d, name in enumerate(names):
            child = node.setdefault(name, {"total": 0, "self": 0, "children": {}})
            child["total"] += ticks
            if d == len(names) - 1:
                child["self"] += ticks
            node = child["children"]
    names, index = ["total"], {"total": 0}
    total = sum(c["total"] for c in tree.values())
    levels = [[0, total, 0, 0]]
    frontier = [(0, tree)]  # (absolute x, children) of the previous level, left to right
    while frontier:
        level, nxt, prev_end = [], [], 0
        for x, children in frontier:
            for name, c in children.items():
                level += [x - prev_end, c["total"], c["self"], index.setdefault(name, len(names))]
                if index[name] == len(names):
                    names.append(name)
                nxt.append((x, c["children"]))
                prev_end = x + c["total"]
                x += c["total"]
        if level:
            levels.append(level)
        frontier = nxt
    return {"version": 1, "flamebearer": {"names": names, "levels": levels, "numTicks": total, "maxSelf": 0},
            "metadata": {"format": "single", "sampleRate": 1_000_000_000, "units": "nanoseconds"}}


@pytest.fixture(scope="module")
def node_profile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("node")
    subprocess.run([shutil.which("node"), "--cpu-prof", f"--cpu-prof-dir={tmp}",
                    str(WORKLOADS / "profiled_node" / "work.js"), "1"], check=True, timeout=60, capture_output=True)
    return load_profiles([f"shop={glob.glob(str(tmp / '*.cpuprofile'))[0]}"]).profiles[0]


@pytest.fixture
def pyroscope(node_profile):
    import json as _json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    seen: list[dict] = []
    state = {"status": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            url = urlsplit(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            seen.append({"path": url.path, "query": q, "auth": self.headers.get("Authorization"),
                         "tenant": self.headers.get("X-Scope-OrgID")})
            if state["status"] != 200:
                self.send_response(state["status"])
                self.send_header("Location", "http://127.0.0.2:1/elsewhere")
                self.end_headers()
                return
            if 'service_name="shop"' not in q.get("query", ""):
                doc = {"flamebearer": {"names": [], "levels": [], "numTicks": 0, "maxSelf": 0}}
            elif 'span_name="GET /fib"' in q["query"]:  # a span profile: the samples of that operation
                doc = _flamebearer(node_profile, keep=lambda names: "fib" in names)
            else:
                doc = _flamebearer(node_profile)
            body = _json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen, state
    server.shutdown()


def test_pyroscope_profiles_match_the_profile_they_came_from_and_link_span_samples(pyroscope, node_profile):
    from collectors.pyroscope import fetch_profiles

    url, seen, _ = pyroscope
    env = {"PROFILE_FIRST_PYROSCOPE_TOKEN": "s3cret", "PROFILE_FIRST_PYROSCOPE_TENANT": "team-a"}
    got, problems = fetch_profiles(url, ["shop", "idle"], 1_700_000_000, 1_700_003_600,
                                   {"shop": ["GET /fib", "GET /report"]}, env=env)
    assert problems == ["Pyroscope has no CPU profile for idle in the window"]
    (p,) = got
    # The same CPU, function by function, as the file the server's answer was built from.
    want = summarize(merge("shop", [node_profile]))
    have = summarize(merge("shop", [p]))
    assert have["total"] == pytest.approx(want["total"], rel=1e-3)
    assert {f["function"]: f["self_share"] for f in have["functions"][:2]} == pytest.approx(
        {f["function"]: f["self_share"] for f in want["functions"][:2]}, abs=0.01)
    # Samples under fib came back in the span profile of GET /fib: they are linked to it, once.
    view = merge("shop", [p])
    linked = view.for_span("GET /fib")
    assert linked is not None and linked.any()
    fib = view.frame_mask(lambda f: f.name == "fib")
    assert view.share_of_stacks_with(fib, linked) == pytest.approx(1.0)
    assert float(view.weights[linked].sum()) == pytest.approx(
        view.share_of_stacks_with(fib) * view.total, rel=1e-3)
    queries = [s["query"] for s in seen]
    assert queries[0]["query"] == 'process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="shop"}'
    assert queries[0]["from"] == "1700000000" and queries[0]["format"] == "json"
    assert all(s["auth"] == "Bearer s3cret" and s["tenant"] == "team-a" for s in seen)


def test_pyroscope_refusing_or_redirecting_is_one_line_and_exit_2(pyroscope):
    url, seen, state = pyroscope
    for status, said in ((500, "HTTP 500"), (302, "cannot get")):
        state["status"] = status
        proc = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--pyroscope", url, "--service", "shop",
                               "--start", "1700000000", "--end", "1700003600"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120, env={**os.environ, "PROFILE_FIRST_PYROSCOPE_TOKEN": "s3cret"})
        assert proc.returncode == 2, proc.stderr
        assert said in proc.stderr and "Traceback" not in proc.stderr
        assert "s3cret" not in proc.stderr
    # The redirect pointed at another host (nothing listens there): no second request reached us.
    assert not any(s["path"] == "/elsewhere" for s in seen)


def test_pyroscope_through_the_cli_gives_the_service_its_profile_section(pyroscope):
    url, _, _ = pyroscope
    proc = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--pyroscope", url, "--service", "shop",
                           "--start", "1700000000", "--end", "1700003600", "--format", "json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json as _json

    report = _json.loads(proc.stdout)
    validate_report(report)
    svc = _service(report, "shop")
    assert {f["function"] for f in svc["profile"]["functions"][:2]} == {"fib", "encodeReport"}
    assert report["input"]["profiles"][0]["format"] == "pyroscope"
