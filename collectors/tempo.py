"""Grafana Tempo as a trace source (`--tempo URL`).

- Ranking first, over the whole window, from what Tempo aggregates (TraceQL metrics, instant
  `GET /api/metrics/query`, else `GET /api/metrics/query_range` with one step over the window):
  `{nestedSetParent = -1} | rate() by (resource.service.name, name)` gives each entry operation's
  trace count (rate x window), `... | quantile_over_time(duration, .5, .95, .99) by (...)` its
  latency. Operations are ranked by count x p50 (their time over the window, p99 breaking ties);
  the `top_operations` first are pulled, each with two targeted TraceQL searches: its tail
  (`duration > p95`, whole up to the search limit) and its body (`duration <= p95`), so the tail
  is never left to a uniform search. The sample is then weighted to the metrics' counts.
- A Tempo without TraceQL metrics (404 before 2.4, or an error) falls back to ranking from the
  search results (`GET /api/search?q=<TraceQL>&start=&end=&limit=&spss=`: `rootServiceName`,
  `rootTraceName`, `durationMs` per trace), and `input` says so; so does a run with a `--traceql`
  filter, which a metrics query over entry spans cannot apply. With `--service`, one search per
  service (`{resource.service.name="checkout"}` joined to the configured filter).
- Traces by id: `GET /api/traces/<id>` with `Accept: application/protobuf`: a `tempopb.Trace`,
  whose field 1 (`batches`, ResourceSpans) has the layout of an ExportTraceServiceRequest, so the
  protobuf reader takes it as it is. A JSON answer (`{"batches": …}` or `{"resourceSpans": …}`)
  is read too.
- Multi-tenant installs: `X-Scope-OrgID` from `--tenant` / `tenant`.
- Environments (`report`'s `deployment.environment` filter): each of the two attribute names
  the Tempo knows values of (`/api/v2/search/tag/<name>/values`) becomes a condition in every
  search and every metrics query, so only those environments' traces are ranked and listed. A
  Tempo whose resources name no environment is searched unfiltered (TraceQL cannot say "absent").

TraceQL metrics answers (tempopb QueryInstantResponse / QueryRangeResponse as JSON):
`{"series": [{"labels": [{"key": "resource.service.name", "value": {"stringValue": "cart"}},
{"key": "p", "value": {"doubleValue": 0.95}}], "value": 0.41, "promLabels": "…"}]}` (instant), or
`"samples": [{"timestampMs": "1715000000000", "value": 0.41}]` per series (range).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from analyzer.model.semconv import DEPLOYMENT_ENVIRONMENT
from collectors.sampling import Candidate, Whole
from collectors.store_pull import (NS, SPAN_METRICS, Found, Payload, Ranked, StoreError, StoreSettings, by_time,
                                   checked, get_json, ranked_whole, search_each, sliced)

RATE = "rate() by (resource.service.name, name)"
QUANTILES = "quantile_over_time(duration, .5, .95, .99) by (resource.service.name, name)"


class Tempo:
    name = "tempo"

    def __init__(self, settings: StoreSettings, span_metrics: Callable[[], list[Ranked]] | None = None) -> None:
        self.settings = settings
        # Asked only when TraceQL metrics are unavailable: a Tempo ranking by its own metrics sends
        # Prometheus no span-metrics queries.
        self.span_metrics = span_metrics
        self.api = settings.client("application/json")
        self.raw = settings.client("application/protobuf")
        self._whole: dict[tuple[str, str], Whole] = {}
        self._ranking: dict = {}
        self.environment: str | None = None  # the TraceQL condition of the environments, "" for none

    # ---- ranking and the targeted searches --------------------------------------------------

    def search(self, start_ns: int, end_ns: int, services: list[str] | None, limit: int) -> list[Found]:
        self.environment = self._environment(start_ns, end_ns)
        if self.settings.query.strip() not in ("", "{}"):
            # A metrics query over `{filter} && {entry spans}` would count the filter's spans too.
            self._ranking = {"ranked_by": "search results (a TraceQL filter was given: the metrics cannot apply it)"}
            return self._plain_search(start_ns, end_ns, services, limit)
        by = "TraceQL metrics over the whole window (rate and quantile_over_time of entry spans)"
        try:
            ranked = self.rank(start_ns, end_ns)
        except StoreError as e:
            if "HTTP 401" in str(e) or "HTTP 403" in str(e):
                raise  # credentials: the search would be refused the same way
            ranked = self.span_metrics() if self.span_metrics else []
            if not ranked:
                self._ranking = {"ranked_by": f"search results (TraceQL metrics unavailable: {e})"}
                return self._plain_search(start_ns, end_ns, services, limit)
            by = f"{SPAN_METRICS} (TraceQL metrics unavailable: {e})"
        if services:
            ranked = [r for r in ranked if r.service in services]
        if not ranked:
            why = ("no entry operation of " + ", ".join(services) + ": their spans are not trace roots"
                   if services else "TraceQL metrics counted no entry spans in the window")
            self._ranking = {"ranked_by": f"search results ({why})"}
            return self._plain_search(start_ns, end_ns, services, limit)
        top = ranked[: self.settings.top_operations]
        found: dict[str, Found] = {}
        for r in top:
            r.targeted = True
            base = self._op_query(r.service, r.operation)
            tail = self._sliced(f"{base[:-1]} && duration > {_ms(r.p95_ns)}}}", start_ns, end_ns, limit)
            body = self._sliced(f"{base[:-1]} && duration <= {_ms(r.p95_ns)}}}", start_ns, end_ns, limit)
            for f in tail + body:
                found.setdefault(f.candidate.trace_id, f)
            self._whole[(r.service, r.operation)] = ranked_whole(r, r.count, len(tail), len(tail) < limit)
        self._ranking = {"ranked_by": f"{by}; the top {len(top)} of {len(ranked)} entry operations pulled, "
                                      "tail and body searched apart at the window's p95",
                         "ranked": [r.to_dict() for r in ranked[: max(len(top), 20)]]}
        return list(found.values())

    def rank(self, start_ns: int, end_ns: int) -> list[Ranked]:
        """Entry operations by their time over the window (count x p50), from TraceQL metrics."""
        window_s = max(1.0, (end_ns - start_ns) / NS)
        rates = {k: v for (k, _), v in self._metrics(self._roots(RATE), start_ns, end_ns).items()}
        quantiles = self._metrics(self._roots(QUANTILES), start_ns, end_ns)
        out = []
        for key, rate in rates.items():
            count = round(rate * window_s)
            if count <= 0:
                continue
            q = {p: quantiles.get((key, p)) for p in (0.5, 0.95, 0.99)}
            if any(v is None for v in q.values()):
                continue  # no latency for it: it cannot be stratified at its p95
            # TraceQL metrics give durations in seconds.
            # Durations come in seconds; the p95 is cut to the microsecond, as the tail search's literal is.
            p95 = float(int(q[0.95] * NS) // 1000 * 1000)
            out.append(Ranked(key[0], key[1], count, q[0.5] * NS, p95, q[0.99] * NS))
        return by_time(out)

    def _metrics(self, query: str, start_ns: int, end_ns: int) -> dict[tuple[tuple[str, str], float | None], float]:
        """{((service, name), p or None): value} of a TraceQL metrics query over the window: the instant
        endpoint, else the range one with one step over the window (its samples averaged)."""
        start, end = str(start_ns // NS), str(max(end_ns // NS, start_ns // NS + 1))
        try:
            answer = get_json(self.api, "/api/metrics/query", {"q": query, "start": start, "end": end},
                              "the TraceQL metrics query")
        except StoreError as e:
            if "HTTP 404" not in str(e):
                raise
            step = f"{max(1, int(end) - int(start))}s"
            answer = get_json(self.api, "/api/metrics/query_range",
                              {"q": query, "start": start, "end": end, "step": step}, "the TraceQL metrics query")
        series = answer.get("series") if isinstance(answer, dict) else None
        if not isinstance(series, list):
            raise StoreError(f"{self.api.base_url}/api/metrics: not a TraceQL metrics answer (no `series` list)")
        out: dict = {}
        for s in series:
            if not isinstance(s, dict):
                continue
            labels = {lab.get("key"): _label_value(lab.get("value")) for lab in s.get("labels") or ()
                      if isinstance(lab, dict)}
            value = _series_value(s)
            if value is None:
                continue
            p = labels.get("p")
            key = (str(labels.get("resource.service.name") or ""), str(labels.get("name") or ""))
            out[(key, float(p) if p not in (None, "") else None)] = value
        return out

    def _roots(self, function: str) -> str:
        """`{ nestedSetParent = -1 [&& (environments)] } | function`: a metrics query over entry spans."""
        env = f" && ({self.environment})" if self.environment else ""
        return "{ nestedSetParent = -1" + env + " } | " + function

    def _op_query(self, service: str, operation: str) -> str:
        env = f" && ({self.environment})" if self.environment else ""
        return ("{ nestedSetParent = -1 && resource.service.name = " + _string(service)
                + " && name = " + _string(operation) + env + " }")

    def _sliced(self, query: str, start_ns: int, end_ns: int, limit: int) -> list[Found]:
        got, _ = sliced(lambda s, e: self._search(query, s, e, limit, matched_root=True), start_ns, end_ns, limit,
                        self.settings.max_searches, int(self.settings.min_slice_s * NS))
        return got

    # ---- search results only -----------------------------------------------------------------

    def _plain_search(self, start_ns: int, end_ns: int, services: list[str] | None, limit: int) -> list[Found]:
        queries = [self._query(f"resource.service.name={_string(s)}") for s in services] if services else [
            self._query("")]
        return search_each(queries, lambda q, s, e: self._search(q, s, e, limit), start_ns, end_ns, limit,
                           self.settings)

    def _query(self, condition: str) -> str:
        """`{condition && (environments)}`, joined with the configured filter when there is one."""
        own = " && ".join(c for c in (condition, f"({self.environment})" if self.environment else "") if c)
        q = self.settings.query.strip()
        if not own:
            return q
        return "{" + own + "}" if q in ("", "{}") else f"{q} && {{{own}}}"

    def _environment(self, start_ns: int, end_ns: int) -> str:
        """`resource.<name> = "production" || ...` over the names of the environment attribute this
        Tempo has values for; "" when none (or no filter asked)."""
        if not self.settings.environments:
            return ""
        params = {"start": str(start_ns // NS), "end": str(max(end_ns // NS, start_ns // NS + 1))}
        known = []
        for name in DEPLOYMENT_ENVIRONMENT:
            try:
                answer = get_json(self.api, f"/api/v2/search/tag/resource.{name}/values", params, f"the {name} values")
            except StoreError:  # an older Tempo, or none: the spans are filtered once read
                continue
            if isinstance(answer, dict) and answer.get("tagValues"):
                known.append(name)
        return " || ".join(f"resource.{name} = {_string(env)}" for name in known for env in self.settings.environments)

    def _search(self, query: str, start_ns: int, end_ns: int, limit: int, matched_root: bool = False) -> list[Found]:
        """The traces a TraceQL search lists. With `matched_root` the query matches root spans only, so
        the matched span's `durationNanos` (exact) is the trace's duration rather than `durationMs`."""
        params = {"q": query, "start": str(start_ns // NS), "end": str(max(end_ns // NS, start_ns // NS + 1)),
                  "limit": str(limit), "spss": "1"}
        answer = get_json(self.api, "/api/search", params, "the TraceQL search")
        traces = answer.get("traces") if isinstance(answer, dict) else None
        if not isinstance(traces, list):
            raise StoreError(f"{self.api.base_url}/api/search: not a Tempo search answer (no `traces` list)")
        out = []
        for t in traces:
            if not isinstance(t, dict) or not t.get("traceID"):
                continue
            duration = int(float(t.get("durationMs") or 0) * 1_000_000)
            if matched_root:
                duration = _matched_duration(t) or duration
            out.append(Found(Candidate(str(t["traceID"]).lower().rjust(32, "0"),
                                       str(t.get("rootServiceName") or "unknown_service"),
                                       str(t.get("rootTraceName") or ""), duration)))
        return out

    # ---- the rest of the Store protocol --------------------------------------------------------

    def fetch(self, trace_id: str) -> Payload:
        resp = checked(self.raw, f"/api/traces/{trace_id}", None, f"trace {trace_id}")
        body = resp.body
        if resp.headers.get("content-type", "").startswith("application/json") or body[:1] == b"{":
            try:
                return "json", json.loads(body)
            except ValueError:
                raise StoreError(f"trace {trace_id}: the answer is neither protobuf nor JSON") from None
        return "proto", body

    def population(self, start_ns: int, end_ns: int) -> dict[tuple[str, str], int | Whole]:
        if self._whole:
            return dict(self._whole)
        # Ranked from search results: the metrics' counts (if any) still scale the weights.
        return {k: round(v * max(1.0, (end_ns - start_ns) / NS))
                for (k, _), v in self._metrics(self._roots(RATE), start_ns, end_ns).items()}

    def ranking(self) -> dict:
        return dict(self._ranking)


def _matched_duration(trace: dict) -> int | None:
    """`durationNanos` of the first matched span of a search result (`spanSets`, or the older `spanSet`)."""
    sets = trace.get("spanSets") or ([trace["spanSet"]] if isinstance(trace.get("spanSet"), dict) else [])
    for ss in sets:
        for span in (ss.get("spans") or ()) if isinstance(ss, dict) else ():
            try:
                return int(span["durationNanos"])
            except (KeyError, TypeError, ValueError):
                continue
    return None


def _ms(ns: float) -> str:
    """A TraceQL duration literal; rounded down to the microsecond so the tail search misses nothing."""
    return f"{int(ns // 1000)}us"


def _string(text: str) -> str:
    """A TraceQL string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label_value(value: object) -> str:
    """A TraceQL metrics label value: `{"stringValue": "checkout"}`, `{"doubleValue": 0.95}`."""
    if isinstance(value, dict) and value:
        return str(next(iter(value.values())))
    return str(value or "")


def _series_value(series: dict) -> float | None:
    """An instant series' `value`, or the mean of a range series' `samples`."""
    value = series.get("value")
    if value is None:
        samples = [s.get("value") for s in series.get("samples") or () if isinstance(s, dict)]
        vals = []
        for v in samples:
            try:
                vals.append(float(v))
            except (TypeError, ValueError):
                continue
        return sum(vals) / len(vals) if vals else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
