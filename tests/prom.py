"""Real Prometheus for tests: exact series backfilled with promtool, or a live scrape.

- `OpenMetrics` writes timestamped samples for exact series (counters as slope * elapsed,
  gauges, summary quantiles, histogram buckets), so a test can compute the value a query
  must return from the numbers it wrote.
- `create_blocks` runs `promtool tsdb create-blocks-from openmetrics`.
- `PrometheusServer` starts `prometheus` on a loopback port over a data directory, waits for
  /-/ready and stops it by PID.
- `prometheus_with(text)` does all three as a context manager.

Without the binaries the tests skip, unless CI=true, where a missing binary is a failure.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def require_binaries() -> None:
    missing = [p for p in (PROMETHEUS, PROMTOOL) if not os.access(p, os.X_OK)]
    if missing:
        msg = f"Prometheus binaries not found: {', '.join(missing)} (apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{_esc(v)}"' for k, v in sorted(labels.items()))
    return "{" + body + "}"


def _esc(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class Window:
    """Sample times: every `interval` seconds from `start` to `end` inclusive."""

    start: float
    end: float
    interval: float = 15.0

    @classmethod
    def recent(cls, hours: float = 2.0, lead: float = 600.0, interval: float = 15.0) -> "Window":
        """A window ending 15-30 minutes ago on an interval boundary, plus `lead` seconds of
        warm-up before the part tests query (so every rate() has a full range)."""
        end = math.floor(time.time() / 900) * 900 - 900
        return cls(end - hours * 3600 - lead, end, interval)

    def times(self) -> list[float]:
        n = int(round((self.end - self.start) / self.interval))
        return [self.start + i * self.interval for i in range(n + 1)]


@dataclass
class OpenMetrics:
    """Exact series, written as OpenMetrics text with timestamps (no TYPE lines: promtool
    stores samples, not types, and untyped families accept any sample name)."""

    window: Window
    series: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = field(default_factory=dict)

    def add(self, name: str, labels: Mapping[str, str], points: list[tuple[float, float]]) -> None:
        self.series[(name, tuple(sorted(labels.items())))] = points

    def counter(self, name: str, labels: Mapping[str, str], per_second: float, start_value: float = 0.0) -> None:
        """A counter growing by `per_second` each second: its rate() is exactly `per_second`."""
        t0 = self.window.start
        self.add(name, labels, [(t, start_value + per_second * (t - t0)) for t in self.window.times()])

    def gauge(self, name: str, labels: Mapping[str, str], value: float) -> None:
        self.add(name, labels, [(t, value) for t in self.window.times()])

    def summary(self, name: str, labels: Mapping[str, str], sum_rate: float, count_rate: float,
                quantiles: Mapping[str, float] | None = None) -> None:
        self.counter(f"{name}_sum", labels, sum_rate)
        self.counter(f"{name}_count", labels, count_rate)
        for q, v in (quantiles or {}).items():
            self.gauge(name, {**labels, "quantile": q}, v)

    def histogram(self, name: str, labels: Mapping[str, str], count_rate: float, sum_rate: float,
                  buckets: Mapping[float, float]) -> None:
        """`buckets` maps each upper bound to the share of observations at or below it."""
        for le, share in sorted(buckets.items()):
            self.counter(f"{name}_bucket", {**labels, "le": _fmt_le(le)}, count_rate * share)
        self.counter(f"{name}_bucket", {**labels, "le": "+Inf"}, count_rate)
        self.counter(f"{name}_sum", labels, sum_rate)
        self.counter(f"{name}_count", labels, count_rate)

    def text(self) -> str:
        lines = []
        for (name, labels), points in sorted(self.series.items()):
            lab = _labels(dict(labels))
            lines.extend(f"{name}{lab} {v!r} {t:.3f}" for t, v in points)
        lines.append("# EOF")
        return "\n".join(lines) + "\n"


def _fmt_le(le: float) -> str:
    return repr(float(le))


def create_blocks(openmetrics_text: str, data_dir: Path) -> None:
    require_binaries()
    data_dir.mkdir(parents=True, exist_ok=True)
    src = data_dir.parent / f"{data_dir.name}.om"
    src.write_text(openmetrics_text, encoding="utf-8")
    proc = subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "-q", str(src), str(data_dir)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"promtool failed: {proc.stderr.strip() or proc.stdout.strip()}")


@dataclass
class TLSFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path) -> TLSFiles:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("openssl not found")
    d = directory
    run = lambda *a: subprocess.run([openssl, *a], check=True, capture_output=True, timeout=60)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pf-test-ca",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"))
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
        "-CAcreateserial", "-days", "2", "-extfile", str(d / "san.ext"), "-out", str(d / "server.pem"))
    return TLSFiles(d / "ca.pem", d / "server.pem", d / "server.key")


class PrometheusServer:
    """A `prometheus` process on 127.0.0.1, stopped by its PID."""

    def __init__(self, data_dir: Path, scrape_configs: str = "", scrape_interval: str = "15s",
                 route_prefix: str = "", extra_args: tuple[str, ...] = (), tls: "TLSFiles | None" = None) -> None:
        require_binaries()
        self.data_dir = data_dir
        self.port = free_port()
        self.prefix = route_prefix.rstrip("/")
        self.tls = tls
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}{self.prefix}"
        config = data_dir.parent / f"{data_dir.name}.prometheus.yml"
        config.write_text(f"global:\n  scrape_interval: {scrape_interval}\n  evaluation_interval: 15s\n"
                          f"scrape_configs:\n{scrape_configs or '  []'}\n", encoding="utf-8")
        self.log = data_dir.parent / f"{data_dir.name}.prometheus.log"
        args = [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=3650d",
                *extra_args]
        if self.prefix:
            args.append(f"--web.external-url={self.url}")
        if tls:
            web = data_dir.parent / f"{data_dir.name}.web.yml"
            web.write_text(f"tls_server_config:\n  cert_file: {tls.cert}\n  key_file: {tls.key}\n", encoding="utf-8")
            args.append(f"--web.config.file={web}")
        self._log_fh = open(self.log, "wb")
        self.proc = subprocess.Popen(args, stdout=self._log_fh, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(requests.RequestException):
                verify = str(self.tls.ca) if self.tls else True
                if requests.get(f"{self.url}/-/ready", timeout=1, verify=verify).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM to our own child, by PID
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log_fh.close()


@contextlib.contextmanager
def running(data_dir: Path, **kwargs) -> Iterator[PrometheusServer]:
    server = PrometheusServer(data_dir, **kwargs)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def prometheus_with(openmetrics_text: str, route_prefix: str = "", tls: bool = False) -> Iterator[PrometheusServer]:
    """A real Prometheus serving exactly the samples in `openmetrics_text` (over HTTPS with a
    throwaway CA when `tls`; the CA is `server.tls.ca`)."""
    with tempfile.TemporaryDirectory(prefix="pf-prom-") as tmp:
        data = Path(tmp) / "data"
        create_blocks(openmetrics_text, data)
        files = make_tls(Path(tmp)) if tls else None
        with running(data, route_prefix=route_prefix, tls=files) as server:
            yield server


class FaultProxy:
    """A loopback HTTP proxy in front of a real Prometheus that injects faults we cannot cause
    for real on demand: 5xx answers, slow answers, refused credentials. Records what it saw."""

    def __init__(self, upstream: str) -> None:
        import http.server
        import threading
        from urllib.parse import unquote_plus

        self.upstream = upstream.rstrip("/")
        self.fail_first = 0  # answer this many requests with `fail_status` first
        self.fail_status = 503
        self.fail_if = ""  # answer every request whose decoded query contains this with fail_status
        self.delay_if = ""  # delay every request whose decoded query contains this
        self.delay = 0.0
        self.seen: list[tuple[str, dict[str, str]]] = []  # (decoded path+query, headers)
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                text = unquote_plus(self.path) + unquote_plus(body.decode("latin-1"))
                with proxy._lock:
                    proxy.seen.append((text, dict(self.headers.items())))
                    fail = proxy.fail_first > 0
                    if fail:
                        proxy.fail_first -= 1
                if fail or (proxy.fail_if and proxy.fail_if in text):
                    self._reply(proxy.fail_status, b'{"status":"error","errorType":"unavailable","error":"injected"}')
                    return
                if proxy.delay_if and proxy.delay_if in text:
                    time.sleep(proxy.delay)
                hop = {"host", "connection", "content-length", "accept-encoding"}
                r = requests.request(self.command, proxy.upstream + self.path, data=body or None, timeout=60,
                                     headers={k: v for k, v in self.headers.items() if k.lower() not in hop})
                self._reply(r.status_code, r.content, r.headers.get("Content-Type", "application/json"))

            def _reply(self, status: int, payload: bytes, ctype: str = "application/json") -> None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            do_GET = do_POST = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
