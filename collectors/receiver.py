"""An OTLP receiver (HTTP/1.1 and gRPC) that hands validated export requests to a sink.

HTTP is served by a small asyncio protocol rather than `http.server`: one event-loop thread
parses requests straight off the socket buffer with no per-request thread or header-object
churn, which is what lets a 2-core machine accept >100k spans/s (see
benchmarks/bench_receiver.py). gRPC uses grpcio with the service definitions from opentelemetry-proto.

Status behaviour follows the OTLP specification (protocol/otlp.md):
  HTTP: 200 + Export*ServiceResponse in the request's content type (partial_success carries
  rejected spans), 400 malformed, 401 bad token, 404 path, 405 method, 411 no length,
  413 too large (wire or decompressed), 415 content type/encoding, 503 + Retry-After when the
  sink is full, which the OTLP exporters retry.
  gRPC: OK, INVALID_ARGUMENT, UNAUTHENTICATED, RESOURCE_EXHAUSTED (message too large), and
  UNAVAILABLE + RetryInfo when full: the spec makes UNAVAILABLE always retryable, whereas
  RESOURCE_EXHAUSTED is retried only by some clients.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import logging
import os
import resource
import socket
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf import duration_pb2, json_format
from google.protobuf.any_pb2 import Any as AnyProto
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from collectors.otlp_ports import DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT
from collectors.otlp_ingest import (
    JSON,
    METRICS,
    PROTOBUF,
    TRACES,
    Accepted,
    IngestError,
    accept,
    inflate,
    media_type,
)

DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024
_MAX_HEADER_BYTES = 64 * 1024
_ACCEPT_BATCH = 16
_MAX_DISCARD_FACTOR = 4  # read off at most 4x the limit after an early 413, else close
_PATHS = {"/v1/traces": TRACES, "/v1/metrics": METRICS}
_log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where accepted requests go (a `collectors.capture.Capture`, or a test double)."""

    def has_room(self) -> bool:
        """Cheap check before parsing, so a full sink costs no decoding work."""
        ...

    def offer(self, signal: str, payload: bytes, items: int) -> bool:
        """Take one accepted request; False when full (the client is told to retry)."""
        ...

    def retry_after_s(self) -> int:
        """Seconds a client should wait before retrying when the sink is full."""
        ...


@dataclass
class ReceiverConfig:
    host: str = "127.0.0.1"
    http_port: int | None = DEFAULT_HTTP_PORT  # None: no HTTP listener; 0: any free port
    grpc_port: int | None = DEFAULT_GRPC_PORT  # None: no gRPC listener; 0: any free port
    allow_remote: bool = False
    token: str | None = None  # bearer token every request must carry, if set
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES  # body as sent (maybe compressed)
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
    grpc_workers: int = 4
    # A request's head and body must arrive within this from its first byte (408 otherwise), so
    # a header or chunked body that never ends cannot hold a connection.
    request_timeout_s: float = 30.0
    idle_timeout_s: float = 60.0  # a keep-alive connection with no request in flight is closed after this
    # Open HTTP connections; never more than the descriptor limit allows (see `connection_cap`).
    # At the cap the longest-idle connection is closed to admit a new one, so idle clients
    # cannot starve exporters.
    max_connections: int = 1024

    def check(self) -> None:
        if not self.allow_remote and not is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host!r}: the receiver accepts telemetry from anyone who can "
                "reach it. Bind to 127.0.0.1 (the default), or pass allow_remote=True "
                "(--allow-remote) and set a token (--token-file or $PROFILE_FIRST_RECEIVER_TOKEN) to expose it."
            )
        if self.max_request_bytes <= 0 or self.max_decompressed_bytes <= 0:
            raise ValueError("max_request_bytes and max_decompressed_bytes must be positive")
        if not (self.request_timeout_s > 0 and self.idle_timeout_s > 0 and self.max_connections > 0):
            raise ValueError("request_timeout_s, idle_timeout_s and max_connections must be positive")

    def connection_cap(self) -> int:
        """max_connections, lowered to leave descriptors for the files, gRPC and the process itself:
        past the descriptor limit accept() fails and nobody gets an answer."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        reserve = 64 + (self.grpc_workers * 4 if self.grpc_port is not None else 0)
        return max(4, min(self.max_connections, soft - reserve))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OtlpReceiver:
    """OTLP/HTTP and OTLP/gRPC listeners feeding one sink. Use as a context manager."""

    def __init__(self, sink: Sink, config: ReceiverConfig | None = None) -> None:
        self.config = config or ReceiverConfig()
        self.config.check()
        self.sink = sink
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self._status = Counter[str]()
        self._status_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http_thread: threading.Thread | None = None
        self._http_server: asyncio.AbstractServer | None = None
        # Touched only on the event-loop thread. Both keep insertion order: `_idle` is oldest first.
        self._connections: dict[_HttpProtocol, None] = {}
        self._idle: dict[_HttpProtocol, None] = {}
        self._max_connections = self.config.connection_cap()
        self.evicted = 0  # idle connections closed to admit new ones
        self._grpc: grpc.Server | None = None
        self._auth = f"Bearer {self.config.token}".encode() if self.config.token else None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        cfg = self.config
        if cfg.http_port is not None:
            self._start_http(cfg.host, cfg.http_port)
        if cfg.grpc_port is not None:
            self._start_grpc(cfg.host, cfg.grpc_port)
        return self

    def stop(self, grace_s: float = 1.0) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace_s).wait()
            self._grpc = None
        if self._loop is not None and self._http_thread is not None:
            self._loop.call_soon_threadsafe(self._shutdown_http, min(grace_s, 0.2))
            self._http_thread.join(timeout=5 + grace_s)
            self._loop = self._http_thread = None

    def _shutdown_http(self, grace_s: float) -> None:
        """Stop accepting, then let responses already written reach their clients before the
        connections close: an exporter that never sees its 200 retries, and spans would arrive twice."""
        assert self._loop is not None
        loop = self._loop
        if self._http_server is not None:
            self._http_server.close()

        def close_all() -> None:
            for conn in list(self._connections):
                conn.close()
            loop.call_soon(loop.stop)

        loop.call_later(grace_s, close_all)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def http_endpoint(self) -> str:
        return f"http://{_url_host(self.config.host)}:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"{_url_host(self.config.host)}:{self.grpc_port}"

    def status_counts(self) -> dict[str, int]:
        """Responses sent so far, by HTTP status or gRPC code name."""
        with self._status_lock:
            return dict(self._status)

    def _count(self, key: str) -> None:
        with self._status_lock:
            self._status[key] += 1

    # -- shared request handling ------------------------------------------------------------

    def authorized(self, value: bytes | str | None) -> bool:
        if self._auth is None:
            return True
        if value is None:
            return False
        raw = value.encode() if isinstance(value, str) else value
        return hmac.compare_digest(raw.strip(), self._auth)

    def ingest(self, signal: str, media: str, encoding: str | None, body: bytes) -> Accepted:
        """Decode, validate and store one request; raises IngestError with the HTTP status."""
        if not self.sink.has_room():
            raise IngestError(503, "capture buffer full; retry later")
        data = inflate(body, encoding, self.config.max_decompressed_bytes)
        accepted = accept(signal, media, data)
        if accepted.items and not self.sink.offer(signal, accepted.payload, accepted.items):
            raise IngestError(503, "capture buffer full; retry later")
        return accepted

    # -- HTTP -------------------------------------------------------------------------------

    def _start_http(self, host: str, port: int) -> None:
        loop = asyncio.new_event_loop()
        started = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                # asyncio accepts up to `backlog` connections per wake-up, before the closes of the
                # idle ones evicted for them run; a small batch keeps that inside the descriptors
                # `connection_cap` holds in reserve. The kernel's queue is then raised to 1024.
                server = loop.run_until_complete(
                    loop.create_server(lambda: _HttpProtocol(self), host, port, backlog=_ACCEPT_BATCH,
                                       reuse_address=True)
                )
                for listening in server.sockets:
                    with socket.socket(fileno=os.dup(listening.fileno())) as dup:
                        dup.listen(1024)
            except BaseException as e:  # surfaced to start() below
                error.append(e)
                started.set()
                return
            self.http_port = server.sockets[0].getsockname()[1]
            self._http_server = server
            started.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                loop.run_until_complete(server.wait_closed())
                loop.close()

        thread = threading.Thread(target=run, name="otlp-http", daemon=True)
        thread.start()
        started.wait()
        if error:
            raise OSError(f"cannot listen for OTLP/HTTP on {host}:{port}: {error[0]}") from error[0]
        self._loop, self._http_thread = loop, thread

    def http_response(self, path: str, method: bytes, headers: dict[bytes, bytes], body: bytes) -> tuple[int, bytes]:
        """(status, the complete HTTP/1.1 response bytes) for one fully read request."""
        status, media, payload, extra = self._http_handle(path, method, headers, body)
        self._count(str(status))
        return status, _http_bytes(status, media, payload, extra, keep_alive=True)

    def http_precheck(self, path: str, method: bytes, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        """Reject before the body is read: wrong path/method, bad token, unknown type."""
        if path not in _PATHS:
            return 404, f"unknown path {path!r}; OTLP/HTTP paths are /v1/traces and /v1/metrics"
        if method != b"POST":
            return 405, "OTLP/HTTP accepts POST only"
        if not self.authorized(headers.get(b"authorization")):
            return 401, "missing or invalid bearer token"
        if media_type(_hdr(headers, b"content-type")) is None:
            return 415, "Content-Type must be application/x-protobuf or application/json"
        return None

    def _http_handle(
        self, path: str, method: bytes, headers: dict[bytes, bytes], body: bytes
    ) -> tuple[int, str, bytes, list[tuple[str, str]]]:
        pre = self.http_precheck(path, method, headers)
        media = media_type(_hdr(headers, b"content-type")) or "text/plain"
        if pre is not None:
            status, message = pre
            return status, *_error_body(media, message), _extra_for(status, self)
        signal = _PATHS[path]
        try:
            accepted = self.ingest(signal, media, _hdr(headers, b"content-encoding"), body)
        except IngestError as e:
            return e.status, *_error_body(media, e.message), _extra_for(e.status, self)
        return 200, media, _success_body(signal, media, accepted), []

    # -- gRPC -------------------------------------------------------------------------------

    def _start_grpc(self, host: str, port: int) -> None:
        cfg = self.config
        server = grpc.server(
            ThreadPoolExecutor(max_workers=cfg.grpc_workers, thread_name_prefix="otlp-grpc"),
            options=[
                # gRPC applies this to the decompressed message and answers RESOURCE_EXHAUSTED.
                ("grpc.max_receive_message_length", cfg.max_decompressed_bytes),
                ("grpc.so_reuseport", 0),
                # The same bounds as HTTP: a connection that never completes its handshake, or
                # stays idle, is closed instead of holding a descriptor.
                ("grpc.server_handshake_timeout_ms", int(cfg.request_timeout_s * 1000)),
                ("grpc.max_connection_idle_ms", int(cfg.idle_timeout_s * 1000)),
            ],
        )
        # Registered with the request left as bytes (no deserializer) so a request is parsed once,
        # by the same validation as HTTP, and stored without re-serializing; a malformed one gets
        # INVALID_ARGUMENT rather than the INTERNAL a failing stub deserializer would produce.
        for signal, service, response in (
            (TRACES, trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"],
             trace_service_pb2.ExportTraceServiceResponse),
            (METRICS, metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"],
             metrics_service_pb2.ExportMetricsServiceResponse),
        ):
            handler = grpc.unary_unary_rpc_method_handler(
                functools.partial(self.grpc_export, signal), response_serializer=response.SerializeToString
            )
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, {"Export": handler}),))
        bound = server.add_insecure_port(f"{_url_host(host)}:{port}")
        if bound == 0:
            raise OSError(f"cannot listen for OTLP/gRPC on {host}:{port}")
        server.start()
        self.grpc_port, self._grpc = bound, server

    def grpc_export(self, signal: str, raw: bytes, context: grpc.ServicerContext) -> Any:
        """One OTLP/gRPC Export call (request as bytes); the Export*ServiceResponse."""
        md = dict(context.invocation_metadata())
        if not self.authorized(md.get("authorization")):
            self._count("UNAUTHENTICATED")
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        try:
            accepted = self.ingest(signal, PROTOBUF, None, raw)
        except IngestError as e:
            if e.status == 503:
                self._grpc_full(context)
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if e.status == 413 else grpc.StatusCode.INVALID_ARGUMENT
            self._count(code.name)
            context.abort(code, e.message)
        self._count("OK")
        if signal == TRACES:
            return _trace_response(accepted)
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def _grpc_full(self, context: grpc.ServicerContext) -> None:
        delay = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=self.sink.retry_after_s()))
        detail = AnyProto()
        detail.Pack(delay)
        status = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message="capture buffer full; retry later")
        status.details.append(detail)
        # The standard place for RetryInfo is grpc-status-details-bin; the Python exporter reads
        # google.rpc.retryinfo-bin, so send both.
        context.set_trailing_metadata(
            (
                ("grpc-status-details-bin", status.SerializeToString()),
                ("google.rpc.retryinfo-bin", delay.SerializeToString()),
            )
        )
        self._count("UNAVAILABLE")
        context.abort(grpc.StatusCode.UNAVAILABLE, status.message)


def _trace_response(accepted: Accepted) -> trace_service_pb2.ExportTraceServiceResponse:
    resp = trace_service_pb2.ExportTraceServiceResponse()
    if accepted.rejected:
        resp.partial_success.rejected_spans = accepted.rejected
        resp.partial_success.error_message = accepted.message
    return resp


def _success_body(signal: str, media: str, accepted: Accepted) -> bytes:
    if signal == TRACES:
        resp: Any = _trace_response(accepted)
    else:
        resp = metrics_service_pb2.ExportMetricsServiceResponse()
    if media == PROTOBUF:
        return resp.SerializeToString()
    return json_format.MessageToJson(resp, indent=None).encode()


def _error_body(media: str, message: str) -> tuple[str, bytes]:
    """A google.rpc.Status in the request's encoding, as the spec asks for failed requests."""
    status = status_pb2.Status(message=message)
    if media == PROTOBUF:
        return PROTOBUF, status.SerializeToString()
    if media == JSON:
        return JSON, json_format.MessageToJson(status, indent=None).encode()
    return "text/plain; charset=utf-8", message.encode()


def _extra_for(status: int, receiver: OtlpReceiver) -> list[tuple[str, str]]:
    if status in (429, 503):
        return [("Retry-After", str(receiver.sink.retry_after_s()))]
    if status == 405:
        return [("Allow", "POST")]
    if status == 401:
        return [("WWW-Authenticate", 'Bearer realm="profile-first"')]
    return []


_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 411: "Length Required", 413: "Content Too Large", 415: "Unsupported Media Type",
    429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
}


def _http_bytes(status: int, media: str, body: bytes, extra: list[tuple[str, str]], keep_alive: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        f"Content-Type: {media}",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in extra]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _hdr(headers: dict[bytes, bytes], name: bytes) -> str | None:
    v = headers.get(name)
    return v.decode("latin-1") if v is not None else None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class _HttpProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 server side: keep-alive, Content-Length and chunked bodies.

    After an early rejection (e.g. 413 on a declared length) the declared body is read and
    discarded rather than the socket being closed at once: closing with unread data makes the
    kernel send RST, and the client would see "connection reset" instead of our status.
    """

    __slots__ = ("_r", "_t", "_buf", "_head", "_need", "_chunked", "_body", "_discard", "_close_after", "_early",
                 "_timer", "_busy")

    def __init__(self, receiver: OtlpReceiver) -> None:
        self._r = receiver
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False  # a request has started arriving and is not answered yet
        self._t: asyncio.Transport | None = None
        self._buf = bytearray()
        self._head: tuple[str, bytes, dict[bytes, bytes], bool] | None = None
        self._need = 0  # body bytes still expected (Content-Length)
        self._chunked = False
        self._body: list[bytes] = []
        self._discard = False  # body of an already-answered request: drop it
        self._close_after = False
        self._early: bytes | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._t = transport  # type: ignore[assignment]
        r = self._r
        if len(r._connections) >= r._max_connections:
            if not r._idle:  # every connection is mid-request, each bounded by the request timeout
                r._count("503")
                transport.write(_http_bytes(503, "text/plain; charset=utf-8", b"too many connections; retry later",
                                            [("Retry-After", "1")], keep_alive=False))
                transport.close()
                self._t = None
                return
            oldest = next(iter(r._idle))
            oldest.close()
            oldest.connection_lost(None)  # bookkeeping now; the transport's own call is then a no-op
            r.evicted += 1
        r._connections[self] = None
        self._idle_phase()

    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _idle_phase(self) -> None:
        self._busy = False
        self._r._idle[self] = None
        self._arm(self._r.config.idle_timeout_s)

    def _request_phase(self) -> None:
        self._busy = True
        self._r._idle.pop(self, None)
        self._arm(self._r.config.request_timeout_s)

    def _expire(self) -> None:
        self._timer = None
        if self._busy:
            self._send(408, f"request not complete within {self._r.config.request_timeout_s:g} s", keep_alive=False)
        self.close()

    def close(self) -> None:
        if self._t is not None:
            self._t.close()

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            self._request_phase()
        self._buf += data
        try:
            while self._t is not None and not self._t.is_closing():
                if self._head is None:
                    if not self._read_head():
                        return
                if self._chunked:
                    body = self._read_chunked()
                else:
                    body = self._read_fixed()
                if body is None:
                    return
                self._finish(body)
        except _Abort as a:
            self._send(a.status, a.message, keep_alive=False)
        except Exception:  # a bug must cost one request, not the listener
            _log.exception("OTLP/HTTP request failed")
            self._send(500, "internal error in the receiver", keep_alive=False)

    def _read_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > _MAX_HEADER_BYTES:
                raise _Abort(431, "request headers too large")
            return False
        head = bytes(self._buf[:end])
        del self._buf[: end + 4]
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise _Abort(400, "malformed HTTP request line")
        method, target, version = parts
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise _Abort(400, "malformed HTTP header")
            headers[name.strip().lower()] = value.strip()
        conn = headers.get(b"connection", b"").lower()
        keep_alive = conn != b"close" if version == b"HTTP/1.1" else conn == b"keep-alive"
        path = target.split(b"?", 1)[0].decode("latin-1")
        self._head = (path, method, headers, keep_alive)
        self._body = []
        self._close_after = not keep_alive
        max_bytes = self._r.config.max_request_bytes
        te = headers.get(b"transfer-encoding", b"").lower()
        if te:
            if te != b"chunked":
                raise _Abort(501 if te else 400, "unsupported Transfer-Encoding")
            self._chunked, self._need = True, 0
        else:
            self._chunked = False
            length = headers.get(b"content-length")
            if length is None:
                if method not in (b"GET", b"HEAD"):
                    raise _Abort(411, "Content-Length required")
                length = b"0"
            if not length.isdigit():  # int() would take "-5", "+5", " 5" and "5_0"
                raise _Abort(400, "malformed Content-Length")
            self._need = int(length)
        # Answer early when the headers alone decide, then swallow the body (see class doc).
        pre = self._r.http_precheck(path, method, headers)
        if pre is None and not self._chunked and self._need > max_bytes:
            pre = (413, f"request body of {self._need} bytes exceeds the limit of {max_bytes} bytes")
            if self._need > _MAX_DISCARD_FACTOR * max_bytes:
                self._close_after = True  # not worth reading that much just to keep the connection
        self._discard = pre is not None
        if pre is None and headers.get(b"expect", b"").lower() == b"100-continue":
            assert self._t is not None
            self._t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if pre is not None:
            status, message = pre
            media = media_type(_hdr(headers, b"content-type")) or "text/plain"
            ctype, body = _error_body(media, message)
            self._r._count(str(status))
            self._early = _http_bytes(status, ctype, body, _extra_for(status, self._r), keep_alive=not self._close_after)
            if self._close_after and not self._chunked and self._need > _MAX_DISCARD_FACTOR * max_bytes:
                assert self._t is not None
                self._t.write(self._early)
                self._t.close()
                return False
        return True

    def _read_fixed(self) -> bytes | None:
        if len(self._buf) < self._need:
            if self._discard:  # do not hold a body we will not use
                self._need -= len(self._buf)
                self._buf.clear()
            return None
        body = bytes(self._buf[: self._need])
        del self._buf[: self._need]
        return body

    def _read_chunked(self) -> bytes | None:
        max_bytes = self._r.config.max_request_bytes
        while True:
            if self._need > 0:  # inside a chunk's data (+ its CRLF)
                if len(self._buf) < self._need:
                    return None
                if not self._discard:
                    self._body.append(bytes(self._buf[: self._need - 2]))
                del self._buf[: self._need]
                self._need = 0
                continue
            eol = self._buf.find(b"\r\n")
            if eol < 0:
                return None
            line = bytes(self._buf[:eol]).split(b";", 1)[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                raise _Abort(400, "malformed chunk size") from None
            if size == 0:
                end = self._buf.find(b"\r\n\r\n", eol) if self._buf[eol : eol + 4] != b"\r\n\r\n" else eol
                if end < 0:
                    return None
                del self._buf[: end + 4]
                return b"".join(self._body)
            del self._buf[: eol + 2]
            if sum(map(len, self._body)) + size > max_bytes:
                raise _Abort(413, f"request body exceeds the limit of {max_bytes} bytes")
            self._need = size + 2

    def _finish(self, body: bytes) -> None:
        assert self._head is not None and self._t is not None
        path, method, headers, _ = self._head
        self._head = None
        if self._early is not None:
            response, self._early = self._early, None
        else:
            _, response = self._r.http_response(path, method, headers, body)
        self._t.write(response)
        if self._close_after:
            self._t.close()
        elif self._buf:  # a pipelined request has already started
            self._request_phase()
        else:
            self._idle_phase()

    def _send(self, status: int, message: str, keep_alive: bool) -> None:
        if self._t is None or self._t.is_closing():
            return
        self._r._count(str(status))
        self._t.write(_http_bytes(status, "text/plain; charset=utf-8", message.encode(), [], keep_alive))
        if not keep_alive:
            self._t.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._t = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._r._connections.pop(self, None)
        self._r._idle.pop(self, None)


class _Abort(Exception):
    """A protocol-level error after which the connection cannot be reused."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message
