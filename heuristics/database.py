"""Database detectors: N+1 queries, slow statements, sequential queries, connection-pool waits."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from analyzer.model.arrays import sorted_unique
from analyzer.model.findings import Evidence, Finding
from analyzer.model.spans import SpanClass
from analyzer.model.signals import Signal
from heuristics.context import HotspotContext
from heuristics.registry import rule
from heuristics.spans import (
    NS_PER_MS, Waiting, batched_shape, index_candidates, location, ms, run_ids, sample_evidence, sample_trace,
    statement_text, typical_duration, waiting,
)


def _db(w: Waiting) -> np.ndarray:
    return (w.cls == SpanClass.DATABASE) & (w.stmt >= 0)


@rule("PF-DB001", "n-plus-one-queries", "database",
      "The same statement runs many times in a row within one request; one batched query would do.",
      min_repetitions=5, min_total_ms=50, interleave_max_ratio=1.0)
def n_plus_one(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    Finds N+1 queries: one normalized statement (literals and placeholders stripped, so
    `WHERE id = 7` and `WHERE id = 8` are the same) executed again and again, one after
    another, inside a single request, typically a loop that loads a relation row by row.

    ## How it measures
    Per request (entry span), the database spans of each statement are taken in start order
    and cut into runs. Short calls between two repetitions (a pool checkout ping such as
    `SELECT 1`, a connect, a cache lookup, in-process work) do not break a run. A run is broken
    by another database, cache, remote or messaging call whose *typical* (median) duration is
    more than `interleave_max_ratio` times the statement's median (a different, heavier phase
    of the request; one slow instance of a usually short call does not count), and by a
    repetition that overlaps the previous one (concurrent queries are not a sequential loop).
    A run is an N+1 when it has at least `min_repetitions` repetitions costing at least
    `min_total_ms` together, the defaults of Sentry's N+1 query detector
    (https://docs.sentry.io/product/issues/performance-issues/n-one-queries/). `share` is the
    repetitions' time on the request's critical path over the hot spot's time; `saving_ms`
    assumes one batched query costs about one repetition, so batching saves the rest.
    When the traces are a sample of a store that counted repetitions itself over the whole
    window (ClickHouse), the evidence adds how many of the window's traces ran the statement
    at least `min_repetitions` times (the store's own count, every trace rather than the sample's),
    and how often on average.

    ## False positives
    A loop that must be sequential (each query needs the previous result, e.g. walking a
    linked list) looks the same; so does a deliberate batch of writes. Raise
    `min_repetitions` for that operation or ignore the rule there.

    ## How to fix
    Fetch all rows in one query with an IN list (`WHERE order_id IN (?)`, selecting the key so
    the rows can be grouped in code), a join, or the ORM's eager loading (SQLAlchemy
    `selectinload`, Django `prefetch_related`, Rails `includes`, Hibernate `@BatchSize`).
    """
    w = waiting(ctx)
    db = _db(w)
    if not db.any():
        return []
    out = []
    new_request = np.ones(len(w), dtype=bool)
    new_request[1:] = w.req[1:] != w.req[:-1]
    typical = typical_duration(ctx, w)
    for s in sorted_unique(w.stmt[db]).tolist():
        mine = db & (w.stmt == s)
        if int(mine.sum()) < th["min_repetitions"]:
            continue
        median = ctx.quantile(w.dur[mine], 0.5, w.weight[mine])
        cut = new_request | (~mine & (typical > th["interleave_max_ratio"] * median))
        idx = np.flatnonzero(mine)
        cut[idx[1:][w.start[idx[1:]] < w.end[idx[:-1]]]] = True  # overlaps the previous repetition
        rid = run_ids(cut)[mine]
        _, first, inverse, counts = np.unique(rid, return_index=True, return_inverse=True, return_counts=True)
        run_dur = np.bincount(inverse, weights=w.dur[mine])
        run_crit = np.bincount(inverse, weights=w.crit[mine])
        run_w = w.weight[mine][first]  # a run lies within one request
        hit = (counts >= th["min_repetitions"]) & (run_dur >= th["min_total_ms"] * NS_PER_MS)
        if not hit.any():
            continue
        rows = w.rows[mine][hit[inverse]]
        requests = ctx.requests(w.req[mine][hit[inverse]])
        reps = float(counts[hit] @ run_w[hit]) / requests
        per_request_ms = ms(run_dur[hit] @ run_w[hit]) / requests
        crit = float(run_crit[hit] @ run_w[hit])
        saving = float((run_crit[hit] * (1.0 - 1.0 / counts[hit])) @ run_w[hit])
        text = statement_text(ctx, s)
        batched, key = batched_shape(text)
        in_runs = np.zeros(len(w), dtype=bool)
        in_runs[idx[hit[inverse]]] = True
        share = crit / ctx.total_ns if ctx.total_ns else 0.0
        how = (f"`{batched}`" + (f" (select `{key}` too and group the rows in code)" if key else "")
               if batched != text else "one query with a join or an IN list")
        out.append(Finding(
            rule="PF-DB001", category="database",
            message=(f"N+1 queries: `{text}` runs {reps:.0f}× per request one after another "
                     f"({per_request_ms:.1f} ms per request, {requests:.0f} of {ctx.n_requests:.0f} requests), "
                     f"{share:.0%} of the hot spot's time."),
            remedy=(f"Load the rows in one round trip: {how}, or eager-load the relation in the ORM "
                    f"(SQLAlchemy selectinload, Django prefetch_related, Rails includes). "
                    f"Saves about {ms(saving) / ctx.n_requests:.1f} ms per {ctx.hotspot.operation} request."),
            share=share, saving_ms=ms(saving) / ctx.n_requests,
            evidence=[
                Evidence("repetitions_per_request", reps, "queries", text),
                Evidence("repeated_query_time_per_request", per_request_ms, "ms", text),
                Evidence("query_p50", ms(median), "ms", text),
                Evidence("affected_requests", requests, "requests", text),
                sample_evidence("repetitions_in_sample", "queries", ctx, w, in_runs, np.ones(len(w))),
                *_window_repetitions(ctx, text),
            ],
            location=location(ctx, rows),
        ))
    return out


def _window_repetitions(ctx: HotspotContext, statement: str) -> list[Evidence]:
    """The store's whole-window count of traces repeating `statement`, when the table is its sample."""
    store = ctx.store
    r = store.repetition(ctx.hotspot.service, ctx.hotspot.operation, statement) if store is not None else None
    if r is None or not r.repeating_traces:
        return []
    # The statement is the source, as for the sample's evidence (fix-first groups findings by it);
    # the report's input says the figure was computed in the store.
    return [Evidence("repeating_traces_in_window", r.repeating_traces, "traces", statement),
            Evidence("repetitions_per_repeating_trace_in_window", r.repeated_executions / r.repeating_traces,
                     "queries", statement)]


@rule("PF-DB002", "slow-statement", "database",
      "One statement's total or tail time dominates the hot spot.",
      min_share=0.25, min_tail_share=0.5, min_p95_ms=10, target_ms=5)
def slow_statement(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    Names the normalized statements that dominate a hot spot, either by total time or by tail
    latency: usually a missing index, a scan behind an ORDER BY, or a query that reads far more
    rows than it returns.

    ## How it measures
    Per normalized statement: its spans' time on the critical path over the hot spot's time
    (`share`), and the p50/p95 of one execution. It fires when the p95 is at least `min_p95_ms`
    and either the share is at least `min_share` or the p95 is at least `min_tail_share` of the
    hot spot's own p95 latency (the statement makes the tail). `saving_ms` is the critical-path
    time above `target_ms` per execution: what bringing the statement down to `target_ms` (an
    indexed lookup) would save per request.

    ## False positives
    A statement that is inherently heavy (a report, an export) is slow on purpose; ignore the
    rule for that operation. A statement waiting on locks shows the same symptom: check lock
    metrics (`pg_locks_count`, `innodb_row_lock_waits`) before adding an index.

    ## How to fix
    Run the plan (`EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN ANALYZE` on PostgreSQL/MySQL). A
    scan over a filtered or joined column wants an index on it; the remedy lists the candidate
    columns read from the statement. If the plan is fine, return fewer rows or cache the result.
    """
    w = waiting(ctx)
    db = _db(w)
    if not db.any() or not ctx.total_ns:
        return []
    stmts, inverse = np.unique(w.stmt[db], return_inverse=True)
    wt = w.weight[db]
    crit = np.bincount(inverse, weights=w.crit[db] * wt)
    hot_p95 = ctx.hotspot.quantile_ns(0.95)
    out = []
    for i, s in enumerate(stmts.tolist()):
        mask = inverse == i
        dur = w.dur[db][mask]
        p50, p95 = (ctx.quantile(dur, q, wt[mask]) for q in (0.5, 0.95))
        share = float(crit[i]) / ctx.total_ns
        tail = p95 / hot_p95 if hot_p95 else 0.0
        if p95 < th["min_p95_ms"] * NS_PER_MS or (share < th["min_share"] and tail < th["min_tail_share"]):
            continue
        c = w.crit[db][mask]
        target = th["target_ms"] * NS_PER_MS
        saving = float((c * np.clip(1.0 - target / np.maximum(dur, 1), 0.0, 1.0)) @ wt[mask]) / ctx.n_requests
        rows = w.rows[db][mask]
        text = statement_text(ctx, s)
        cols = index_candidates(text)
        per_request = float(wt[mask].sum()) / ctx.n_requests
        out.append(Finding(
            rule="PF-DB002", category="database",
            message=(f"Slow statement: `{text}` takes p95 {ms(p95):.1f} ms (p50 {ms(p50):.1f} ms, "
                     f"{per_request:.1f}× per request), {share:.0%} of the hot spot's time."),
            remedy=("Check its plan (EXPLAIN QUERY PLAN / EXPLAIN ANALYZE); "
                    + (f"a scan over {', '.join(cols)} wants an index on "
                       f"{'that column' if len(cols) == 1 else 'those columns'}. " if cols else "")
                    + f"Bringing it to {th['target_ms']:g} ms saves about {ms(saving):.1f} ms per {ctx.hotspot.operation} request; "
                      "if the plan is already indexed, read fewer rows or cache the result."),
            share=share, saving_ms=ms(saving),
            evidence=[
                Evidence("statement_p95", ms(p95), "ms", text),
                Evidence("statement_p50", ms(p50), "ms", text),
                Evidence("statement_time_share", share, "ratio", text),
                Evidence("executions_per_request", float(per_request), "queries", text),
                Evidence("slowest_sample", ms(dur.max()), "ms", sample_trace(ctx, rows[[int(np.argmax(dur))]])),
            ],
            location=location(ctx, rows),
        ))
    return out


@rule("PF-DB003", "sequential-queries", "database",
      "Different queries run one after another in a request; concurrently or merged they would wait less.",
      min_query_ms=5, max_gap_ms=10, min_saving_ms=10, min_share=0.1)
def sequential_queries(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    Finds requests that issue several *different* statements back to back, each waiting for
    the previous one, when nothing in the trace says they depend on each other: a dashboard
    running four aggregates in a row, or a page loading user, settings and counters serially.

    ## How it measures
    Per request, database spans of at least `min_query_ms` in start order form a sequence while
    each starts within `max_gap_ms` after the previous one ends; overlapping spans (already
    concurrent) end a sequence. Within a sequence, time is summed per statement (an N+1 loop
    of one statement counts as one unit, see PF-DB001). Run concurrently, the sequence would
    take as long as its longest unit, so the measured saving is sum minus max of the units'
    critical-path time. It fires when that saving is at least `min_saving_ms` per request on
    average and at least `min_share` of the hot spot's time; `share` is that saving's share.

    ## False positives
    Traces do not show data dependencies: when a query uses the previous query's result (an id
    it returned), it cannot run concurrently; merge the two into one query with a join instead.
    Inside one transaction on one connection, statements are serial by construction.

    ## How to fix
    Issue independent queries concurrently (separate connections from the pool:
    `asyncio.gather`, a thread pool, `CompletableFuture.allOf`) or merge them into one round
    trip (one statement with subqueries, a CTE, or `UNION ALL`).
    """
    w = waiting(ctx)
    d = w.select(_db(w) & (w.dur >= th["min_query_ms"] * NS_PER_MS))
    if len(d) < 2 or not ctx.total_ns:
        return []
    boundary = np.ones(len(d), dtype=bool)
    boundary[1:] = ((d.req[1:] != d.req[:-1]) | (d.start[1:] - d.end[:-1] > th["max_gap_ms"] * NS_PER_MS)
                    | (d.start[1:] < d.end[:-1]))
    rid = run_ids(boundary)
    width = int(d.stmt.max()) + 2
    units, inverse = np.unique(rid * width + d.stmt + 1, return_inverse=True)
    unit_crit = np.bincount(inverse, weights=d.crit * d.weight)  # a run lies within one request: weighted whole
    unit_run = units // width
    runs, run_of_unit = np.unique(unit_run, return_inverse=True)
    run_sum = np.bincount(run_of_unit, weights=unit_crit)
    run_max = np.zeros(runs.shape[0])
    np.maximum.at(run_max, run_of_unit, unit_crit)
    run_units = np.bincount(run_of_unit)
    saving_per_run = np.where(run_units >= 2, run_sum - run_max, 0.0)
    total_saving = float(saving_per_run.sum())
    saving_ms = ms(total_saving) / ctx.n_requests
    share = total_saving / ctx.total_ns
    if saving_ms < th["min_saving_ms"] or share < th["min_share"]:
        return []
    multi = run_units[run_of_unit] >= 2  # units inside a sequence with at least two statements
    in_runs = multi[inverse]
    stmts = sorted_unique(d.stmt[in_runs])
    per_stmt = [(statement_text(ctx, s), ms(d.crit[in_runs & (d.stmt == s)] @ d.weight[in_runs & (d.stmt == s)])
                 / ctx.n_requests)
                for s in stmts.tolist()]
    per_stmt.sort(key=lambda x: -x[1])
    seq_ms = sum(x[1] for x in per_stmt)
    rows = d.rows[in_runs]
    requests = ctx.requests(d.req[in_runs])
    return [Finding(
        rule="PF-DB003", category="database",
        message=(f"Sequential queries: {len(per_stmt)} different statements run one after another "
                 f"({seq_ms:.1f} ms per request, {requests:.0f} of {ctx.n_requests:.0f} requests); concurrently "
                 f"the request would wait {saving_ms:.1f} ms less ({share:.0%} of the hot spot's time)."),
        remedy=("If none of them uses another's result, issue them concurrently on separate pooled connections "
                "(asyncio.gather, a thread pool) or merge them into one round trip (subqueries, a CTE or UNION ALL); "
                f"saves about {saving_ms:.1f} ms per {ctx.hotspot.operation} request. Dependent queries: merge them with a join."),
        share=share, saving_ms=saving_ms,
        evidence=[Evidence("sequential_statement_time_per_request", v, "ms", text) for text, v in per_stmt[:5]]
        + [Evidence("concurrent_saving_per_request", saving_ms, "ms", "sum minus max of the sequential statements"),
           sample_evidence("sequential_time_in_sample", "ms", ctx, d, in_runs, d.dur / NS_PER_MS)],
        location=location(ctx, rows),
    )]


@rule("PF-DB004", "connection-pool-wait", "database",
      "Requests wait for a database connection from the pool (pool metrics).",
      min_wait_ms=5, min_share=0.05, min_pending=1, target_wait_ms=1)
def pool_wait(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    Reports time spent waiting for a connection from the client-side connection pool, which
    traces rarely show (the wait happens before the database span starts, so it hides in
    self time). Needs pool metrics in the service's signals: OTel
    `db.client.connection.wait_time` / `db.client.connection.pending_requests`, HikariCP
    `hikaricp_connections_acquire_seconds` / `hikaricp_connections_pending`, or the old
    `db.client.connections.*` names (signals.md §7).

    ## How it measures
    The mean wait to get a connection over the window (`pool_wait_seconds`) is counted once
    per request that uses the database (one checkout per request: a lower bound when code
    checks out per query). It fires when that wait is at least `min_wait_ms` and at least
    `min_share` of the hot spot's mean latency; `share` is that ratio, `saving_ms` the wait
    above `target_wait_ms`. With only the number of pending requests available, it fires when
    their mean is at least `min_pending`, with no share claimed (the wait time was not measured).
    Hot spots without database spans are skipped: the pool is not theirs.

    ## False positives
    A pool shared by several operations: the mean wait is the service's, not this operation's.
    Short bursts (deploys, cold starts) raise the mean over a short window.

    ## How to fix
    Hold connections for less time (no remote calls or rendering inside a transaction, release
    before slow work), then size the pool to the database's capacity (PostgreSQL: a few
    connections per core), or put a server-side pooler (PgBouncer) in front. Compare the wait
    with the database span time: a wait larger than the queries means the pool, not the
    database, is the bottleneck.
    """
    sig = ctx.signals
    if sig is None or not ctx.hotspot.count:
        return []
    w = waiting(ctx)
    db = w.cls == SpanClass.DATABASE
    if not db.any():
        return []
    db_requests = ctx.requests(w.req[db])
    db_ms = ms(w.dur[db] @ w.weight[db]) / db_requests
    mean_ms = ms(ctx.total_ns) / ctx.n_requests
    if sig.has(Signal.POOL_WAIT_SECONDS):
        series = sig.get(Signal.POOL_WAIT_SECONDS)
        assert series is not None
        wait_ms = series.mean() * 1000.0
        per_request = wait_ms * db_requests / ctx.n_requests
        share = min(1.0, per_request / mean_ms) if mean_ms else 0.0
        if wait_ms < th["min_wait_ms"] or share < th["min_share"]:
            return []
        saving = max(0.0, wait_ms - th["target_wait_ms"]) * db_requests / ctx.n_requests
        evidence = [Evidence("pool_wait_mean", wait_ms, "ms", series.source),
                    Evidence("pool_wait_max", series.max() * 1000.0, "ms", series.source),
                    Evidence("database_span_time_per_request", db_ms, "ms", sample_trace(ctx, w.rows[db]))]
        pending = sig.get(Signal.POOL_PENDING) if sig.has(Signal.POOL_PENDING) else None
        if pending is not None:
            evidence.append(Evidence("pool_pending_mean", pending.mean(), "requests", pending.source))
        return [Finding(
            rule="PF-DB004", category="database",
            message=(f"Connection pool wait: {wait_ms:.1f} ms mean to get a connection "
                     f"({'more' if wait_ms > db_ms else 'less'} than the {db_ms:.1f} ms of queries per request), "
                     f"{share:.0%} of the hot spot's latency."),
            remedy=("Hold connections for less time (no remote calls or rendering inside a transaction), then size "
                    "the pool to the database's capacity or add a server-side pooler (PgBouncer); "
                    f"removing the wait saves about {saving:.1f} ms per {ctx.hotspot.operation} request."),
            share=share, saving_ms=saving, evidence=evidence,
        )]
    if sig.has(Signal.POOL_PENDING):
        pending = sig.get(Signal.POOL_PENDING)
        assert pending is not None
        if pending.mean() < th["min_pending"]:
            return []
        return [Finding(
            rule="PF-DB004", category="database",
            message=(f"Connection pool saturated: {pending.mean():.1f} requests wait for a connection on average "
                     f"(max {pending.max():.0f}); the wait time itself is not measured."),
            remedy=("Export the pool's wait time (db.client.connection.wait_time or "
                    "hikaricp_connections_acquire_seconds) "
                    "to size the problem; meanwhile hold connections for less time and size the pool to the "
                    "database's capacity."),
            evidence=[Evidence("pool_pending_mean", pending.mean(), "requests", pending.source),
                      Evidence("pool_pending_max", pending.max(), "requests", pending.source)],
        )]
    return []
