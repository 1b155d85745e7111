"""Pulling a window of traces from a trace store's query API, as a weighted sample.

A store (collectors/tempo.py, jaeger_api.py, zipkin_api.py) lists the traces of the window
(`Store.search`: candidates with their root's service, operation and duration, and the whole
trace when the search answer carries it), and fetches a trace by id when it does not. This
module draws the stratified sample (collectors/sampling.py), fetches what is missing with
bounded concurrency, decodes everything through the OTLP readers' derivation into one
SpanTable, and weights it.

Searches over a long window are split: a search that comes back full (as many traces as its
limit) is split in two halves, down to `min_slice_s`, within `max_searches` requests, so a busy
hour does not hide the rest of the week behind one limit.

The store's answers are untrusted: every request goes through the bounded HTTP client
(collectors/http_client.py); a refusal (401/403/404, an HTML page) is a `StoreError` naming the
URL and what to do; a trace that cannot be fetched is counted (`skipped.traces_not_fetched`).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from analyzer.model.table import TableBuilder
from collectors import trace_json
from collectors.http_auth import Transport, connect
from collectors.http_client import HttpClient, Response, TransportError
from collectors.otlp_files import SourceStats
from collectors.otlp_traces import LoadedTraces, TraceDecoder
from analyzer.model.arrays import weighted_quantile
from collectors.sampling import Candidate, SamplingPlan, Whole, draw, weigh

ENV_PREFIX = "PROFILE_FIRST_TRACES"
NS = 1_000_000_000
TAIL_Q = 0.95
Progress = Callable[[int, int, str], None]
Payload = tuple[str, object]  # ("proto", bytes) or ("json", a document trace_json reads)


class StoreError(Exception):
    """The store cannot be used (unreachable, refusing, not a store of that kind). One line."""


@dataclass
class StoreSettings:
    """Everything but the URL's secrets; from `[sources.<store>]` and the command line."""

    url: str
    tenant: str | None = None  # X-Scope-OrgID (Tempo, multi-tenant Jaeger behind a gateway)
    query: str = "{}"  # Tempo: TraceQL filter
    per_operation: int = 50  # sampling: tail cap and body size per (service, operation)
    top_operations: int = 50  # Tempo with TraceQL metrics: entry operations pulled, by their time over the window
    search_limit: int = 1000  # traces listed per search request
    concurrency: int = 4
    timeout: float = 30.0
    retries: int = 3
    headers: dict[str, str] = field(default_factory=dict)
    token_file: str | None = None
    max_searches: int = 64
    min_slice_s: float = 60.0
    environments: tuple[str, ...] = ()  # deployment.environment values a store that can filter keeps

    def client(self, accept: str = "application/json") -> HttpClient:
        headers = {**self.headers, "Accept": accept}
        if self.tenant:
            headers["X-Scope-OrgID"] = self.tenant
        t = Transport(timeout=self.timeout, retries=self.retries, headers=headers, token_file=self.token_file)
        try:
            return connect(self.url, t, prefix=ENV_PREFIX)
        except ValueError as e:
            raise StoreError(str(e)) from None


@dataclass
class Ranked:
    """One entry operation as an aggregate over the whole window describes it (Tempo's TraceQL
    metrics, span-metrics in Prometheus): its traces and latency quantiles."""

    service: str
    operation: str
    count: int
    p50_ns: float
    p95_ns: float
    p99_ns: float
    targeted: bool = False

    def to_dict(self) -> dict:
        return {"service": self.service, "operation": self.operation, "count": self.count,
                "p50_ms": round(self.p50_ns / 1e6, 3), "p95_ms": round(self.p95_ns / 1e6, 3),
                "p99_ms": round(self.p99_ns / 1e6, 3), "targeted": self.targeted}


def by_time(ranked: list[Ranked]) -> list[Ranked]:
    """Entry operations by their time over the window (count x p50), p99 breaking ties."""
    return sorted(ranked, key=lambda r: (-r.count * r.p50_ns, -r.p99_ns, r.service, r.operation))


def ranked_whole(r: Ranked, listed: int, tail_listed: int, tail_complete: bool) -> Whole:
    """What the window aggregate says of an operation a targeted tail search listed: its count, split
    at its p95; the tail count is the listed tail when that search came back under its limit
    (the whole tail), else at least the 5 % above the p95."""
    return Whole(count=max(listed, r.count), tail_threshold_ns=r.p95_ns,
                 tail_count=tail_listed if tail_complete else max(tail_listed, round(r.count * (1 - TAIL_Q))))


@dataclass
class Found:
    """One trace a search listed: the candidate, and the trace itself when the answer held it."""

    candidate: Candidate
    payload: Payload | None = None


class Store(Protocol):
    name: str  # "tempo", "jaeger", "zipkin": the source's format is "<name>-api"

    def search(self, start_ns: int, end_ns: int, services: list[str] | None, limit: int) -> list[Found]:
        """The traces of [start_ns, end_ns), at most `limit` per request the store is sent."""

    def fetch(self, trace_id: str) -> Payload:
        """One whole trace."""

    def population(self, start_ns: int, end_ns: int) -> dict[tuple[str, str], int | Whole]:
        """The store's own count of traces per (root service, root operation), where it offers one,
        with the tail threshold and tail count where its search was targeted."""

    def ranking(self) -> dict:
        """How the operations were ranked and listed before sampling (`ranked_by`, and `ranked` where
        the store aggregated the window itself), and what the listing could not see; for `input`."""


def get_json(client: HttpClient, path: str, params: dict[str, str] | None, what: str) -> object:
    """A JSON answer, or StoreError naming the URL and why."""
    resp = checked(client, path, params, what)
    try:
        return json.loads(resp.body)
    except ValueError:
        raise StoreError(f"{client.base_url}{path}: the answer to {what} is not JSON "
                         f"({_looks_like(resp)}); is this the right URL?") from None


def checked(client: HttpClient, path: str, params: dict[str, str] | None, what: str) -> Response:
    try:
        resp = client.request("GET", path, params=params)
    except TransportError as e:
        raise StoreError(f"{client.base_url}{path}: {what} failed: {e.message}") from None
    if resp.status == 200:
        return resp
    hint = {401: "the store wants credentials: set $PROFILE_FIRST_TRACES_TOKEN (or _TOKEN_FILE, or _USER and "
                 "_PASSWORD)",
            403: "the credentials are refused for this tenant or path",
            404: "no such endpoint: is this the store's query URL (with its path prefix)?"}.get(resp.status, "")
    body = client.redact(resp.body[:200].decode("utf-8", "replace")).replace("\n", " ").strip()
    raise StoreError(f"{client.base_url}{path}: {what} refused: HTTP {resp.status}"
                     + (f" ({hint})" if hint else "") + (f": {body}" if body and resp.status >= 500 else ""))


def _looks_like(resp: Response) -> str:
    head = resp.body[:100].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return f"got an HTML page, HTTP {resp.status}"
    return f"HTTP {resp.status}, {len(resp.body)} bytes"


def sliced(search: Callable[[int, int], list[Found]], start_ns: int, end_ns: int, limit: int,
           max_searches: int, min_slice_ns: int) -> tuple[list[Found], int]:
    """`search` over [start_ns, end_ns), splitting any slice whose answer is full; (found, requests)."""
    todo = [(start_ns, end_ns)]
    out: dict[str, Found] = {}
    sent = 0
    while todo and sent < max_searches:
        s, e = todo.pop(0)
        got = search(s, e)
        sent += 1
        for f in got:
            out.setdefault(f.candidate.trace_id, f)
        if len(got) >= limit and e - s > 2 * min_slice_ns:
            mid = s + (e - s) // 2
            todo += [(s, mid), (mid, e)]
    return list(out.values()), sent


def search_each(keys: list, search: Callable[[object, int, int], list[Found]], start_ns: int, end_ns: int,
                limit: int, settings: StoreSettings) -> list[Found]:
    """`search(key, start, end)` over the window for every key (a service, a query), sliced where an
    answer is full (`sliced`); each trace once."""
    found: dict[str, Found] = {}
    for key in keys:
        got, _ = sliced(lambda s, e, k=key: search(k, s, e), start_ns, end_ns, limit, settings.max_searches,
                        int(settings.min_slice_s * NS))
        for f in got:
            found.setdefault(f.candidate.trace_id, f)
    return list(found.values())


SPAN_METRICS = "span-metrics in Prometheus over the whole window (increase and histogram_quantile of entry spans)"


def external_top(ranked: list[Ranked], services: list[str], settings: StoreSettings) -> list[Ranked]:
    """The first `top_operations` of an outside ranking (span-metrics) among `services` (the store's),
    marked targeted; none when the ranking names none of them."""
    top = [r for r in ranked if r.service in services][: settings.top_operations]
    for r in top:
        r.targeted = True
    return top


def tail_pass(found: dict[str, Found], search_above: Callable[[tuple[str, str], int], list[Found]],
              ranked: dict[tuple[str, str], Ranked] | None = None, limit: int = 0
              ) -> tuple[dict[tuple[str, str], Whole], int]:
    """The tail on purpose, for a store that counts nothing (Jaeger, Zipkin): per root (service,
    operation) listed, its p95 becomes the `minDuration` of one more search, `search_above(key,
    min_us)`, which lists the slow traces a limit-cut first pass missed. The p95 is the window's
    where `ranked` (span-metrics) has the operation, else the listed durations'; to the microsecond.
    The traces are added to `found` (trace id -> Found); returns each key's `Whole` (the ranked count,
    else the listed one, split at that p95) and how many traces the tail searches added."""
    groups: dict[tuple[str, str], list[int]] = {}
    for f in found.values():
        groups.setdefault((f.candidate.service, f.candidate.operation), []).append(f.candidate.duration_ns)
    whole: dict[tuple[str, str], Whole] = {}
    added = 0
    for key, durations in sorted(groups.items()):
        r = (ranked or {}).get(key)
        threshold_us = int((r.p95_ns if r else weighted_quantile(np.asarray(durations), TAIL_Q)) // 1000)
        got = search_above(key, threshold_us + 1)
        # The store filters on any span of the service: keep the traces whose root is this key's and slow.
        mine = list(durations)  # a tail search adds only traces rooted at its own key
        for f in got:
            c = f.candidate
            if (c.service, c.operation) == key and c.duration_ns > threshold_us * 1000 and c.trace_id not in found:
                found[c.trace_id] = f
                mine.append(c.duration_ns)
                added += 1
        if r is None:
            whole[key] = Whole(count=len(mine), tail_threshold_ns=threshold_us * 1000.0)
            continue
        r.p95_ns = threshold_us * 1000.0
        whole[key] = ranked_whole(r, len(mine), sum(d > r.p95_ns for d in mine), len(got) < limit)
    return whole, added


def pull(store: Store, settings: StoreSettings, start_ns: int, end_ns: int, services: list[str] | None,
         progress: Progress | None = None) -> LoadedTraces:
    """The sampled traces of the window as one weighted SpanTable (see the module docstring)."""
    stats = SourceStats(path=settings.url, format=f"{store.name}-api")
    if progress:
        progress(0, 1, "listing the window's traces")  # ranking and searches come before any count is known
    found = store.search(start_ns, end_ns, services, settings.search_limit)
    if not found:
        raise StoreError(f"{settings.url}: the {store.name} search found no traces between "
                         f"{start_ns // NS} and {end_ns // NS} (unix s)"
                         + (f" for {', '.join(services)}" if services else "") + "; widen --window or check --service")
    try:
        population = store.population(start_ns, end_ns)
    except StoreError as e:
        population = {}
        stats.note(f"no whole-window counts: {e}")
    plan = SamplingPlan(tail_cap=settings.per_operation, body_size=settings.per_operation)
    sample = draw((f.candidate for f in found), plan, population)
    by_id = {f.candidate.trace_id: f for f in found}
    builder = TableBuilder()
    decoder = TraceDecoder(builder)
    pulled: dict[str, float] = {}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for tid, payload, error in _fetch_all(store, sample.trace_ids, by_id, settings.concurrency, progress):
            if payload is None:
                stats.skipped["traces_not_fetched"] += 1
                stats.note(f"trace {tid}: {error}")
                continue
            _decode(decoder, payload, stats)
            stats.messages += 1
            pulled[tid] = sample.weights[tid]
        decoder.flush()
    finally:
        if gc_was:
            gc.enable()
    table = weigh(builder.finish(), _reweighted(pulled, sample.weights, by_id))
    stats.format = f"{store.name}-api"  # the converters name the payloads' format; the source is the API
    stats.sampling = {**sample.report(pulled=len(pulled)), **store.ranking()}
    return LoadedTraces(table=table, sources=[stats], repairs=builder.repairs)


def _reweighted(pulled: dict[str, float], selected: dict[str, float], by_id: dict[str, Found]) -> dict[str, float]:
    """Weights of the traces pulled, scaled per (service, operation) so that they add up to what the
    selected ones did: a trace that could not be fetched is stood for by the others of its stratum
    (the usual non-response adjustment) instead of silently lowering the totals."""
    want: dict[tuple[str, str], float] = {}
    got: dict[tuple[str, str], float] = {}
    key = {t: (by_id[t].candidate.service, by_id[t].candidate.operation) for t in selected}
    for t, w in selected.items():
        want[key[t]] = want.get(key[t], 0.0) + w
    for t, w in pulled.items():
        got[key[t]] = got.get(key[t], 0.0) + w
    return {t: w * want[key[t]] / got[key[t]] for t, w in pulled.items()}


def _fetch_all(store: Store, ids: list[str], by_id: dict[str, Found], concurrency: int,
               progress: Progress | None) -> Iterator[tuple[str, Payload | None, str]]:
    """(trace id, payload or None, error) for each id; bodies the search carried are not fetched again."""
    total = len(ids)
    done = 0
    missing = [t for t in ids if by_id[t].payload is None]
    for t in ids:
        if by_id[t].payload is not None:
            done += 1
            yield t, by_id[t].payload, ""
    if progress:
        progress(done, total, "traces")
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = {pool.submit(store.fetch, t): t for t in missing}
        for fut in as_completed(futures):
            t = futures[fut]
            done += 1
            if progress:
                progress(done, total, "traces")
            try:
                yield t, fut.result(), ""
            except StoreError as e:
                yield t, None, str(e)


def _decode(decoder: TraceDecoder, payload: Payload, stats: SourceStats) -> None:
    kind, body = payload
    if kind == "proto":
        decoder.add_proto(body, stats)  # type: ignore[arg-type]
        return
    for doc in trace_json.to_otlp(body, stats):
        decoder.add_json(doc, stats)


def roots(doc: dict) -> Iterable[tuple[str, str, int]]:
    """(service, span name, duration ns) of each root span of an OTLP/JSON document: a span with no
    parent, or whose parent is not in the document."""
    spans = []
    for rs in doc.get("resourceSpans") or ():
        attrs = {kv.get("key"): (kv.get("value") or {}).get("stringValue")
                 for kv in ((rs.get("resource") or {}).get("attributes") or ())}
        service = attrs.get("service.name") or "unknown_service"
        for ss in rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or ():
            for s in ss.get("spans") or ():
                spans.append((service, s))
    ids = {s.get("spanId") for _, s in spans}
    for service, s in spans:
        if not s.get("parentSpanId") or s.get("parentSpanId") not in ids:
            yield service, str(s.get("name") or ""), int(s.get("endTimeUnixNano") or 0) - int(s.get("startTimeUnixNano") or 0)


def candidate_of(trace_id: str, doc: dict) -> Candidate | None:
    """The candidate for a whole trace: its longest root's service, operation and duration."""
    found = sorted(roots(doc), key=lambda r: -r[2])
    if not found:
        return None
    service, name, duration = found[0]
    return Candidate(trace_id, service, name, duration)
