"""Caching detectors: cache-aside misses, low hit ratio, slow cache operations, cacheable repeated fetches.

Cache spans are database spans of a cache system (redis, memcached, ...; see analyzer.model.semconv).
Redis and memcached instrumentations sanitize arguments (`GET ?`), so keys are usually not
visible: cache-aside is recognized by the order of operations within one request, and keys
are compared only where spans carry them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from analyzer.model.arrays import sorted_unique
from analyzer.classify import CACHEABLE_DATABASE, FALL_THROUGH_DATABASE, FALL_THROUGH_NETWORK
from analyzer.model.findings import Evidence, Finding
from analyzer.model.spans import SpanClass
from analyzer.model.signals import Signal
from heuristics.context import HotspotContext
from heuristics.registry import rule
from heuristics.spans import (
    NS_PER_MS, Waiting, command_kind, location, ms, sample_evidence, sample_trace,
    statement_text, waiting,
)

READ, WRITE = 1, 2
# Cache commands by effect (redis, memcached, common client method names).
COMMANDS: dict[str, int] = {
    **dict.fromkeys(("GET", "MGET", "GETEX", "HGET", "HMGET", "HGETALL", "EXISTS", "SMEMBERS", "LRANGE", "ZRANGE",
                     "JSON.GET", "GETS", "GET_MULTI", "GET_MANY"), READ),
    **dict.fromkeys(("SET", "SETEX", "PSETEX", "SETNX", "MSET", "HSET", "HMSET", "SADD", "RPUSH", "LPUSH", "ZADD",
                     "JSON.SET", "ADD", "REPLACE", "CAS", "SET_MULTI", "SET_MANY"), WRITE),
}


@dataclass(frozen=True)
class CacheAside:
    w: Waiting
    reads: np.ndarray  # bool per waiting span: a cache read
    writes: np.ndarray  # a cache write
    fall: np.ndarray  # a database/remote fetch between a cache read and the write that fills it
    missed: np.ndarray  # a cache read followed by a fall-through fetch and a write


def cache_aside(ctx: HotspotContext) -> CacheAside:
    """Cache-aside sequences (read -> fetch -> write) within each request, in one pass over the sorted spans;
    computed once per hot spot, the caching rules share it."""
    return ctx.once("cache_aside", lambda: _cache_aside(ctx))


def _cache_aside(ctx: HotspotContext) -> CacheAside:
    w = waiting(ctx)
    n = len(w)
    if not n:
        empty = np.zeros(0, dtype=bool)
        return CacheAside(w, empty, empty, empty, empty)
    cache = w.cls == SpanClass.CACHE
    kind = np.zeros(n, dtype=np.int8)
    kind[cache] = command_kind(ctx, w.rows[cache], COMMANDS)
    reads, writes = kind == READ, kind == WRITE
    if not (reads.any() and writes.any()):  # a fall-through fetch sits between a read and a write
        return CacheAside(w, reads, writes, np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))
    fetch = (w.cls == SpanClass.DATABASE) | (w.cls == SpanClass.REMOTE)
    idx = np.arange(n, dtype=np.int32)  # (spans are table rows, int32: the running indexes below take half the memory)
    first = np.ones(n, dtype=bool)
    first[1:] = w.req[1:] != w.req[:-1]
    last = np.ones(n, dtype=bool)
    last[:-1] = first[1:]
    # Running "previous/next index of X" arrays; comparing with the request's first/last index
    # keeps every match inside one request.
    req_first = np.maximum.accumulate(np.where(first, idx, 0))
    req_last = np.minimum.accumulate(np.where(last, idx, n)[::-1])[::-1]
    last_read = np.maximum.accumulate(np.where(reads, idx, -1))
    last_write = np.maximum.accumulate(np.where(writes, idx, -1))
    next_write = np.minimum.accumulate(np.where(writes, idx, n)[::-1])[::-1]
    next_read = np.minimum.accumulate(np.where(reads, idx, n)[::-1])[::-1]
    fall = (fetch & (last_read >= req_first) & (last_read > last_write)
            & (next_write <= req_last) & (next_write < next_read))
    if fall.any():
        # Where both ends carry a key, the write must fill the key that was read.
        keys = ctx.table.cache_key[w.rows]
        kr, kw = keys[np.maximum(last_read, 0)], keys[np.minimum(next_write, n - 1)]
        fall &= (kr < 0) | (kw < 0) | (kr == kw)
    missed = np.zeros(n, dtype=bool)
    missed[last_read[fall]] = True
    return CacheAside(w, reads, writes, fall, missed)


def _fall_through(ctx: HotspotContext, ca: CacheAside) -> tuple[float, float, float]:
    """(database, network, cache) critical-path ns of the requests' cache-aside traffic."""
    w = ca.w
    crit = w.crit * w.weight
    db = float(crit[ca.fall & (w.cls == SpanClass.DATABASE)].sum())
    net = float(crit[ca.fall & (w.cls == SpanClass.REMOTE)].sum())
    cache = float(crit[w.cls == SpanClass.CACHE].sum())
    return db, net, cache


def _fetch_statements(ctx: HotspotContext, ca: CacheAside) -> list[str]:
    w = ca.w
    codes, counts = np.unique(w.stmt[ca.fall & (w.stmt >= 0)], return_counts=True)
    out = [statement_text(ctx, int(c)) for c in codes[np.argsort(-counts)][:3]]
    remote = ca.fall & (w.cls == SpanClass.REMOTE)
    if remote.any():
        out += sorted({ctx.table.peers[p] for p in sorted_unique(w.peer[remote]).tolist() if p >= 0})[:2]
    return out


def _move_evidence(ctx: HotspotContext, db_ns: float, net_ns: float, source: str) -> list[Evidence]:
    """Shares of database/network time whose cause is the cache (see analyzer.classify)."""
    out = []
    if db_ns:
        out.append(Evidence(FALL_THROUGH_DATABASE, db_ns / ctx.total_ns, "ratio", source))
    if net_ns:
        out.append(Evidence(FALL_THROUGH_NETWORK, net_ns / ctx.total_ns, "ratio", source))
    return out


@rule("PF-CACHE001", "cache-aside-misses", "caching",
      "Cache-aside reads mostly miss, so requests pay the cache round trip and the fetch behind it.",
      min_miss_ratio=0.5, min_reads=10, min_share=0.2, target_hit_ratio=0.9)
def cache_aside_misses(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    Recognizes the cache-aside pattern in traces (cache GET, then on a miss a fetch from the
    database or a downstream, then a cache SET of the result, within one request) and reports
    a cache that mostly misses: the requests pay the cache round trips *and* the fetch.

    ## How it measures
    Per request, spans in start order: a database or remote span that comes after a cache read
    and before the cache write that follows it (with no other read in between) is a
    fall-through fetch, and that read a miss. Keys are compared when the spans carry them
    (instrumentations usually sanitize them to `GET ?`). The miss ratio is misses over cache
    reads in the window. It fires with at least `min_reads` reads, a miss ratio of at least
    `min_miss_ratio`, and fall-through fetches plus cache operations taking at least `min_share`
    of the hot spot's critical-path time (`share`). `saving_ms` is the fall-through time a hit
    ratio of `target_hit_ratio` would remove. The fetch time is evidence for caching, not for
    the database: classification counts it as caching's share (see analyzer.classify).

    ## False positives
    A cold start (a freshly flushed cache) misses on everything: look at a longer window.
    Reads whose miss leads to no write (negative results not cached) count as hits.

    ## How to fix
    Find out why the keys miss: keys that never repeat within the TTL (cache something coarser,
    or pre-warm), a TTL shorter than the reuse interval, evictions (`redis_evicted_keys_total`),
    or a key that includes a per-request value. If the data is not reused, drop the cache and
    make the fetch itself fast (the statement is named in the evidence).
    """
    ca = cache_aside(ctx)
    if int(ca.reads.sum()) < th["min_reads"] or not ctx.total_ns:  # reads seen, not estimated
        return []
    reads = float(ca.w.weight[ca.reads].sum())
    misses = float(ca.w.weight[ca.missed].sum())
    ratio = misses / reads
    db_ns, net_ns, cache_ns = _fall_through(ctx, ca)
    share = (db_ns + net_ns + cache_ns) / ctx.total_ns
    if ratio < th["min_miss_ratio"] or share < th["min_share"]:
        return []
    n = ctx.n_requests
    fall_ms = ms(db_ns + net_ns) / n
    miss_target = 1.0 - th["target_hit_ratio"]
    saving = fall_ms * max(0.0, 1.0 - miss_target / ratio)
    fetches = _fetch_statements(ctx, ca)
    source = fetches[0] if fetches else "fall-through fetches"
    w = ca.w
    rows = w.rows[ca.fall]
    fetch_p50 = ms(ctx.quantile(w.dur[ca.fall], 0.5, w.weight[ca.fall])) if ca.fall.any() else 0.0
    return [Finding(
        rule="PF-CACHE001", category="caching",
        message=(f"Cache-aside misses: {ratio:.0%} of {reads:.0f} cache reads miss ({misses:.0f} misses); the fetches behind "
                 f"them cost {fall_ms:.1f} ms per request (p50 {fetch_p50:.1f} ms each), cache and fetches "
                 f"{share:.0%} of the hot spot's time."),
        remedy=("Find why keys miss: keys that never repeat within the TTL (cache a coarser object or pre-warm), "
                "a TTL shorter than the reuse interval, evictions, or a per-request value in the key. "
                f"At a {th['target_hit_ratio']:.0%} hit ratio requests would save about {saving:.1f} ms; if the data "
                f"is not reused, drop the cache and make the fetch fast (`{source}`)."),
        share=min(1.0, share), saving_ms=saving,
        evidence=[
            Evidence("cache_miss_ratio", ratio, "ratio", f"{misses:.0f} of {reads:.0f} cache reads in the window"),
            Evidence("fall_through_time_per_request", fall_ms, "ms", source),
            Evidence("cache_time_per_request", ms(cache_ns) / n, "ms", "cache operations"),
            sample_evidence("fall_through_time_in_sample", "ms", ctx, w, ca.fall, w.dur / NS_PER_MS),
            *_move_evidence(ctx, db_ns, net_ns, source),
        ],
        location=location(ctx, rows) or location(ctx, w.rows[ca.missed]),
    )]


@rule("PF-CACHE002", "low-cache-hit-ratio", "caching",
      "The cache's hit ratio from metrics is low for a hot spot that reads it.",
      min_hit_ratio=0.8, target_hit_ratio=0.9)
def low_hit_ratio(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    Reports a low cache hit ratio measured by the cache's own metrics (`cache_hit_ratio` in
    the service's signals: redis `redis_keyspace_hits_total` / `_misses_total`, memcached
    `memcached_commands_total{command="get"}`, Micrometer `cache_gets_total{result}`, Caffeine;
    signals.md §6) for a hot spot whose requests read that cache.

    ## How it measures
    The mean hit ratio over the window. It fires when it is below `min_hit_ratio` and the hot
    spot has cache spans. `share` is the hot spot's time in cache operations plus the
    fall-through fetches seen in its traces (see PF-CACHE001); `saving_ms` is the fall-through
    time a hit ratio of `target_hit_ratio` would remove, scaled from the measured miss ratio.

    ## False positives
    The metric covers the whole cache server, shared by every service and key space using it;
    another client's misses lower the ratio too. A cold start lowers it for a while.

    ## How to fix
    As for PF-CACHE001: check key reuse against the TTL, evictions
    (`redis_evicted_keys_total`, `maxmemory`), and keys that include per-request values.
    """
    sig = ctx.signals
    if sig is None or not sig.has(Signal.CACHE_HIT_RATIO) or not ctx.total_ns:
        return []
    series = sig.get(Signal.CACHE_HIT_RATIO)
    assert series is not None
    hit = series.mean()
    ca = cache_aside(ctx)
    if hit >= th["min_hit_ratio"] or not (ca.w.cls == SpanClass.CACHE).any():
        return []
    db_ns, net_ns, cache_ns = _fall_through(ctx, ca)
    share = (db_ns + net_ns + cache_ns) / ctx.total_ns
    n = ctx.n_requests
    fall_ms = ms(db_ns + net_ns) / n
    miss = 1.0 - hit
    saving = fall_ms * max(0.0, 1.0 - (1.0 - th["target_hit_ratio"]) / miss) if miss > 0 else 0.0
    fetches = _fetch_statements(ctx, ca)
    return [Finding(
        rule="PF-CACHE002", category="caching",
        message=(f"Low cache hit ratio: {hit:.0%} of cache reads hit over the window (metrics); cache operations "
                 f"and fall-through fetches take {share:.0%} of the hot spot's time."),
        remedy=("Check key reuse against the TTL, evictions (redis_evicted_keys_total against maxmemory) and keys "
                f"that include per-request values; at a {th['target_hit_ratio']:.0%} hit ratio requests would save "
                f"about {saving:.1f} ms."),
        share=min(1.0, share), saving_ms=saving,
        evidence=[Evidence("cache_hit_ratio", hit, "ratio", series.source),
                  Evidence("cache_hit_ratio_min", float(np.nanmin(series.v)), "ratio", series.source),
                  Evidence("fall_through_time_per_request", fall_ms, "ms", fetches[0] if fetches else "traces"),
                  *_move_evidence(ctx, db_ns, net_ns, fetches[0] if fetches else "traces")],
    )]


@rule("PF-CACHE003", "slow-cache-operations", "caching",
      "The cache itself is slow: its operations take milliseconds instead of a fraction of one.",
      min_p95_ms=5, min_share=0.1, target_ms=1)
def slow_cache(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    Finds cache commands that are slow themselves. A cache read on the same network should
    take well under a millisecond; milliseconds mean large values, expensive commands
    (`KEYS`, `SMEMBERS`/`HGETALL` on huge collections, Lua scripts), a saturated or distant
    cache server, or connection set-up per call.

    ## How it measures
    Per command shape (`GET ?`, `HGETALL ?`): p50/p95 of one call and the calls' critical-path
    time. It fires when the p95 is at least `min_p95_ms` and the command takes at least
    `min_share` of the hot spot's time (`share`). `saving_ms` is the time above `target_ms`
    per call on the critical path.

    ## False positives
    Client-side time (deserialization inside the instrumented call) shows as cache time; so
    does a client waiting for a pooled connection.

    ## How to fix
    Compare with server-side time (redis `SLOWLOG`, `redis_commands_duration_seconds_total`):
    a fast server means size or network (store smaller values, compress, split the object,
    keep the cache in the same zone, reuse connections); a slow server means an expensive
    command or a saturated single-threaded server (shard, avoid O(N) commands).
    """
    w = waiting(ctx)
    c = w.select((w.cls == SpanClass.CACHE))
    if not len(c) or not ctx.total_ns:
        return []
    key = np.where(c.stmt >= 0, c.stmt.astype(np.int64), -2 - ctx.table.name[c.rows].astype(np.int64))
    n = ctx.n_requests
    out = []
    for k in sorted_unique(key).tolist():
        mask = key == k
        dur, wt = c.dur[mask], c.weight[mask]
        p50, p95 = (ctx.quantile(dur, q, wt) for q in (0.5, 0.95))
        crit = c.crit[mask] * wt
        share = float(crit.sum()) / ctx.total_ns
        if p95 < th["min_p95_ms"] * NS_PER_MS or share < th["min_share"]:
            continue
        target = th["target_ms"] * NS_PER_MS
        saving = ms(float((crit * np.clip(1.0 - target / np.maximum(dur, 1), 0.0, 1.0)).sum())) / n
        text = ctx.table.statements[k] if k >= 0 else ctx.table.names[-2 - k]
        rows = c.rows[mask]
        out.append(Finding(
            rule="PF-CACHE003", category="caching",
            message=(f"Slow cache operation: `{text}` takes p95 {ms(p95):.1f} ms (p50 {ms(p50):.1f} ms, "
                     f"{wt.sum() / n:.1f}× per request), {share:.0%} of the hot spot's time."),
            remedy=("Compare with the server's own time (SLOWLOG, redis_commands_duration_seconds_total): if the "
                    "server is fast, the values are too big or the cache too far (store smaller or compressed "
                    "values, split the object, same zone, pooled connections); if it is slow, avoid O(N) commands "
                    f"or shard. At {th['target_ms']:g} ms per call requests would save about {saving:.1f} ms."),
            share=share, saving_ms=saving,
            evidence=[Evidence("cache_op_p95", ms(p95), "ms", text), Evidence("cache_op_p50", ms(p50), "ms", text),
                      Evidence("cache_op_time_share", share, "ratio", text),
                      Evidence("slowest_sample", ms(dur.max()), "ms", sample_trace(ctx, rows[[int(np.argmax(dur))]]))],
            location=location(ctx, rows),
        ))
    return out


# Placeholders that do not select rows: paging and positional ORDER/GROUP BY.
_NON_FILTER = re.compile(r"\b(?:LIMIT|OFFSET|TOP|FETCH FIRST)\s+\?|\b(?:ORDER|GROUP) BY\s+\?(?:\s*,\s*\?)*",
                         re.IGNORECASE)
_READ = re.compile(r"^\s*(?:SELECT|WITH)\b", re.IGNORECASE)


def parameter_free_read(statement: str) -> bool:
    """A read whose result cannot depend on the request: no placeholder outside paging and ordering.

    Normalization turns literals into `?` too, so `WHERE status = 'active'` counts as a filter
    parameter: the rule stays silent rather than guess."""
    return bool(_READ.match(statement)) and "?" not in _NON_FILTER.sub("", statement)


@rule("PF-CACHE004", "repeated-identical-fetch", "caching",
      "The same read with the same parameters runs in most requests; a cache would serve it.",
      min_request_fraction=0.5, min_requests=5, min_share=0.1, cache_hit_ms=0.5)
def repeated_fetch(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    Finds reads that return the same thing to every request (reference data, a bestseller
    list, feature flags, a settings row) and are fetched from the database again each time,
    where a cache (in-process with a TTL, or redis) would serve them.

    ## How it measures
    Identical means the same normalized statement with the same parameters. Span attributes
    carry no parameter values, so a statement counts as identical only when it has no
    parameter that selects rows (placeholders in LIMIT/OFFSET and positional ORDER/GROUP BY
    are allowed) and is a read (`SELECT`/`WITH`). Fetches already behind a cache (fall-through
    fetches of a cache-aside miss) are left out. It fires when such a statement runs in at
    least `min_request_fraction` of the hot spot's requests and at least `min_requests`
    requests, and takes at least `min_share` of the hot spot's time (`share`). `saving_ms`
    assumes a cache hit costs `cache_hit_ms`. Classification counts this time as caching's.

    ## False positives
    Data that must be read fresh every time (balances, stock levels). A filter written as a
    literal (`WHERE status = 'active'`) is indistinguishable from a parameter after
    normalization, so such statements are never reported (a false negative, on purpose).

    ## How to fix
    Cache the result with a TTL that matches how stale it may be (in-process LRU/TTL cache,
    or redis with cache-aside), or precompute it (a materialized view refreshed periodically).
    """
    w = waiting(ctx)
    if not ctx.total_ns or not (w.cls == SpanClass.DATABASE).any():
        return []
    ca = cache_aside(ctx)
    cand = (w.cls == SpanClass.DATABASE) & (w.stmt >= 0) & ~ca.fall
    n = ctx.n_requests
    out = []
    for s in sorted_unique(w.stmt[cand]).tolist():
        text = statement_text(ctx, s)
        if not parameter_free_read(text):
            continue
        mask = cand & (w.stmt == s)
        seen = int(sorted_unique(w.req[mask]).shape[0])  # requests seen, not estimated
        requests = ctx.requests(w.req[mask])
        crit = float(w.crit[mask] @ w.weight[mask])
        share = crit / ctx.total_ns
        if seen < th["min_requests"] or requests < th["min_request_fraction"] * n or share < th["min_share"]:
            continue
        execs = float(w.weight[mask].sum())
        saving = max(0.0, ms(crit) - th["cache_hit_ms"] * execs) / n
        rows = w.rows[mask]
        p50 = ms(ctx.quantile(w.dur[mask], 0.5, w.weight[mask]))
        out.append(Finding(
            rule="PF-CACHE004", category="caching",
            message=(f"Repeated identical fetch: `{text}` (no parameters) runs in {requests:.0f} of {n:.0f} requests "
                     f"(p50 {p50:.1f} ms), {share:.0%} of the hot spot's time; every request gets the same rows."),
            remedy=("Cache the result with a TTL matching how stale it may be (an in-process TTL cache, or redis "
                    f"cache-aside), or precompute it (a materialized view); saves about {saving:.1f} ms per {ctx.hotspot.operation} request."),
            share=share, saving_ms=saving,
            evidence=[Evidence("requests_with_fetch", float(requests), "requests", text),
                      Evidence("fetch_p50", p50, "ms", text),
                      Evidence("fetch_time_per_request", ms(crit) / n, "ms", text),
                      Evidence(CACHEABLE_DATABASE, share, "ratio", text),
                      sample_evidence("fetch_time_in_sample", "ms", ctx, w, mask, w.dur / NS_PER_MS)],
            location=location(ctx, rows),
        ))
    return out
