"""Real runtimes under load, scraped by one real Prometheus at 1 s, for one short window.

Services (each a real process on a loopback port, its Prometheus job named after it):

| service       | runtime | what it does                                                  | spans from            |
|---------------|---------|---------------------------------------------------------------|-----------------------|
| node-gc       | Node    | allocation-heavy, single-threaded non-incremental GC, prom-client | the driver (client) |
| go-gc         | Go      | allocation-heavy, GOGC=5, client_golang metrics               | the driver (client)   |
| jvm-gc        | JVM     | allocation-heavy, serial collector, simpleclient names        | the driver (client)   |
| py-gil        | CPython | pure-Python work, pinned to one core, 3 concurrent clients    | the service (OTel SDK) |
| py-pygc       | CPython | cyclic garbage over a large live set, gc_pauses installed     | the service (OTel SDK) |
| py-background | CPython | a CPU thread in the background, rare requests that wait       | the service (OTel SDK) |
| py-starved    | CPython | light requests at SCHED_IDLE on the core py-gil and a hog use | the service (OTel SDK) |

Node, Go and the JVM have no OpenTelemetry SDK installable offline here, so their SERVER
spans are recorded by the real Python SDK in the load driver around each HTTP call on
loopback (client-observed latency: it includes time queued before the handler ran). Their
request counts come from the counter each service exports (`http_requests_total`).

Everything runs concurrently for `SECONDS`; `live_window()` yields the Prometheus URL, the
span files and the window.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from analyzer.demo.run import _sched_ns
from tests.prom import free_port, running

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ROOT / "tests" / "workloads" / "runtimes"
SECONDS = float(os.environ.get("PF_LIVE_SECONDS", "150"))
GOPATH = "/usr/share/gocode"


def _need(ok: bool, what: str) -> None:
    if not ok:
        msg = f"{what} (run `bash scripts/install-test-servers.sh`)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@dataclass
class Live:
    url: str
    spans: list[Path]
    start: float
    end: float
    cpus: int
    # Share of the time each service's threads were runnable that they waited for a core
    # (Linux schedstat, measured by the test, not read by the analyzer): the host's contention.
    core_wait: dict[str, float] = field(default_factory=dict)


def _build(tmp: Path) -> dict[str, list[str]]:
    """Command lines of the non-Python services, built into `tmp`."""
    _need(shutil.which("node") is not None and (WORKLOADS / "node" / "node_modules" / "prom-client").is_dir(),
          "node and tests/workloads/runtimes/node/node_modules (npm ci)")
    _need(shutil.which("go") is not None and (Path(GOPATH) / "src/github.com/prometheus/client_golang").is_dir(),
          "go and golang-github-prometheus-client-golang-dev")
    _need(shutil.which("javac") is not None and shutil.which("java") is not None, "a JDK (default-jdk-headless)")
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH, "GOCACHE": str(tmp / "gocache")}
    subprocess.run(["go", "build", "-o", str(tmp / "go-gc"), str(WORKLOADS / "go" / "main.go")],
                   check=True, env=env, capture_output=True, timeout=300)
    subprocess.run(["javac", "-d", str(tmp / "jvm"), str(WORKLOADS / "jvm" / "GcServer.java")],
                   check=True, capture_output=True, timeout=300)
    return {
        # --no-incremental-marking: V8 marks inside the atomic pause prom-client times, so all GC
        # is measured (incremental steps would run between pauses as unmeasured "other CPU").
        "node-gc": ["node", "--single-threaded-gc", "--no-incremental-marking", "--max-old-space-size=96",
                    str(WORKLOADS / "node" / "server.js")],
        "go-gc": [str(tmp / "go-gc")],
        "jvm-gc": ["java", "-XX:+UseSerialGC", "-Xms48m", "-Xmx48m", "-XX:TieredStopAtLevel=1", "-cp",
                   str(tmp / "jvm"), "GcServer"],
    }


def _py(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


@contextlib.contextmanager
def live_window() -> Iterator[Live]:
    cpus = len(os.sched_getaffinity(0))
    core_b = sorted(os.sched_getaffinity(0))[-1]  # core A: the other one(s)
    with tempfile.TemporaryDirectory(prefix="pf-live-") as tmp_s:
        tmp = Path(tmp_s)
        commands = _build(tmp)
        ports: dict[str, int] = {}
        procs: dict[str, subprocess.Popen] = {}
        spans: list[Path] = []
        logs = []

        def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
            log = open(tmp / f"{name}.log", "wb")
            logs.append(log)
            procs[name] = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                           env={**os.environ, **(env or {})})

        try:
            for name, argv in commands.items():
                ports[name] = free_port()
                start(name, [*argv, str(ports[name])], {"GOGC": "5"} if name == "go-gc" else None)
            # The test's own CPU burners share one core, so they do not starve what they sit beside:
            # py-gil saturates core B at normal priority, the hog (nice 19) takes what py-gil leaves,
            # and py-starved (SCHED_IDLE) runs only when neither wants the core. Everything else
            # (the GC services, the drivers, Prometheus) has core A to itself on an idle 2-core host.
            for kind, prefix in (("gil", ["taskset", "-c", str(core_b)]), ("pygc", []), ("background", []),
                                 ("starved", ["taskset", "-c", str(core_b), "chrt", "--idle", "0"])):
                name = f"py-{kind}"
                ports[name] = free_port()
                spans.append(tmp / f"{name}.pb")
                start(name, [*prefix, *_py("tests.workloads.runtimes.pyservice", kind, str(ports[name]),
                                           str(spans[-1]))])
            jobs = "".join(f"  - job_name: {n}\n    static_configs:\n      - targets: ['127.0.0.1:{p}']\n"
                           for n, p in ports.items())
            data = tmp / "prom"
            data.mkdir()
            with running(data, scrape_configs=jobs, scrape_interval="1s") as prom:
                _wait_up(ports, procs, tmp)
                # The hog: a busy loop on py-starved's core, bounded in time. nice 19: py-gil (nice 0)
                # keeps its core, py-starved (SCHED_IDLE) waits for both.
                start("hog", ["taskset", "-c", str(core_b), "nice", "-n", "19", sys.executable, "-c",
                              f"import time\nend = time.time() + {SECONDS + 40}\nwhile time.time() < end: pass"])
                time.sleep(3)  # a few scrapes before the load, so every counter has a start
                drivers = []
                for name, how in (("node-gc", ["--rate", "12"]), ("go-gc", ["--rate", "5"]),
                                  ("jvm-gc", ["--rate", "15"]), ("py-gil", ["--concurrency", "3"]),
                                  ("py-pygc", ["--rate", "8"]), ("py-background", ["--rate", "0.5", "--once", "/healthz"]),
                                  ("py-starved", ["--rate", "5"])):
                    extra = []
                    if not name.startswith("py-"):
                        lang = {"node-gc": "nodejs", "go-gc": "go", "jvm-gc": "java"}[name]
                        spans.append(tmp / f"{name}.pb")
                        extra = ["--spans", f"{name}:{lang}:{spans[-1]}"]
                    drivers.append(subprocess.Popen(
                        _py("tests.workloads.runtimes.drive", f"http://127.0.0.1:{ports[name]}/work", str(SECONDS),
                            *how, *extra), cwd=ROOT))
                t0 = time.time()
                before = {n: _sched_ns(p.pid) for n, p in procs.items()}
                for d in drivers:
                    d.wait(timeout=SECONDS + 120)
                t1 = time.time()
                core_wait = {}
                for n, b in before.items():
                    a = _sched_ns(procs[n].pid)
                    if a is not None and b is not None and sum(a) - sum(b) > 0:
                        core_wait[n] = (a[1] - b[1]) / (sum(a) - sum(b))
                time.sleep(3)  # the last scrapes
                for name in [n for n in procs if n.startswith("py-")]:
                    procs[name].terminate()
                for name in [n for n in procs if n.startswith("py-")]:
                    procs[name].wait(timeout=60)
                missing = [p for p in spans if not p.exists()]
                assert not missing, f"no spans written: {missing}"
                keep = os.environ.get("PF_KEEP_LIVE")
                if keep:  # for reruns of the analysis (e.g. an older version) over the same data
                    shutil.copytree(tmp, keep, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("gocache", "*.log", "jvm", "go-gc"))
                yield Live(prom.url, spans, t0, t1, cpus, core_wait)
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.terminate()
            for p in procs.values():
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
            for log in logs:
                log.close()


def _wait_up(ports: dict[str, int], procs: dict[str, subprocess.Popen], tmp: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(ports)
    while pending and time.monotonic() < deadline:
        for name, port in list(pending.items()):
            if procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited: {(tmp / f'{name}.log').read_text()[-2000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200:
                    del pending[name]
        time.sleep(0.2)
    if pending:
        raise RuntimeError(f"not ready after {timeout}s: {sorted(pending)}")
