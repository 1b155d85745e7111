"""The bounded transport against real misbehaving servers on loopback: every request ends by its
deadline, no answer grows past the cap, retries recover from 5xx, credentials never follow a
redirect to another origin and never appear in a message."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from collectors.http_client import HttpClient, Limits, Redactor, TransportError, header_secrets
from tests.misbehaving import Misbehaving, reply

ROOT = Path(__file__).resolve().parents[1]
OK = b'{"status":"success","data":{"resultType":"matrix","result":[]}}'


def head(sock, extra: str = "Content-Type: application/json\r\n") -> None:
    sock.sendall(f"HTTP/1.1 200 OK\r\n{extra}".encode())


def test_trickled_body_ends_at_the_deadline() -> None:
    def trickle(req, sock):
        head(sock, "Content-Length: 100000\r\n\r\n")
        for _ in range(400):  # 1 byte every 0.5 s: each read succeeds, the body never ends
            sock.sendall(b" ")
            time.sleep(0.5)

    with Misbehaving(trickle) as srv:
        client = HttpClient(srv.url, Limits(deadline_s=1.5, retries=0))
        t = time.monotonic()
        with pytest.raises(TransportError) as err:
            client.request("POST", "/api/v1/query_range", form={"query": "up"})
        took = time.monotonic() - t
    assert err.value.kind == "deadline" and "1.5 s deadline" in err.value.message
    assert 1.4 < took < 4.0


def test_trickled_headers_end_at_the_deadline() -> None:
    def trickle(req, sock):
        sock.sendall(b"HTTP/1.1 200 OK\r\n")
        for i in range(400):
            sock.sendall(f"X-{i}: y\r\n".encode())
            time.sleep(0.3)

    with Misbehaving(trickle) as srv:
        t = time.monotonic()
        with pytest.raises(TransportError, match="deadline"):
            HttpClient(srv.url, Limits(deadline_s=1.0, retries=1, backoff_s=0.01)).request("GET", "/")
        assert time.monotonic() - t < 5.0  # two attempts of 1 s each, plus backoff


def test_endless_body_is_cut_at_the_cap_in_bounded_memory(tmp_path: Path) -> None:
    def endless(req, sock):
        head(sock, "Transfer-Encoding: chunked\r\n\r\n")
        block = b"x" * 65536
        chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
        while not srv.stopping:
            sock.sendall(chunk)

    # In a child process, so its peak RSS is the client's alone.
    script = textwrap.dedent("""
        import resource, sys
        from collectors.http_client import HttpClient, Limits, TransportError
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            HttpClient(sys.argv[1], Limits(deadline_s=60, max_bytes=32 * 2**20, retries=2)).request("GET", "/")
        except TransportError as e:
            print(e.kind, e.attempts, e.message)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)
    """)
    with Misbehaving(endless) as srv:
        p = subprocess.run([sys.executable, "-c", script, srv.url], capture_output=True, text=True, cwd=ROOT,
                           timeout=120)
    assert p.returncode == 0, p.stderr
    first, growth = p.stdout.splitlines()
    assert first.startswith("too_large 1 ")  # not retried: it would be as large again
    assert "32 MiB response limit" in first
    assert int(growth) < 32 + 80  # MiB: the cap plus the join, not the stream


def test_declared_size_over_the_cap_is_refused_before_reading() -> None:
    def declare(req, sock):
        head(sock, f"Content-Length: {500 * 2**20}\r\n\r\n")
        sock.recv(1)  # no body byte, and the connection open until the client closes it

    # A client that started reading the body would fail by its deadline, or by the server's timeout
    # (10 s) as a cut body: neither is "too_large".
    with Misbehaving(declare) as srv:
        with pytest.raises(TransportError) as err:
            HttpClient(srv.url, Limits(deadline_s=20, max_bytes=2**20, retries=0)).request("GET", "/")
    assert err.value.kind == "too_large" and "declares 524,288,000 bytes" in err.value.message


def test_gzip_bomb_is_cut_on_the_decoded_size() -> None:
    bomb = gzip.compress(b"\0" * (64 * 2**20), compresslevel=9)  # 64 MiB in ~64 KB
    assert len(bomb) < 2**20

    def serve(req, sock):
        reply(sock, 200, bomb, extra={"Content-Encoding": "gzip"})

    with Misbehaving(serve) as srv:
        with pytest.raises(TransportError) as err:
            HttpClient(srv.url, Limits(max_bytes=4 * 2**20, retries=0)).request("GET", "/")
    assert err.value.kind == "too_large"


def test_5xx_then_ok_is_retried_with_backoff() -> None:
    def flaky(req, sock):
        if len(srv.seen) <= 2:
            reply(sock, 503, b'{"status":"error"}', extra={"Retry-After": "0"})
        else:
            reply(sock, 200, OK)

    with Misbehaving(flaky) as srv:
        client = HttpClient(srv.url, Limits(retries=3, backoff_s=0.05))
        resp = client.request("POST", "/api/v1/query_range", form={"query": "up"})
    assert resp.status == 200 and json.loads(resp.body)["status"] == "success"
    assert client.attempts == 3 and all(r.form == {"query": "up"} for r in srv.seen)


def test_last_5xx_is_returned_after_the_retries() -> None:
    with Misbehaving(lambda req, sock: reply(sock, 502, b"bad gateway")) as srv:
        resp = HttpClient(srv.url, Limits(retries=2, backoff_s=0.01)).request("GET", "/")
        assert resp.status == 502 and len(srv.seen) == 3


def test_credentials_never_follow_a_redirect_to_another_origin() -> None:
    secret_headers = {"Authorization": "Bearer tok-123456", "Cookie": "session=c00kie-99", "X-Api-Key": "k3y-abcdef",
                      "X-Scope-OrgID": "shop"}
    with Misbehaving(lambda req, sock: reply(sock, 200, OK)) as other, \
            Misbehaving(lambda req, sock: reply(sock, 200, OK)) as same_target:
        def redirect(req, sock):
            where = other.url if req.path.startswith("/away") else "/api/v1/query_range?here=1"
            if req.path.startswith("/api/v1/query_range?here"):
                reply(sock, 200, OK)
            else:
                reply(sock, 307, b"", extra={"Location": where + "/api/v1/query_range" if "away" in req.path else where})

        with Misbehaving(redirect) as first:
            client = HttpClient(first.url, headers=secret_headers, auth=None)
            assert client.request("POST", "/away", form={"query": "up"}).status == 200
            assert client.request("POST", "/stay", form={"query": "up"}).status == 200
        # Another port is another origin: nothing configured goes there, the form still does.
        (moved,) = other.seen
        assert not {"authorization", "cookie", "x-api-key", "x-scope-orgid"} & set(moved.headers)
        assert moved.method == "POST" and moved.form == {"query": "up"}
        # The same origin keeps its headers across the redirect.
        stayed = [r for r in first.seen if r.path.startswith("/api/v1/query_range?here")]
        assert stayed and stayed[0].headers["authorization"] == "Bearer tok-123456"
        assert not same_target.seen


def test_unreachable_and_redirect_loops_are_one_line_errors() -> None:
    with Misbehaving(lambda req, sock: reply(sock, 302, b"", extra={"Location": "/again"})) as srv:
        with pytest.raises(TransportError, match="more than 5 redirects"):
            HttpClient(srv.url, Limits(retries=0)).request("GET", "/")
    port = srv.port  # closed now
    with pytest.raises(TransportError) as err:
        HttpClient(f"http://127.0.0.1:{port}", Limits(retries=1, backoff_s=0.01)).request("GET", "/")
    assert err.value.kind == "connect" and err.value.attempts == 2 and "\n" not in err.value.message


def test_redactor_hides_every_form_of_a_secret() -> None:
    secrets = header_secrets({"Authorization": "Basic c3JlOmh1bnRlcjI=", "X-Api-Key": "k3y/with+chars",
                              "X-Scope-OrgID": "shop", "Cookie": "a=b1234567; sid=zzzz9999"})
    red = Redactor(secrets)
    text = ("echo: Basic c3JlOmh1bnRlcjI= hunter2 k3y/with+chars k3y%2Fwith%2Bchars k3y%2Fwith+chars "
            "sid=zzzz9999 tenant shop")
    out = red(text)
    for s in ("c3JlOmh1bnRlcjI", "hunter2", "k3y", "zzzz9999", "b1234567"):
        assert s not in out, (s, out)
    assert "tenant shop" in out  # a tenant id is routing, not a secret
