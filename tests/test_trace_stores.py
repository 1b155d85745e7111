"""Pulling traces from Tempo, Jaeger and Zipkin query APIs (collectors/store_pull.py and the stores).

The stores are stand-ins on loopback (tests/store_standins.py) serving real traces in each
store's answer shapes: the Nezha traces (which came out of a real Tempo) and Zipkin's test data.
Each store is also run end to end from the command line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.config import Config
from analyzer.pipeline import Inputs, analyze
from collectors.jaeger_api import Jaeger
from collectors.store_pull import StoreError, StoreSettings, pull
from collectors.tempo import Tempo
from tests import store_standins as standins
from tests.shared_data import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
OB_CART_DELAY = SHARED_DATA / "nezha/rca_data/2022-08-22/trace/04_28_trace.csv"
TT_CONTACTS_DELAY = SHARED_DATA / "nezha/rca_data/2023-01-30/trace/11_52_trace.csv"
ZIPKIN = SHARED_DATA / "zipkin-lens-testdata"
NS = 10**9


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=180, env=env)


def _window(traces: dict) -> tuple[int, int]:
    starts = [standins.root_of(t).start_ns for t in traces.values()]
    return min(starts) // NS, max(starts) // NS + 2


@pytest.fixture(scope="module")
def ob_traces():
    return standins.nezha_spans(OB_CART_DELAY)


@pytest.fixture(scope="module")
def tt_traces():
    return standins.nezha_spans(TT_CONTACTS_DELAY)


@pytest.fixture
def tempo(ob_traces):
    server = standins.tempo(ob_traces)
    yield server
    server.close()


def _cart_finding(report: dict) -> dict:
    (frontend,) = [s for s in report["services"] if s["service"] == "frontend"]
    (hot,) = [h for h in frontend["hotspots"] if h["operation"] == "hipstershop.Frontend/Recv."]
    return next(f for f in hot["findings"] if f["rule"] == "PF-NET001" and "on cartservice" in f["message"])


def test_tempo_end_to_end_samples_the_window_and_keeps_the_cart_delay(tempo, ob_traces) -> None:
    start, end = _window(ob_traces)
    p = run("analyze", "--tempo", tempo.url, "--start", str(start), "--end", str(end), "--per-operation", "20",
            "--format", "json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    (source,) = report["input"]["sources"]
    assert source["format"] == "tempo-api"
    sampling = source["sampling"]
    assert sampling["considered"] == len(ob_traces) == 479
    assert sampling["population"] == 479  # TraceQL metrics' count per root operation agrees with the search
    assert sampling["selected"] == sampling["pulled"] < 479
    assert "p95" in sampling["method"]
    # The sample keeps the network-delay fact: calls into cart are mostly wire gap.
    cart = _cart_finding(report)
    ev = {e["signal"]: e["value"] for e in cart["evidence"]}
    assert ev["gap_time_per_request"] > 10 * ev["downstream_server_time_per_request"]
    (frontend,) = [s for s in report["services"] if s["service"] == "frontend"]
    hot = frontend["hotspots"][0]
    assert hot["count"] <= 40 and hot["estimated_count"] == pytest.approx(479)
    # Traces came as protobuf by id; one search, one metrics query.
    fetches = [r for r in tempo.requests if r.path.startswith("/api/traces/")]
    assert len(fetches) == sampling["pulled"] and all(r.headers["accept"] == "application/protobuf" for r in fetches)


def test_tempo_weighted_sample_matches_the_whole_window(tempo, ob_traces) -> None:
    """The figures of a sample (tail whole, body thinned, weights from the store's counts) against
    the figures of every trace: shares and the request count agree, p99 too."""
    start, end = _window(ob_traces)
    full = pull(Tempo(StoreSettings(url=tempo.url, per_operation=10_000)), StoreSettings(url=tempo.url, per_operation=10_000),
                start * NS, end * NS, None)
    settings = StoreSettings(url=tempo.url, per_operation=15)
    sample = pull(Tempo(settings), settings, start * NS, end * NS, None)
    a = analyze(Inputs(full.table, full.sources, full.repairs), Config())
    b = analyze(Inputs(sample.table, sample.sources, sample.repairs), Config())
    ha = {(s["service"], h["operation"]): h for s in a["services"] for h in s["hotspots"]}
    hb = {(s["service"], h["operation"]): h for s in b["services"] for h in s["hotspots"]}
    key = ("frontend", "hipstershop.Frontend/Recv.")
    assert hb[key]["count"] < ha[key]["count"]
    assert hb[key]["estimated_count"] == pytest.approx(ha[key]["count"])
    assert hb[key]["category"] == ha[key]["category"] == "network"
    assert hb[key]["p99_ms"] == pytest.approx(ha[key]["p99_ms"], rel=0.1)
    assert hb[key]["total_ms"] == pytest.approx(ha[key]["total_ms"], rel=0.15)


def test_tempo_search_limit_splits_the_window_and_metrics_scale_the_weights(tempo, ob_traces) -> None:
    start, end = _window(ob_traces)
    settings = StoreSettings(url=tempo.url, search_limit=100, min_slice_s=1, max_searches=3, per_operation=5)
    loaded = pull(Tempo(settings), settings, start * NS, end * NS, None)
    searches = [r for r in tempo.requests if r.path == "/api/search"]
    assert len(searches) == 3 and all(r.query["limit"] == "100" for r in searches)
    # The first search came back full (100 of 479), so its window was split; 3 requests were allowed.
    spans = {(int(r.query["start"]), int(r.query["end"])) for r in searches}
    assert len(spans) == 3
    sampling = loaded.sources[0].sampling
    assert 100 <= sampling["considered"] < 479 and sampling["population"] == 479
    report = analyze(Inputs(loaded.table, loaded.sources, loaded.repairs), Config())
    (frontend,) = [s for s in report["services"] if s["service"] == "frontend"]
    assert frontend["hotspots"][0]["estimated_count"] == pytest.approx(479)


def test_tempo_tenant_retries_and_a_trace_too_slow_to_fetch(ob_traces) -> None:
    server = standins.tempo(ob_traces, tenant="shop", metrics=False)
    try:
        start, end = _window(ob_traces)
        with pytest.raises(StoreError, match="HTTP 401.*PROFILE_FIRST_TRACES_TOKEN"):
            s = StoreSettings(url=server.url)
            pull(Tempo(s), s, start * NS, end * NS, None)
        slow = next(iter(ob_traces))
        server.fail_first["/api/traces/"] = 2  # two 503s, then answers: retried
        server.delay_s[f"/api/traces/{slow}"] = 1.5
        s = StoreSettings(url=server.url, tenant="shop", timeout=0.7, retries=2, per_operation=10_000)
        loaded = pull(Tempo(s), s, start * NS, end * NS, None)
        (stats,) = loaded.sources
        assert stats.skipped["traces_not_fetched"] == 1 and slow in stats.errors[-1]
        assert loaded.table.n_traces == 478
        assert stats.sampling["pulled"] == 478 and stats.sampling["selected"] == 479
        assert any("no whole-window counts" in e for e in stats.errors)  # this Tempo has no TraceQL metrics
        assert all(r.headers.get("x-scope-orgid") == "shop" for r in server.requests[1:])
        # The others of its operation stand for the trace that could not be fetched.
        root = standins.root_of(ob_traces[slow])
        same = sum(1 for t in ob_traces.values() if (standins.root_of(t).service, standins.root_of(t).name)
                   == (root.service, root.name))
        report = analyze(Inputs(loaded.table, loaded.sources, loaded.repairs), Config())
        (svc,) = [x for x in report["services"] if x["service"] == root.service]
        (hot,) = [h for h in svc["hotspots"] if h["operation"] == root.name]
        assert hot["count"] == same - 1 and hot["estimated_count"] == pytest.approx(same)
    finally:
        server.close()


def test_a_redirect_to_another_host_gets_no_credentials(ob_traces, monkeypatch) -> None:
    target = standins.tempo(ob_traces)
    host_b = target.url.replace("127.0.0.1", "localhost")  # another origin: another host name

    def redirect(req: standins.Request) -> standins.Answer:
        query = "&".join(f"{k}={v}" for k, v in req.query.items())
        return 307, {"Location": f"{host_b}{req.path}?{query}"}, b""

    front = standins.StandIn(redirect)
    try:
        monkeypatch.setenv("PROFILE_FIRST_TRACES_TOKEN", "s3cret-token-value")
        start, end = _window(ob_traces)
        s = StoreSettings(url=front.url, per_operation=3)
        pull(Tempo(s), s, start * NS, end * NS, None)
        assert all(r.headers.get("authorization") == "Bearer s3cret-token-value" for r in front.requests)
        assert target.requests and not any("authorization" in r.headers for r in target.requests)
    finally:
        front.close()
        target.close()


def test_a_server_that_is_not_a_store_is_one_line_exit_2() -> None:
    server = standins.StandIn(lambda req: (404, {"Content-Type": "text/html"}, b"<!DOCTYPE html><p>nope</p>"))
    try:
        p = run("analyze", "--tempo", server.url, "--window", "1h")
        assert p.returncode == 2
        assert "HTTP 404" in p.stderr and "query URL" in p.stderr and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    finally:
        server.close()


def test_jaeger_legacy_end_to_end_pins_the_contacts_delay(tt_traces) -> None:
    server = standins.jaeger(tt_traces)
    try:
        start, end = _window(tt_traces)
        p = run("analyze", "--jaeger", server.url, "--start", str(start), "--end", str(end), "--format", "json")
        assert p.returncode == 0, p.stderr
        report = json.loads(p.stdout)
        (source,) = report["input"]["sources"]
        assert source["format"] == "jaeger-api" and source["sampling"]["considered"] == len(tt_traces)
        assert report["input"]["spans"] == sum(len(t) for t in tt_traces.values())  # every trace, under the caps
        (preserve,) = [s for s in report["services"] if s["service"] == "ts-preserve-service"]
        top = max((f for f in preserve["hotspots"][0]["findings"] if f["rule"] == "PF-NET001"), key=lambda f: f["share"])
        assert top["message"].startswith("Slow downstream: waiting on ts-contacts-service")
        assert any(r.path == "/api/v3/services" for r in server.requests)  # v3 tried first, 404: legacy
        assert {r.query.get("service") for r in server.requests if r.path == "/api/traces"} >= {"ts-preserve-service"}
    finally:
        server.close()


def test_jaeger_v3_reads_the_same_traces_as_legacy(tt_traces) -> None:
    start, end = _window(tt_traces)
    tables = []
    for v3 in (False, True):
        server = standins.jaeger(tt_traces, v3=v3)
        try:
            s = StoreSettings(url=server.url, per_operation=10_000)
            loaded = pull(Jaeger(s), s, start * NS, end * NS, ["ts-preserve-service"])
            tables.append(loaded.table)
            assert any(r.path == ("/api/v3/traces" if v3 else "/api/traces") for r in server.requests)
        finally:
            server.close()
    legacy, v3 = tables
    assert len(legacy) == len(v3) > 0 and legacy.n_traces == v3.n_traces
    assert sorted(legacy.services) == sorted(v3.services)


def test_zipkin_end_to_end_and_from_the_config(tmp_path: Path) -> None:
    files = sorted(ZIPKIN.glob("*.json"))
    server = standins.zipkin(files)
    try:
        args = ("--start", "2016-01-01T00:00:00Z", "--end", "2020-01-01T00:00:00Z", "--format", "json")
        p = run("analyze", "--zipkin", server.url, *args)
        assert p.returncode == 0, p.stderr
        report = json.loads(p.stdout)
        (source,) = report["input"]["sources"]
        assert source["format"] == "zipkin-api"
        # Searches are per service: envoy.json's span names no service, so no search lists it.
        entries = [s for f in files if f.name != "envoy.json" for s in json.loads(f.read_text())]
        assert source["sampling"]["considered"] == len({s["traceId"] for s in entries})
        assert report["input"]["spans"] + source["repaired"].get("merged_fragments", 0) == len(entries)
        config = tmp_path / "pf.toml"
        config.write_text(f'[sources.zipkin]\nurl = "{server.url}"\nper_operation = 5\n')
        p = run("analyze", "--config", str(config), *args)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["input"]["sources"][0]["format"] == "zipkin-api"
    finally:
        server.close()
