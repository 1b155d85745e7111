"""The receiver against clients that misbehave: requests that never end, idle connections by the
hundred under a low descriptor limit, lengths that are not lengths, JSON nested 100k deep. Each is
answered or cut in bounded time, and valid exports keep being answered."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

from collectors.capture import Capture
from collectors.receiver import OtlpReceiver, ReceiverConfig
from tests.test_receiver import PB, _good_request, _send_spans

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def receiver(tmp_path: Path):
    capture = Capture(tmp_path / "c.binpb").start()
    config = ReceiverConfig(http_port=0, grpc_port=None, request_timeout_s=1.0, idle_timeout_s=1.0)
    with OtlpReceiver(capture, config) as r:
        yield r
    capture.discard()


def raw(r: OtlpReceiver, data: bytes, wait: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", r.http_port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.mark.parametrize("length", [b"-5", b"+5", b"5_0", b" ", b"0x10", b"1e3"])
def test_a_length_that_is_not_a_length_is_400(receiver, length) -> None:
    answer = raw(receiver, b"POST /v1/traces HTTP/1.1\r\nContent-Type: application/x-protobuf\r\n"
                           b"Content-Length: " + length + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]
    assert requests.post(f"{receiver.http_endpoint}/v1/traces", data=_good_request(), headers=PB,
                         timeout=5).status_code == 200


def test_no_length_is_still_411(receiver) -> None:
    answer = raw(receiver, b"POST /v1/traces HTTP/1.1\r\nContent-Type: application/x-protobuf\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 411 ")


@pytest.mark.parametrize("path", ["/v1/traces", "/v1/metrics"])
def test_json_nested_100k_deep_is_400(receiver, path) -> None:
    for body in (b'{"resourceSpans":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                 b'{"resourceSpans":[{"resource":{"attributes":[{"key":"k","value":' +
                 b'{"arrayValue":{"values":[' * 30_000 + b"]}}" * 30_000 + b"}]}}]}"):
        resp = requests.post(receiver.http_endpoint + path, data=body, headers={"Content-Type": "application/json"},
                             timeout=30)
        assert resp.status_code == 400 and "nested too deeply" in resp.text, resp.text[:200]
    assert receiver.status_counts().get("500", 0) == 0
    assert requests.post(f"{receiver.http_endpoint}/v1/traces", data=_good_request(), headers=PB,
                         timeout=5).status_code == 200


def test_a_header_that_never_ends_is_cut_with_408(receiver) -> None:
    with socket.create_connection(("127.0.0.1", receiver.http_port), timeout=10) as s:
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nX-Slow: ")
        t = time.monotonic()
        answer = b""
        try:
            for _ in range(40):  # a byte every 0.1 s, for longer than the 1 s request timeout
                s.sendall(b"a")
                time.sleep(0.1)
        except OSError:
            pass  # the receiver closed the connection, as it should
        s.settimeout(5)
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - t < 3.5


def test_a_chunked_body_that_never_ends_is_cut_with_408(receiver) -> None:
    t = time.monotonic()
    answer = raw(receiver, b"POST /v1/traces HTTP/1.1\r\nContent-Type: application/x-protobuf\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - t < 3.0


def test_an_idle_keep_alive_connection_is_closed(receiver) -> None:
    with socket.create_connection(("127.0.0.1", receiver.http_port), timeout=10) as s:
        t = time.monotonic()
        assert s.recv(10) == b""  # closed by the receiver, with nothing to say
        assert 0.8 < time.monotonic() - t < 3.0


CHILD = textwrap.dedent("""
    import resource, sys, time
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), int(sys.argv[2])))
    from collectors.capture import Capture
    from collectors.receiver import OtlpReceiver, ReceiverConfig
    capture = Capture(sys.argv[1]).start()
    r = OtlpReceiver(capture, ReceiverConfig(http_port=0, grpc_port=None)).start()
    print(r.http_port, r._max_connections, flush=True)
    sys.stdin.readline()  # until the test is done (bounded by its timeout)
    r.stop()
    result = capture.close()
    print(result.spans, r.evicted, r.status_counts().get("200", 0), flush=True)
""")


def test_hundreds_of_idle_connections_under_a_low_descriptor_limit_do_not_starve_exports(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "c.binpb"), "160"], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    idle: list[socket.socket] = []
    try:
        port, cap = map(int, child.stdout.readline().split())
        assert cap < 160  # lowered below the descriptor limit
        for _ in range(400):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.3)
        endpoint = f"http://127.0.0.1:{port}/v1/traces"
        t = time.monotonic()
        sent = _send_spans(HttpSpanExporter(endpoint=endpoint, timeout=5), 300, "after-the-flood", batch=100)
        assert time.monotonic() - t < 10
        idle += [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(50)]
        sent |= _send_spans(HttpSpanExporter(endpoint=endpoint, timeout=5), 100, "second-wave", batch=100)
        out, err = child.communicate("done\n", timeout=30)
    finally:
        for s in idle:
            s.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    spans, evicted, ok = map(int, out.split())
    assert "Traceback" not in err and "out of system resource" not in err, err[-2000:]
    assert spans == len(sent) == 800  # 400 spans and their children, none refused
    assert ok >= 4 and evicted >= 400 - cap


def test_grpc_connections_that_never_speak_are_closed(tmp_path: Path) -> None:
    capture = Capture(tmp_path / "g.binpb").start()
    config = ReceiverConfig(http_port=None, grpc_port=0, request_timeout_s=1.0, idle_timeout_s=1.0)
    with OtlpReceiver(capture, config) as r:
        socks = [socket.create_connection(("127.0.0.1", r.grpc_port), timeout=10) for _ in range(20)]
        t = time.monotonic()
        for s in socks:
            with s:
                while s.recv(4096):  # whatever the server sends, then its close (a timeout fails the test)
                    pass
        assert time.monotonic() - t < 5  # gRPC's own default is 120 s
    capture.discard()
