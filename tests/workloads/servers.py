"""Real servers for workloads, usable without pytest: redis-server and small instrumented HTTP services."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str | None:
    """Path of `redis-server` (Debian package `redis-server`), or None when it is not installed."""
    # /usr/bin may be missing from PATH in minimal CI shells.
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )


def start_redis(port: int, timeout_s: float = 10.0) -> subprocess.Popen[bytes]:
    """Start a throwaway redis-server on 127.0.0.1:`port` and return once it answers PING.

    No persistence (`--save ""`, `--appendonly no`), so it writes nothing to disk. Stop it with
    `stop_process(proc)`, which signals only this PID.
    """
    binary = redis_server_binary()
    if binary is None:
        raise FileNotFoundError("redis-server not found; install the Debian package `redis-server`")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"redis-server exited with {proc.returncode} on port {port}:\n{out}")
        if _redis_ping(port):
            return proc
        time.sleep(0.05)
    stop_process(proc)
    raise TimeoutError(f"redis-server on port {port} did not answer PING within {timeout_s} s")


def _redis_ping(port: int) -> bool:
    # Raw RESP instead of redis-py, so this check never goes through an instrumented client.
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """Terminate a process this code started (by its PID only), killing it if it does not exit."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)
    if proc.stdout:
        proc.stdout.close()


class DownstreamService:
    """A real HTTP service on 127.0.0.1 with its own TracerProvider (its own `service.name`).

    Each request extracts the W3C trace context from the headers, so its SERVER span joins the
    caller's trace as a child of the caller's CLIENT span, then sleeps `latency_ms` (uniform in the
    range, seeded) to stand in for the service's own work. Use as a context manager.
    """

    def __init__(
        self,
        provider: TracerProvider,
        route: str,
        latency_ms: tuple[float, float],
        seed: int = 0,
        body: Callable[[str], bytes] | None = None,
    ) -> None:
        self.route = route
        self._tracer = provider.get_tracer("tests.workloads.servers")
        self._latency_ms = latency_ms
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._body = body or (lambda path: b'{"ok":true}')
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:41234."""
        assert self._server is not None, "service not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _latency_s(self) -> float:
        with self._rng_lock:
            return self._rng.uniform(*self._latency_ms) / 1000.0

    def __enter__(self) -> DownstreamService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so a Session can reuse the connection
            # Headers and body go out in two writes; with Nagle on, the second waits for the
            # client's delayed ACK (~40 ms) and would fake a large wire gap.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                # Header names are case-insensitive (urllib sends "Traceparent"), the default getter is not.
                ctx = propagate.extract({k.lower(): v for k, v in self.headers.items()})
                host, port = self.server.server_address[:2]
                attrs = {
                    "http.request.method": "GET",
                    "http.route": service.route,
                    "url.path": self.path.split("?", 1)[0],
                    "url.scheme": "http",
                    "server.address": str(host),
                    "server.port": int(port),
                    "network.protocol.version": "1.1",
                }
                with service._tracer.start_as_current_span(
                    f"GET {service.route}", context=ctx, kind=SpanKind.SERVER, attributes=attrs
                ) as span:
                    time.sleep(service._latency_s())
                    body = service._body(self.path)
                    span.set_attribute("http.response.status_code", 200)
                # The span ends before the write so the child never outlasts the caller's CLIENT
                # span; a real server instrumentation would include the few-µs write.
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"svc{self.route}", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)


def wait_for_listener(host: str, port: int, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """Return once `host:port` accepts connections; fail with `proc`'s stderr if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
