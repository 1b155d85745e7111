"""Network rules (PF-NET001..003) on traces of real HTTP calls between services on 127.0.0.1.

Each rule has a case that must fire and a near-miss that must not. Expected numbers are
recomputed from the recorded spans with plain `json` (tests.workloads.more.raw_spans).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from heuristics.registry import all_rules
from tests.workloads import more, network
from tests.workloads.more import analyze_hotspots, raw_spans, recorded, sequential_runs, sum_minus_max_ms

CLIENT, SERVER = 3, 2


@pytest.fixture(scope="module")
def untraced_downstream_jsonl(recordings_dir: Path) -> Path:
    return recorded("untraced-downstream", recordings_dir, more.downstream_call, latency_ms=(120.0, 160.0),
                    traced=False)


@pytest.fixture(scope="module")
def fast_downstream_jsonl(recordings_dir: Path) -> Path:
    return recorded("fast-downstream", recordings_dir, more.downstream_call, latency_ms=(1.0, 3.0), local_ms=30.0)


@pytest.fixture(scope="module")
def chatty_four_jsonl(recordings_dir: Path) -> Path:
    return recorded("chatty-four", recordings_dir, network.chatty_calls, calls=4)


def only(path: Path, service: str, operation: str):
    return analyze_hotspots([path])[(service, operation)]


# --- PF-NET001 slow downstream --------------------------------------------------------------


def test_slow_downstream_splits_server_time_from_gap_and_points_at_its_hot_spot(slow_downstream_jsonl: Path) -> None:
    a = only(slow_downstream_jsonl, "web", "GET /recommendations")
    (f,) = a.rule("PF-NET001")
    ev = {e.signal: e for e in f.evidence}
    traces = raw_spans(slow_downstream_jsonl)
    client = [s.ms for spans in traces.values() for s in spans if s.kind == CLIENT]
    server = [s.ms for spans in traces.values() for s in spans if s.service == "recommender"]
    assert ev["downstream_time_per_request"].value == pytest.approx(statistics.fmean(client), rel=0.01)
    assert ev["downstream_server_time_per_request"].value == pytest.approx(statistics.fmean(server), rel=0.01)
    assert ev["downstream_server_time_per_request"].source == "recommender GET /recs"
    gap = statistics.fmean(c - s for c, s in zip(client, server))
    assert ev["gap_time_per_request"].value == pytest.approx(gap, abs=0.05)
    assert ev["downstream_server_time_per_request"].value >= 120 and gap < 20
    assert f.share > 0.9 and "recommender" in f.message and "own server time" in f.message
    # The remedy points at the downstream's own hot spot and what its trace shows.
    assert "recommender `GET /recs`" in f.remedy and "self time" in f.remedy
    # The server time is the downstream's to fix (its own hot spot's findings carry that saving).
    assert f.saving_ms == 0


def test_slow_network_path_is_the_gap_and_claims_its_saving(wire_delay_jsonl: Path) -> None:
    """A 1-3 ms downstream behind a relay that holds each packet 20 ms each way."""
    a = only(wire_delay_jsonl, "web", "GET /recommendations")
    (f,) = a.rule("PF-NET001")
    ev = {e.signal: e for e in f.evidence}
    traces = raw_spans(wire_delay_jsonl)
    client = [s.ms for spans in traces.values() for s in spans if s.kind == CLIENT]
    server = [s.ms for spans in traces.values() for s in spans if s.service == "recommender"]
    gaps = [c - s for c, s in zip(client, server)]
    assert min(gaps) >= 40  # 20 ms each way
    assert ev["gap_time_per_request"].value == pytest.approx(statistics.fmean(gaps), rel=0.01)
    assert ev["downstream_server_time_per_request"].value < 10
    # Only the gap above 2 ms per call is claimed.
    assert f.saving_ms == pytest.approx(statistics.fmean(g - 2.0 for g in gaps), rel=0.01)
    assert "gap dominates" in f.remedy and "region" in f.remedy


def test_untraced_downstream_says_time_cannot_be_split(untraced_downstream_jsonl: Path) -> None:
    a = only(untraced_downstream_jsonl, "web", "GET /recommendations")
    assert ("recommender", "GET /recs") not in analyze_hotspots([untraced_downstream_jsonl])
    (f,) = a.rule("PF-NET001")
    ev = {e.signal: e for e in f.evidence}
    assert "downstream_server_time_per_request" not in ev
    assert "not traced" in f.message and "Propagate trace context" in f.remedy
    assert ev["gap_time_per_request"].value == pytest.approx(ev["downstream_time_per_request"].value)
    assert f.saving_ms == 0  # the gap includes the unseen server time: nothing to claim


def test_slow_downstream_near_miss_fast_call(fast_downstream_jsonl: Path) -> None:
    """A 1-3 ms call after 30 ms of local work: the downstream is a small part of the request."""
    a = only(fast_downstream_jsonl, "web", "GET /recommendations")
    assert a.rule("PF-NET001") == []


# --- PF-NET002 sequential fan-out -----------------------------------------------------------


def test_sequential_fan_out_reports_sum_minus_max(gateway_sequential_jsonl: Path) -> None:
    a = only(gateway_sequential_jsonl, "gateway", "GET /checkout")
    (f,) = a.rule("PF-NET002")
    max_gap = all_rules()["PF-NET002"].defaults["max_gap_ms"]
    shrink, whole = [], 0
    for spans in raw_spans(gateway_sequential_jsonl).values():
        calls = [s for s in spans if s.kind == CLIENT and s.service == "gateway"]
        assert len(calls) == 3
        assert all(a.end <= b.start for a, b in zip(calls, calls[1:])), "the calls are made one after another"
        # Per sequence (a stall of the caller between two calls longer than max_gap_ms splits one).
        shrink.append(sum_minus_max_ms(calls, lambda s: urlsplit(s.attrs["http.url"]).netloc, max_gap))
        whole += len(sequential_runs(calls, max_gap)) == 1
    assert whole >= 1  # the three calls form one sequence in at least one request
    assert f.saving_ms == pytest.approx(statistics.fmean(shrink), rel=0.01)
    assert f.share == pytest.approx(f.saving_ms * a.ctx.hotspot.count / a.ctx.hotspot.total_ms, rel=1e-6)
    assert "inventory, pricing, shipping" in f.message and "concurrently" in f.remedy
    names = [e.source.split(" (")[0] for e in f.evidence if e.signal == "sequential_call_time_per_request"]
    assert names == ["inventory", "pricing", "shipping"]


def test_sequential_fan_out_near_miss_parallel(gateway_parallel_jsonl: Path) -> None:
    """The same three calls from a thread pool: they overlap, so nothing is sequential."""
    a = only(gateway_parallel_jsonl, "gateway", "GET /checkout")
    assert a.rule("PF-NET002") == []
    assert a.rule("PF-NET003") == []


# --- PF-NET003 chatty calls -----------------------------------------------------------------


def test_chatty_calls_fire(chatty_calls_jsonl: Path) -> None:
    a = only(chatty_calls_jsonl, "catalog", "GET /catalog/page")
    (f,) = a.rule("PF-NET003")
    ev = {e.signal: e for e in f.evidence}
    assert ev["calls_per_request"].value == 30 and ev["calls_per_request"].source.startswith("inventory (127.0.0.1:")
    calls = [s.ms for spans in raw_spans(chatty_calls_jsonl).values() for s in spans
             if s.kind == CLIENT and s.service == "catalog"]
    assert ev["call_p50"].value == pytest.approx(statistics.median(calls), rel=0.01)
    assert "batch" in f.remedy and f.share > 0.5
    assert 0 < f.saving_ms < ev["chatty_time_per_request"].value
    # Calls to one downstream are not a fan-out.
    assert a.rule("PF-NET002") == []


def test_chatty_calls_near_miss_four_calls(chatty_four_jsonl: Path) -> None:
    a = only(chatty_four_jsonl, "catalog", "GET /catalog/page")
    assert a.rule("PF-NET003") == []
