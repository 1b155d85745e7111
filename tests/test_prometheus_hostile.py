"""Prometheus that misbehaves, and service names that are hostile: a real Prometheus (backfilled
with promtool) behind a loopback proxy that injects what a real one will not do on demand
(echoing credentials, malformed rows), and the command line's answers to bad settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from analyzer.model.signals import Signal
from collectors.prometheus import PromConfig, PrometheusRejected, collect
from tests.misbehaving import Misbehaving, Request, reply
from tests.prom import OpenMetrics, Window, prometheus_with

pytestmark = pytest.mark.prometheus
ROOT = Path(__file__).resolve().parents[1]
# Names a service can have once traces are attacker-controlled: regex and PromQL metacharacters.
HOSTILE = ["a.b", "a|b", 'x"y', ".*", "back\\slash", "paren)(", "dollar$1", "tab\there", "new\nline", "ünï{code}"]
DECOYS = ["aXb", "a", "b", "xy", "anything"]


@pytest.fixture(scope="module")
def window() -> Window:
    return Window.recent(hours=1.0, lead=600.0)


@pytest.fixture(scope="module")
def span(window: Window) -> tuple[float, float]:
    return window.start + 600.0, window.end


@pytest.fixture(scope="module")
def prom(window: Window):
    om = OpenMetrics(window)
    for i, name in enumerate(HOSTILE + DECOYS):
        om.counter("process_cpu_seconds_total", {"job": name, "instance": f"h{i}:9100"}, 0.01 * (i + 1))
        om.gauge("go_sched_gomaxprocs_threads", {"job": name, "instance": f"h{i}:9100"}, i + 1)
    with prometheus_with(om.text()) as server:
        yield server


def forward(upstream: str, req: Request, sock) -> None:
    r = requests.post(upstream + req.path, data=req.body, timeout=30,
                      headers={"Content-Type": req.headers.get("content-type", "")})
    reply(sock, r.status_code, r.content)


def spying(upstream: str, seen: list[Request]):
    def handle(req: Request, sock) -> None:
        seen.append(req)
        forward(upstream, req, sock)
    return handle


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("PROFILE_FIRST_PROM_")}
    return subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={**full, **(env or {})})


def test_hostile_service_names_select_exactly_their_own_series(prom, span) -> None:
    seen: list[Request] = []
    with Misbehaving(spying(prom.url, seen)) as proxy:
        sig = collect(proxy.url, HOSTILE, *span, PromConfig(retries=0))
    assert sig.failures == []
    for i, name in enumerate(HOSTILE):
        s = sig.services[name].series[Signal.CPU_CORES_USED]
        assert np.allclose(s.v, 0.01 * (i + 1), rtol=1e-6), name  # not a decoy's, not a sum with one
        assert np.allclose(sig.services[name].series[Signal.CPU_CORES_AVAILABLE].v, i + 1)
    assert set(sig.services) == set(HOSTILE)
    # Sent as POST forms, each selector carrying the service matcher.
    assert all(r.method == "POST" and r.path == "/api/v1/query_range" for r in seen)
    assert all("a\\\\.b" in r.form["query"] for r in seen)  # a.b escaped for RE2, then for PromQL


def test_service_matcher_is_in_every_selector(prom, span) -> None:
    seen: list[Request] = []
    with Misbehaving(spying(prom.url, seen)) as proxy:
        collect(proxy.url, ["a.b"], *span, PromConfig(retries=0))
    import re

    for r in seen:
        selectors = re.findall(r"[a-z_]*\{[^{}]*\}", r.form["query"])
        assert selectors and all('=~"a\\\\.b"' in s for s in selectors), r.form["query"][:400]


ECHO_SECRETS = {"token": "tok-file-secret-9876", "key": "k3y-header-secret", "cookie": "c00kie-value-1234"}


def test_echoed_credentials_never_reach_stderr_or_the_report(prom, span, tmp_path: Path) -> None:
    """A server that echoes the request's headers in its error bodies (some gateways do)."""

    def echo(req, sock):
        q = req.form.get("query", "")
        if "count by (__name__" in q:
            forward(prom.url, req, sock)
            return
        dump = json.dumps({"status": "error", "errorType": "bad_data",
                           "error": f"denied; you sent {req.headers} and {req.body[:200]!r}"})
        reply(sock, 400, dump.encode())

    token_file = tmp_path / "token"
    token_file.write_text(ECHO_SECRETS["token"] + "\n")
    out = tmp_path / "report.json"
    with Misbehaving(echo) as srv:
        p = run_cli("analyze", "--prometheus", srv.url, "--start", str(span[0]), "--end", str(span[1]),
                    "--service", "a.b", "--token-file", str(token_file),
                    "--header", f"X-Api-Key={ECHO_SECRETS['key']}", "--header", f"Cookie=sid={ECHO_SECRETS['cookie']}",
                    "--format", "json", "--output", str(out), "--retries", "0")
        assert srv.seen[0].headers["authorization"] == f"Bearer {ECHO_SECRETS['token']}"
    assert p.returncode == 0, p.stderr
    report = out.read_text()
    missing = json.loads(report)["input"]["missing_evidence"]
    assert missing and any("REDACTED" in json.dumps(m) for m in missing)
    for secret in ECHO_SECRETS.values():
        assert secret not in report and secret not in p.stderr and secret not in p.stdout


def test_basic_auth_password_is_redacted_from_missing_evidence(prom, span, monkeypatch) -> None:
    def echo(req, sock):
        if "count by (__name__" in req.form.get("query", ""):
            forward(prom.url, req, sock)
        else:
            reply(sock, 500, f"upstream said: {req.headers.get('authorization')} user=sre pass=hunter2-pw".encode())

    monkeypatch.setenv("PROFILE_FIRST_PROM_USER", "sre")
    monkeypatch.setenv("PROFILE_FIRST_PROM_PASSWORD", "hunter2-pw")
    with Misbehaving(echo) as srv:
        sig = collect(srv.url, ["a.b"], *span, PromConfig(retries=0))
    text = json.dumps([f.reason for f in sig.failures])
    assert sig.failures and "HTTP 500" in text
    assert "hunter2-pw" not in text and "c3JlOmh1bnRlcjItcHc=" not in text and "REDACTED" in text


@pytest.mark.parametrize("rows", [[1, 2], ["x"], [{"metric": "no"}], [{"metric": {"pf_service": "a.b"}, "values": 5}],
                                  [{"metric": {"pf_service": "a.b"}, "values": [[1, "x", 3]]}],
                                  [{"metric": {"pf_service": "a.b"}, "values": [[1, {"v": 1}]]}]])
def test_malformed_rows_are_missing_evidence(prom, span, rows) -> None:
    def bad(req, sock):
        if "count by (__name__" in req.form.get("query", ""):
            forward(prom.url, req, sock)
        else:
            reply(sock, 200, json.dumps({"status": "success", "data": {"resultType": "matrix", "result": rows}}).encode())

    with Misbehaving(bad) as srv:
        sig = collect(srv.url, ["a.b"], *span, PromConfig(retries=0))
    assert sig.failures and all("malformed answer" in f.reason for f in sig.failures)
    assert sig.services["a.b"].missing[Signal.CPU_CORES_USED].reason.startswith("query failed: malformed answer")


def test_malformed_discovery_and_deep_json_are_one_line_exit_2(span) -> None:
    answers = [b'{"status":"success","data":{"result":[7]}}', b"[" * 100_000 + b"]" * 100_000, b'"just a string"']
    for body in answers:
        with Misbehaving(lambda req, sock, body=body: reply(sock, 200, body)) as srv:
            with pytest.raises(PrometheusRejected):
                collect(srv.url, ["a.b"], *span, PromConfig(retries=0))
            p = run_cli("analyze", "--prometheus", srv.url, "--start", str(span[0]), "--end", str(span[1]),
                        "--retries", "0")
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
        assert srv.url in p.stderr


def test_bad_settings_are_refused_before_any_request(tmp_path: Path) -> None:
    with Misbehaving(lambda req, sock: reply(sock, 500, b"")) as srv:
        cases = [
            (["--step", "-5", "--window", "1h"], "--step must be a positive number"),
            (["--step", "0", "--window", "1h"], "--step must be a positive number"),
            (["--step", "0.001", "--window", "7d"], "cap of 1,000 requests"),
            (["--timeout", "-1", "--window", "1h"], "--timeout must be a positive"),
            (["--token-file", str(tmp_path / "nope"), "--window", "1h"], "cannot read the token file"),
        ]
        for args, expected in cases:
            p = run_cli("analyze", "--prometheus", srv.url, *args)
            assert p.returncode == 2, (args, p.stderr)
            assert expected in p.stderr and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
        assert srv.seen == []
    p = run_cli("analyze", "--prometheus", "http://127.0.0.1:9", "--step", "0.001", "--window", "7d")
    assert "the plan needs 54,98" in p.stderr and "max_requests" in p.stderr and "coarser --step" in p.stderr


def test_answer_over_the_size_limit_is_missing_evidence_naming_the_limit(prom, span) -> None:
    big = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"pf_service": "a.b"}, "values": [[1.0, "0.5"]] * 200_000}]}}).encode()

    def huge(req, sock):
        if "count by (__name__" in req.form.get("query", ""):
            forward(prom.url, req, sock)
        else:
            reply(sock, 200, big)

    with Misbehaving(huge) as srv:
        sig = collect(srv.url, ["a.b"], *span, PromConfig(retries=2, max_response_mb=1))
    reason = sig.services["a.b"].missing[Signal.CPU_CORES_USED].reason
    assert "exceeds the 1 MiB response limit" in reason and "max_response_mb" in reason
    assert len({r.body for r in srv.seen}) == len(srv.seen)  # none retried: it would be as large again


def test_a_refusal_echoing_the_token_is_one_redacted_line(span) -> None:
    def refuse(req, sock):
        reply(sock, 403, f"forbidden for {req.headers.get('authorization')} ({req.headers.get('x-api-key')})".encode())

    with Misbehaving(refuse) as srv:
        p = run_cli("analyze", "--prometheus", srv.url, "--start", str(span[0]), "--end", str(span[1]),
                    "--header", "X-Api-Key=k3y-in-refusal", env={"PROFILE_FIRST_PROM_TOKEN": "tok-in-refusal"})
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "HTTP 403" in p.stderr, p.stderr
    assert "tok-in-refusal" not in p.stderr and "k3y-in-refusal" not in p.stderr and "[REDACTED]" in p.stderr


def test_hundreds_of_services_pass_a_proxy_that_limits_urls_to_8_kb(prom, span) -> None:
    """nginx in front of Thanos or Mimir answers 414 past 8 KB of request line; queries go as forms."""
    seen: list[Request] = []
    forward_to_prom = spying(prom.url, seen)

    def proxy(req, sock):
        if len(req.path) > 8192:
            reply(sock, 414, b"<html>414 Request-URI Too Large</html>", ctype="text/html")
        else:
            forward_to_prom(req, sock)

    asked = [*HOSTILE, *(f"checkout-service-{i:04d}.shop.example.internal" for i in range(300))]
    with Misbehaving(proxy) as srv:
        sig = collect(srv.url, asked, *span, PromConfig(retries=0))
    assert sig.failures == [] and max(len(r.body) for r in seen) > 8192  # the query itself is long
    assert np.allclose(sig.services["a|b"].series[Signal.CPU_CORES_USED].v, 0.02, rtol=1e-6)
    assert "service not found" in sig.services["checkout-service-0007.shop.example.internal"].missing[
        Signal.CPU_CORES_USED].reason
