"""Grafana Tempo as a trace source (`--tempo URL`).

- Search: `GET /api/search?q=<TraceQL>&start=&end=&limit=&spss=` (seconds); each result names
  the trace's root service (`rootServiceName`), root span (`rootTraceName`) and `durationMs`,
  which is all the sampling needs. With `--service`, one TraceQL search per service
  (`{resource.service.name="checkout"}` joined to the configured filter), so one busy service does
  not use up the limit.
- Traces by id: `GET /api/traces/<id>` with `Accept: application/protobuf`: a `tempopb.Trace`,
  whose field 1 (`batches`, ResourceSpans) has the layout of an ExportTraceServiceRequest, so the
  protobuf reader takes it as it is. A JSON answer (`{"batches": …}` or `{"resourceSpans": …}`)
  is read too.
- Whole-window counts: TraceQL metrics (`/api/metrics/query`, `count_over_time() by
  (resource.service.name, name)` over root spans) where the Tempo offers them; the counts scale
  the sample's weights when the search listed fewer traces than there were. A Tempo without
  metrics (404, or an error) is noted and the search's own list is the population.
- Multi-tenant installs: `X-Scope-OrgID` from `--tenant` / `tenant`.
- Environments (`report`'s `deployment.environment` filter): each of the two attribute names
  the Tempo knows values of (`/api/v2/search/tag/<name>/values`) becomes a condition in every
  search and in the count, so only those environments' traces are listed. A Tempo whose
  resources name no environment is searched unfiltered (TraceQL cannot say "absent").
"""

from __future__ import annotations

import json

from analyzer.model.semconv import DEPLOYMENT_ENVIRONMENT
from collectors.sampling import Candidate
from collectors.store_pull import NS, Found, Payload, StoreError, StoreSettings, checked, get_json, search_each

ROOTS_COUNT = "{ nestedSetParent = -1%s } | count_over_time() by (resource.service.name, name)"


class Tempo:
    name = "tempo"

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.api = settings.client("application/json")
        self.raw = settings.client("application/protobuf")
        self.environment: str | None = None  # the TraceQL condition of the environments, "" for none

    def search(self, start_ns: int, end_ns: int, services: list[str] | None, limit: int) -> list[Found]:
        self.environment = self._environment(start_ns, end_ns)
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

    def _search(self, query: str, start_ns: int, end_ns: int, limit: int) -> list[Found]:
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
            ms = t.get("durationMs") or 0
            out.append(Found(Candidate(str(t["traceID"]).lower().rjust(32, "0"),
                                       str(t.get("rootServiceName") or "unknown_service"),
                                       str(t.get("rootTraceName") or ""), int(float(ms) * 1_000_000))))
        return out

    def fetch(self, trace_id: str) -> Payload:
        resp = checked(self.raw, f"/api/traces/{trace_id}", None, f"trace {trace_id}")
        body = resp.body
        if resp.headers.get("content-type", "").startswith("application/json") or body[:1] == b"{":
            try:
                return "json", json.loads(body)
            except ValueError:
                raise StoreError(f"trace {trace_id}: the answer is neither protobuf nor JSON") from None
        return "proto", body

    def population(self, start_ns: int, end_ns: int) -> dict[tuple[str, str], int]:
        roots = ROOTS_COUNT % (f" && ({self.environment})" if self.environment else "")
        params = {"q": roots, "start": str(start_ns // NS), "end": str(max(end_ns // NS, start_ns // NS + 1))}
        answer = get_json(self.api, "/api/metrics/query", params, "the TraceQL metrics count")
        out: dict[tuple[str, str], int] = {}
        for series in (answer.get("series") or []) if isinstance(answer, dict) else []:
            labels = {lab.get("key"): _label_value(lab.get("value")) for lab in series.get("labels") or ()}
            value = series.get("value")
            if value is None and series.get("samples"):
                value = series["samples"][-1].get("value")
            try:
                out[(labels.get("resource.service.name") or "", labels.get("name") or "")] = int(float(value))
            except (TypeError, ValueError):
                continue
        return out


def _string(text: str) -> str:
    """A TraceQL string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label_value(value: object) -> str:
    """A TraceQL metrics label value: `{"stringValue": "checkout"}`."""
    if isinstance(value, dict) and value:
        return str(next(iter(value.values())))
    return str(value or "")
