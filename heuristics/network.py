"""Network detectors: slow downstreams, sequential fan-out, chatty calls.

They read remote client spans (rpc/http CLIENT spans that are not database or cache calls).
A downstream is identified by the client span's peer (`server.address:port`, or the URL's
host); when the downstream is traced too, its SERVER span is a child of the client span and
names the service and operation. Without a peer, the child SERVER span's service tells
downstreams apart (client spans named just `HTTP GET` call many services, and Zipkin, Jaeger
and span tables often carry no peer attribute); only an untraced call without a peer falls
back to its span name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from analyzer.model.arrays import sorted_unique
from analyzer.classify import ClassifyConfig, pick, trace_shares
from analyzer.model.findings import Evidence, Finding
from analyzer.hotspots import Hotspot
from analyzer.model.spans import SpanClass
from heuristics.context import HotspotContext
from heuristics.registry import rule
from heuristics.spans import NS_PER_MS, Waiting, location, ms, run_ids, sample_evidence, waiting


@dataclass(frozen=True)
class Calls:
    """The hot spot's remote calls with a downstream key per call."""

    w: Waiting
    # peer code; without a peer, -2 - len(names) - the callee's service code when it is traced,
    # else -2 - the span name code
    key: np.ndarray
    server: np.ndarray  # ns of the downstream's own SERVER span inside the call (0 when not traced)
    child: np.ndarray  # row of the downstream's SERVER span, -1 when not traced


def calls(ctx: HotspotContext) -> Calls:
    """The hot spot's remote calls; computed once per hot spot, every network rule reads them."""
    return ctx.once("calls", lambda: _calls(ctx))


def _calls(ctx: HotspotContext) -> Calls:
    t = ctx.table
    w = waiting(ctx)
    w = w.select(w.cls == SpanClass.REMOTE)
    # The downstream SERVER spans whose parent is one of these client spans.
    server_ns, kid = ctx.breakdown.callees(w.rows)
    unnamed = np.where(kid >= 0, -2 - len(t.names) - t.service[np.maximum(kid, 0)].astype(np.int64),
                       -2 - t.name[w.rows].astype(np.int64))
    key = np.where(w.peer >= 0, w.peer.astype(np.int64), unnamed)
    return Calls(w, key, np.minimum(server_ns, w.dur), kid)


def _name(ctx: HotspotContext, c: Calls, mask: np.ndarray) -> str:
    """A downstream's display name: its service name when traced, else the peer."""
    t = ctx.table
    kids = c.child[mask]
    kids = kids[kids >= 0]
    k = int(c.key[mask][0])
    # Without a peer: the client spans' most common name (`HTTP GET`, `hipstershop.CartService/GetCart`).
    peer = t.peers[k] if k >= 0 else t.names[int(np.bincount(t.name[c.w.rows[mask]]).argmax())]
    if kids.size:
        svc = np.bincount(ctx.table.service[kids]).argmax()
        return f"{ctx.table.services[svc]} ({peer})"
    return peer


def _downstream_hotspot(ctx: HotspotContext, c: Calls, mask: np.ndarray) -> Hotspot | None:
    kids = c.child[mask]
    kids = kids[kids >= 0]
    if not kids.size:
        return None
    t = ctx.table
    codes, counts = np.unique(t.service[kids].astype(np.int64) * len(t.names) + t.name[kids], return_counts=True)
    top = int(codes[np.argmax(counts)])
    service, op = t.services[top // len(t.names)], t.names[top % len(t.names)]
    return next((h for h in ctx.all_hotspots if h.service == service and h.operation == op), None)


def _describe(h: Hotspot, cfg: ClassifyConfig) -> str:
    """`pricing GET /quote`: its category from its own trace breakdown, and its largest part."""
    category, share = pick(trace_shares(h), cfg)
    parts = h.mean_parts_ms()
    total = sum(parts.values()) or 1.0
    largest = max(parts, key=lambda k: parts[k])
    what = largest.replace("_", " ")
    return (f"{h.service} `{h.operation}` (p50 {h.quantile_ms(0.5):.1f} ms; from its trace: {category}, "
            f"{parts[largest] / total:.0%} {what} time)")


@rule("PF-NET001", "slow-downstream", "network",
      "Much of the request waits on one downstream; its own server time is told apart from the wire gap.",
      min_share=0.25, min_ms=10, expected_gap_ms=2)
def slow_downstream(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    Names the downstream service (HTTP or RPC) a hot spot spends most of its time waiting on,
    and splits that wait into the downstream's own server time and the client-server gap
    (connection set-up, DNS, TLS, queueing in proxies and in the server's accept backlog,
    transfer). When the downstream is traced, the finding points at its own hot spot and the
    category its trace breakdown shows, so the fix lands where the time is.

    ## How it measures
    Calls are grouped by peer (`server.address:server.port`, or the URL's host and port).
    Per peer: the client spans' time on the request's critical path (calls running in parallel
    with a longer one are not counted), and inside it the child SERVER span's time (server) and
    the rest (gap). It fires when a peer takes at least `min_share` of the hot spot's time and
    at least `min_ms` per request. When the gap is the larger part, `saving_ms` is the gap
    above `expected_gap_ms` per call: what a shorter network path or better connection
    handling would save. When the downstream's own time is the larger part, or the downstream
    is not traced, no saving is claimed here: it is saved by fixing the downstream (see its hot
    spot's findings).

    ## False positives
    A downstream that is slow by design (a payment provider, a batch export) is reported too;
    ignore the rule for that operation. Without trace context propagation the server time is
    unknown and the whole wait shows as gap; the message says so.

    ## How to fix
    Server time dominates: fix the downstream's hot spot, or cache its responses, or stop
    waiting for it (call it asynchronously, in parallel with other work). Gap dominates: reuse
    connections (keep-alive, a pooled HTTP session, HTTP/2), avoid a DNS lookup and TLS
    handshake per call, look for queueing in proxies or sidecars, and for a downstream in
    another zone or region.
    """
    c = calls(ctx)
    w = c.w
    if not len(w) or not ctx.total_ns:
        return []
    n = ctx.n_requests
    out = []
    for k in sorted_unique(c.key).tolist():
        mask = c.key == k
        wt = w.weight[mask]
        crit = float(w.crit[mask] @ wt)
        share = crit / ctx.total_ns
        if share < th["min_share"] or ms(crit) / n < th["min_ms"]:
            continue
        on = w.crit[mask] > 0
        server = float(c.server[mask][on] @ wt[on])
        gap_calls = (w.dur[mask] - c.server[mask])[on]
        traced = bool((c.child[mask] >= 0).any())
        name = _name(ctx, c, mask)
        per_req, server_ms, gap_ms = ms(crit) / n, ms(server) / n, ms(crit - server) / n
        gap_dominates = traced and server < crit - server
        saving = (ms(np.clip(gap_calls - th["expected_gap_ms"] * NS_PER_MS, 0, None) @ wt[on]) / n
                  if gap_dominates else 0.0)
        down = _downstream_hotspot(ctx, c, mask)
        rows = w.rows[mask]
        if traced:
            split = f"{server_ms:.1f} ms is its own server time, {gap_ms:.1f} ms the wire/queueing gap"
        else:
            split = "it is not traced, so its own time and the wire gap cannot be told apart"
        message = (f"Slow downstream: waiting on {name} takes {per_req:.1f} ms per request "
                   f"({share:.0%} of the hot spot's time, {wt.sum() / n:.1f} calls per request); {split}.")
        if traced and not gap_dominates:
            where = f"its hot spot {_describe(down, ctx.classify)}" if down is not None else "its own traces"
            remedy = (f"The time is the downstream's own: fix it there (see {where}); meanwhile cache its responses "
                      "if they repeat, or call it in parallel with other work.")
        elif traced:
            remedy = ("The gap dominates: the network path or the connection costs more than the downstream's work. "
                      "Reuse connections (keep-alive, a pooled session, HTTP/2), avoid a DNS lookup and TLS handshake "
                      "per call, look for queueing in proxies or sidecars and for a downstream in another zone or "
                      f"region; saves about {saving:.1f} ms per {ctx.hotspot.operation} request.")
        else:
            remedy = ("Propagate trace context to the downstream (or get its server latency metric, "
                      "http.server.request.duration) to tell its time from the network's; cache its responses if "
                      "they repeat, and reuse connections.")
        evidence = [
            Evidence("downstream_time_per_request", per_req, "ms", name),
            Evidence("calls_per_request", float(wt.sum()) / n, "calls", name),
            Evidence("gap_time_per_request", gap_ms, "ms", name),
        ]
        if traced:
            evidence.insert(1, Evidence("downstream_server_time_per_request", server_ms, "ms",
                                        f"{down.service} {down.operation}" if down is not None else name))
        evidence.append(sample_evidence("downstream_time_in_sample", "ms", ctx, w, mask, w.dur / NS_PER_MS))
        out.append(Finding(rule="PF-NET001", category="network", message=message, remedy=remedy, share=share,
                           saving_ms=saving, evidence=evidence, location=location(ctx, rows)))
    return out


@rule("PF-NET002", "sequential-fan-out", "network",
      "Calls to different downstreams run one after another; in parallel the request would wait for the slowest only.",
      max_gap_ms=10, min_saving_ms=10, min_share=0.1)
def sequential_fan_out(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    Finds a request that calls several *different* downstreams one after another (inventory,
    then pricing, then shipping) when the calls do not overlap: the request waits for the sum
    of the calls instead of the slowest one.

    ## How it measures
    Per request, remote client spans in start order form a sequence while each starts within
    `max_gap_ms` after the previous one ends; a call that starts before the previous one ends
    (already parallel) ends the sequence. Within a sequence, time is summed per downstream, and
    run in parallel the sequence would take its longest downstream's time: the critical path
    would shrink by sum minus max of the downstreams' critical-path time. It fires when that
    saving is at least `min_saving_ms` per request on average and `min_share` of the hot spot's
    time; `share` and `saving_ms` are that measured shrinkage.

    ## False positives
    Traces do not show data dependencies: a call that needs the previous call's answer (an id,
    a token) cannot run in parallel. Check the code before fanning out.

    ## How to fix
    Issue the independent calls concurrently: `asyncio.gather` with an async client, a thread
    pool with the trace context attached, `CompletableFuture.allOf`, `Promise.all`, an
    errgroup in Go. Set a timeout on each call so the slowest does not hold the request.
    """
    c = calls(ctx)
    w = c.w
    if len(w) < 2 or not ctx.total_ns:
        return []
    boundary = np.ones(len(w), dtype=bool)
    boundary[1:] = ((w.req[1:] != w.req[:-1]) | (w.start[1:] - w.end[:-1] > th["max_gap_ms"] * NS_PER_MS)
                    | (w.start[1:] < w.end[:-1]))
    rid = run_ids(boundary)
    offset = int(c.key.min())
    width = int(c.key.max()) - offset + 1
    units, inverse = np.unique(rid * width + (c.key - offset), return_inverse=True)
    unit_crit = np.bincount(inverse, weights=w.crit * w.weight)  # a run lies within one request: weighted whole
    runs, run_of_unit = np.unique(units // width, return_inverse=True)
    run_sum = np.bincount(run_of_unit, weights=unit_crit)
    run_max = np.zeros(runs.shape[0])
    np.maximum.at(run_max, run_of_unit, unit_crit)
    run_units = np.bincount(run_of_unit)
    saving_per_run = np.where(run_units >= 2, run_sum - run_max, 0.0)
    n = ctx.n_requests
    saving = float(saving_per_run.sum())
    share = saving / ctx.total_ns
    if ms(saving) / n < th["min_saving_ms"] or share < th["min_share"]:
        return []
    in_runs = (run_units[run_of_unit] >= 2)[inverse]
    keys = [k for k in dict.fromkeys(c.key[in_runs].tolist())]  # first-call order
    names = [_name(ctx, c, in_runs & (c.key == k)) for k in keys]
    per_down = [ms(w.crit[in_runs & (c.key == k)] @ w.weight[in_runs & (c.key == k)]) / n for k in keys]
    requests = ctx.requests(w.req[in_runs])
    seq_ms = sum(per_down)
    rows = w.rows[in_runs]
    return [Finding(
        rule="PF-NET002", category="network",
        message=(f"Sequential fan-out: calls to {', '.join(n_.split(' (')[0] for n_ in names)} run one after another "
                 f"({seq_ms:.1f} ms per request, {requests:.0f} of {n:.0f} requests); in parallel the critical path would "
                 f"shrink by {ms(saving) / n:.1f} ms ({share:.0%} of the hot spot's time)."),
        remedy=("If the calls are independent, issue them concurrently (asyncio.gather, a thread pool with the trace "
                "context attached, CompletableFuture.allOf, Promise.all) with a timeout on each; the request then "
                f"waits for the slowest call only, about {ms(saving) / n:.1f} ms less per {ctx.hotspot.operation} request."),
        share=share, saving_ms=ms(saving) / n,
        evidence=[Evidence("sequential_call_time_per_request", v, "ms", name) for name, v in zip(names, per_down)]
        + [Evidence("critical_path_shrink_per_request", ms(saving) / n, "ms", "sum minus max of the sequential calls"),
           sample_evidence("sequential_call_time_in_sample", "ms", ctx, w, in_runs, w.dur / NS_PER_MS)],
        location=location(ctx, rows),
    )]


@rule("PF-NET003", "chatty-calls", "network",
      "Many small calls to the same downstream in one request; one batch call would replace the round trips.",
      min_calls=10, max_median_ms=25, min_share=0.1)
def chatty_calls(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    Finds requests that make many small calls to the same downstream (a loop calling
    `GET /stock/{sku}` once per item): each round trip pays the connection, serialization and
    the downstream's per-request overhead again.

    ## How it measures
    Per request and downstream (peer): the number of calls and their critical-path time.
    A request is chatty with a downstream when it makes at least `min_calls` calls whose median
    duration is at most `max_median_ms` (small calls; a few big calls are PF-NET001's). It fires
    when the chatty calls take at least `min_share` of the hot spot's time. `saving_ms` assumes
    one batch call costs about one of the small calls, so batching saves the rest.

    ## False positives
    Calls that are different operations on the same host (a gateway in front of many services)
    group together when the peer is the gateway; look at the span names in the sample trace.

    ## How to fix
    Use or add a batch endpoint (`GET /stock?sku=a,b,c`, a gRPC repeated field, GraphQL
    batching / DataLoader), or fetch the data once and reuse it within the request.
    """
    c = calls(ctx)
    w = c.w
    if not len(w) or not ctx.total_ns:
        return []
    n = ctx.n_requests
    out = []
    for k in sorted_unique(c.key).tolist():
        mask = c.key == k
        median = ctx.quantile(w.dur[mask], 0.5, w.weight[mask])
        if median > th["max_median_ms"] * NS_PER_MS:
            continue
        reqs, inverse, counts = np.unique(w.req[mask], return_inverse=True, return_counts=True)
        crit = np.bincount(inverse, weights=w.crit[mask])
        rw = ctx.req_weight[reqs]
        hit = counts >= th["min_calls"]
        total = float(crit[hit] @ rw[hit])
        share = total / ctx.total_ns
        if not hit.any() or share < th["min_share"]:
            continue
        saving = ms(float((crit[hit] * (1.0 - 1.0 / counts[hit])) @ rw[hit])) / n
        name = _name(ctx, c, mask)
        per_call = float(np.average(counts[hit], weights=rw[hit]))
        chatty_requests = float(rw[hit].sum())
        chatty = mask.copy()
        chatty[mask] = hit[inverse]
        rows = w.rows[chatty]
        out.append(Finding(
            rule="PF-NET003", category="network",
            message=(f"Chatty calls: {per_call:.0f} calls to {name} per request (median {ms(median):.1f} ms each, "
                     f"{ms(total) / chatty_requests:.1f} ms per request, {chatty_requests:.0f} of {n:.0f} requests), "
                     f"{share:.0%} of the hot spot's time."),
            remedy=(f"Replace the {per_call:.0f} round trips with one batch call (a batch endpoint such as "
                    "`?ids=a,b,c`, a repeated gRPC field, a DataLoader), or fetch once and reuse within the request; "
                    f"saves about {saving:.1f} ms per {ctx.hotspot.operation} request."),
            share=share, saving_ms=saving,
            evidence=[
                Evidence("calls_per_request", per_call, "calls", name),
                Evidence("call_p50", ms(median), "ms", name),
                Evidence("chatty_time_per_request", ms(total) / chatty_requests, "ms", name),
                sample_evidence("calls_in_sample", "calls", ctx, w, chatty, np.ones(len(w))),
            ],
            location=location(ctx, rows),
        ))
    return out
