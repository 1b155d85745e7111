"""Pulling traces from Tempo, Jaeger and Zipkin query APIs (collectors/store_pull.py and the stores).

The stores are stand-ins on loopback (tests/store_standins.py) serving real traces in each
store's answer shapes: the Nezha traces (which came out of a real Tempo) and Zipkin's test data.
Each store is also run end to end from the command line.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analyzer.config import Config
from analyzer.pipeline import Inputs, analyze
from analyzer.report_schema import validate_report
from collectors.jaeger_api import Jaeger
from collectors.store_pull import StoreError, StoreSettings, pull
from collectors.tempo import Tempo
from collectors.zipkin_api import Zipkin
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


def test_tempo_end_to_end_samples_the_window_and_keeps_the_cart_delay(tempo, ob_traces, tmp_path: Path) -> None:
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
    # The same from the config file's [sources.tempo] (every setting but the window's bounds).
    config = tmp_path / "pf.toml"
    config.write_text(f'[sources.tempo]\nurl = "{tempo.url}"\nper_operation = 5\ntop_operations = 1\n')
    p = run("analyze", "--config", str(config), "--start", str(start), "--end", str(end), "--format", "json")
    assert p.returncode == 0, p.stderr
    sampling = json.loads(p.stdout)["input"]["sources"][0]["sampling"]
    assert sampling["selected"] == 10 and sampling["ranked"][0]["targeted"]


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


def _root_ms(trace: list) -> float:
    root = standins.root_of(trace)
    return (root.end_ns - root.start_ns) / 1e6


def _assert_tail_search_found_the_slowest(loaded, stratum: dict, traces: dict) -> None:
    """The minDuration search listed traces the capped first pass missed, the window's slowest
    trace among them, and every tail trace listed was pulled."""
    added = re.search(r"\((\d+) more tail traces listed\)", loaded.sources[0].sampling["ranked_by"])
    assert added and int(added.group(1)) >= 1  # the first pass alone missed some of the tail
    slowest = max(traces, key=lambda t: _root_ms(traces[t]))
    assert slowest in {bytes(x).hex() for x in loaded.table.trace_ids}
    assert stratum["tail"] >= 2 and stratum["tail_pulled"] == stratum["tail"]


def test_tempo_ranks_by_traceql_metrics_and_searches_the_tail_apart(ob_traces, tt_traces) -> None:
    """Two systems in one Tempo: Online Boutique's frontend (479 traces, p50 ~400 ms) and Train
    Ticket's gateway (41 traces, p50 ~170 ms). TraceQL metrics rank them over the whole window
    before any trace is listed; with `top_operations = 1` only the frontend is searched, its tail
    (above the window's p95) apart from its body, and the body search is cut by its limit."""
    both = {**ob_traces, **tt_traces}
    server = standins.tempo(both)
    try:
        starts = [standins.root_of(t).start_ns for t in both.values()]
        start, end = min(starts) // NS, max(starts) // NS + 2
        s = StoreSettings(url=server.url, top_operations=1, search_limit=100, min_slice_s=1, max_searches=3,
                          per_operation=10)
        loaded = pull(Tempo(s), s, start * NS, end * NS, None)
        metrics = [r.query["q"] for r in server.requests if r.path == "/api/metrics/query"]
        assert any("| rate() by (resource.service.name, name)" in q for q in metrics)
        assert any("quantile_over_time(duration, .5, .95, .99)" in q for q in metrics)
        sampling = loaded.sources[0].sampling
        assert sampling["ranked_by"].startswith("TraceQL metrics over the whole window")
        ranked = [(r["service"], r["operation"], r["count"], r["targeted"]) for r in sampling["ranked"]]
        assert ranked == [("frontend", "hipstershop.Frontend/Recv.", 479, True), ("ts-gateway-service", "/*", 41, False)]
        p95 = sampling["ranked"][0]["p95_ms"]
        assert p95 == pytest.approx(float(np.quantile([_root_ms(t) for t in ob_traces.values()], 0.95)), abs=0.001)
        searches = [r.query["q"] for r in server.requests if r.path == "/api/search"]
        assert searches and all('"frontend"' in q for q in searches)  # the gateway is never searched
        tail_q = [q for q in searches if "duration >" in q]
        body_q = [q for q in searches if "duration <=" in q]
        assert len(tail_q) == 1 and len(body_q) == 3  # the body came back full (100 of 455): split, 3 allowed
        # The tail search listed every trace above p95, all kept (under the cap of 10? no: 24 > 10).
        above = sum(1 for t in ob_traces.values() if _root_ms(t) > p95)
        (stratum,) = sampling["strata"]
        assert stratum["threshold_from"] == "store" and stratum["tail"] == above == 24
        assert stratum["population"] == 479 and stratum["considered"] < 479
        assert {bytes(x).hex() for x in loaded.table.trace_ids} <= set(ob_traces)
        report = analyze(Inputs(loaded.table, loaded.sources, loaded.repairs), Config())
        validate_report(report)
        (frontend,) = [x for x in report["services"] if x["service"] == "frontend"]
        assert frontend["hotspots"][0]["estimated_count"] == pytest.approx(479)
        assert "sampling_error" in frontend["hotspots"][0]
    finally:
        server.close()


@pytest.mark.parametrize("metrics", [False, "range"])
def test_tempo_without_instant_metrics(ob_traces, metrics) -> None:
    """A Tempo with only /api/metrics/query_range (2.4 to 2.6) ranks the same way through it; one
    without TraceQL metrics (404) ranks from the search results, and `input` says so."""
    server = standins.tempo(ob_traces, metrics=metrics)
    try:
        start, end = _window(ob_traces)
        s = StoreSettings(url=server.url, per_operation=10)
        loaded = pull(Tempo(s), s, start * NS, end * NS, None)
        sampling = loaded.sources[0].sampling
        if metrics == "range":
            ranged = [r for r in server.requests if r.path == "/api/metrics/query_range"]
            assert ranged and all(r.query["step"] == f"{end - start}s" for r in ranged)
            assert sampling["ranked"][0]["count"] == 479 and sampling["strata"][0]["threshold_from"] == "store"
        else:
            assert sampling["ranked_by"].startswith("search results (TraceQL metrics unavailable")
            assert "HTTP 404" in sampling["ranked_by"] and "ranked" not in sampling
            assert sampling["strata"][0]["threshold_from"] == "candidates"
            assert [r.query["q"] for r in server.requests if r.path == "/api/search"] == ["{}"]
    finally:
        server.close()


def test_tempo_service_that_is_never_a_root_is_searched_by_service(tempo, ob_traces) -> None:
    """cartservice only ever answers the frontend: no entry operation of its own to rank, so its
    traces are listed by a service search, and `input` says why."""
    start, end = _window(ob_traces)
    s = StoreSettings(url=tempo.url, per_operation=5)
    loaded = pull(Tempo(s), s, start * NS, end * NS, ["cartservice"])
    assert "not trace roots" in loaded.sources[0].sampling["ranked_by"]
    assert [r.query["q"] for r in tempo.requests if r.path == "/api/search"] == ['{resource.service.name="cartservice"}']
    assert "cartservice" in loaded.table.services


def test_pulling_reports_progress_per_trace(tempo, ob_traces) -> None:
    """The progress callback (the CLI's bar on a terminal) hears of every trace, ending at all of them."""
    start, end = _window(ob_traces)
    seen: list[tuple[int, int, str]] = []
    s = StoreSettings(url=tempo.url, per_operation=5, concurrency=3)
    loaded = pull(Tempo(s), s, start * NS, end * NS, None, progress=lambda d, t, what: seen.append((d, t, what)))
    pulled = loaded.sources[0].sampling["pulled"]
    assert seen[0] == (0, 1, "listing the window's traces")
    assert seen[-1] == (pulled, pulled, "traces") and len(seen) == pulled + 2  # listing, the start, one per trace
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)


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


@pytest.mark.parametrize("v3", [False, True])
def test_jaeger_searches_each_operation_and_pulls_the_tail_with_min_duration(tt_traces, v3) -> None:
    """Searches cut to the 3 most recent traces per (service, operation) miss most of the window;
    the second search per entry operation, minDuration just above the first pass's p95, lists the
    slow traces anyway, and the slowest trace of the window is pulled."""
    server = standins.jaeger(tt_traces, v3=v3)
    try:
        start, end = _window(tt_traces)
        s = StoreSettings(url=server.url, search_limit=3, min_slice_s=10**9, per_operation=3)
        loaded = pull(Jaeger(s), s, start * NS, end * NS, None)
        ops = [r for r in server.requests if r.path == "/api/v3/operations" or r.path.endswith("/operations")]
        services = {x.service for t in tt_traces.values() for x in t}
        assert len(ops) == len(services)
        searches = [r.query for r in server.requests if r.path in ("/api/traces", "/api/v3/traces")]
        op_key = "query.operation_name" if v3 else "operation"
        assert all(op_key in q for q in searches)
        min_key = "query.duration_min" if v3 else "minDuration"
        (tail,) = [q for q in searches if min_key in q]
        (stratum,) = loaded.sources[0].sampling["strata"]
        assert stratum["threshold_from"] == "store"
        want = f"{(int(stratum['threshold_ms'] * 1000) + 1) / 1e6:.6f}s" if v3 else f"{int(stratum['threshold_ms'] * 1000) + 1}us"
        assert tail[min_key] == want
        _assert_tail_search_found_the_slowest(loaded, stratum, tt_traces)
    finally:
        server.close()


def test_zipkin_searches_each_span_name_and_pulls_the_tail_with_min_duration(tt_traces) -> None:
    """Zipkin searches cut to the 3 most recent traces per (service, span name) miss most of the
    window; one more search per root operation, minDuration (microseconds) just above the first
    pass's p95, lists the slow traces anyway, and the slowest trace of the window is pulled."""
    server = standins.zipkin(tt_traces)
    try:
        start, end = _window(tt_traces)
        s = StoreSettings(url=server.url, search_limit=3, min_slice_s=10**9, per_operation=3)
        loaded = pull(Zipkin(s), s, start * NS, end * NS, ["ts-preserve-service"])
        names = {x.name.lower() for t in tt_traces.values() for x in t if x.service == "ts-preserve-service"}
        searches = [r.query for r in server.requests if r.path == "/api/v2/traces"]
        first = [q for q in searches if "minDuration" not in q]
        assert {q["spanName"] for q in first} == names and all(q["serviceName"] == "ts-preserve-service" for q in first)
        (tail,) = [q for q in searches if "minDuration" in q]
        (stratum,) = loaded.sources[0].sampling["strata"]
        assert stratum["threshold_from"] == "store"
        assert tail["minDuration"] == str(int(stratum["threshold_ms"] * 1000) + 1)
        assert tail["spanName"] == stratum["operation"]
        _assert_tail_search_found_the_slowest(loaded, stratum, tt_traces)
    finally:
        server.close()


@pytest.mark.parametrize("kind", ["jaeger", "zipkin"])
def test_jaeger_and_zipkin_retry_5xx_and_keep_credentials_on_their_host(tt_traces, kind, monkeypatch) -> None:
    """Two 503s on the searches are retried; a redirect to another host is followed without the token."""
    files = sorted(ZIPKIN.glob("*.json"))
    make = (lambda: standins.jaeger(tt_traces)) if kind == "jaeger" else (lambda: standins.zipkin(files))
    target = make()
    host_b = target.url.replace("127.0.0.1", "localhost")

    def redirect(req: standins.Request) -> standins.Answer:
        query = "&".join(f"{k}={v}" for k, v in req.query.items())
        return 307, {"Location": f"{host_b}{req.path}?{query}"}, b""

    front = standins.StandIn(redirect)
    target.fail_first["/api/traces" if kind == "jaeger" else "/api/v2/traces"] = 2
    try:
        monkeypatch.setenv("PROFILE_FIRST_TRACES_TOKEN", "s3cret-token-value")
        start, end = _window(tt_traces) if kind == "jaeger" else (1451606400, 1577836800)
        s = StoreSettings(url=front.url, per_operation=3, retries=3)
        store = Jaeger(s) if kind == "jaeger" else Zipkin(s)
        # One service each: a few dozen searches, each through the redirect.
        loaded = pull(store, s, start * NS, end * NS, ["ts-preserve-service" if kind == "jaeger" else "auth"])
        assert loaded.table.n_traces > 0
        assert all(r.headers.get("authorization") == "Bearer s3cret-token-value" for r in front.requests)
        assert target.requests and not any("authorization" in r.headers for r in target.requests)
        assert target.fail_first[next(iter(target.fail_first))] == 0  # both 503s were answered, then retried
    finally:
        front.close()
        target.close()


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
        # Searches are per service, and one without serviceName: envoy.json's spans name no service,
        # so only that search lists its trace; it is read and counted.
        spans = [s for f in files for s in json.loads(f.read_text())]
        by_trace: dict[str, list[dict]] = {}
        for span in spans:
            by_trace.setdefault(span["traceId"], []).append(span)
        unnamed = {t for t, ss in by_trace.items() if not any((x.get("localEndpoint") or {}).get("serviceName")
                                                              for x in ss)}
        assert len(unnamed) == 1
        assert source["sampling"]["considered"] == len(by_trace)
        assert source["sampling"]["traces_without_service"] == 1
        validate_report(report)
        assert report["input"]["spans"] + source["repaired"].get("merged_fragments", 0) == len(spans)
        searches = [r.query for r in server.requests if r.path == "/api/v2/traces"]
        assert sum("serviceName" not in q for q in searches) == 1
        # Asked for one service, the search without serviceName is not sent.
        n = len(server.requests)
        p = run("analyze", "--zipkin", server.url, "--service", "auth", *args)
        assert p.returncode == 0, p.stderr
        assert all("serviceName" in r.query for r in server.requests[n:] if r.path == "/api/v2/traces")
        assert "traces_without_service" not in json.loads(p.stdout)["input"]["sources"][0]["sampling"]
        config = tmp_path / "pf.toml"
        config.write_text(f'[sources.zipkin]\nurl = "{server.url}"\nper_operation = 5\n')
        p = run("analyze", "--config", str(config), *args)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["input"]["sources"][0]["format"] == "zipkin-api"
    finally:
        server.close()
