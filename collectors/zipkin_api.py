"""Zipkin as a trace source (`--zipkin URL`).

`GET /api/v2/services`, per service its span names (`GET /api/v2/spans?serviceName=`), then per
(service, span name) `GET /api/v2/traces?serviceName=&spanName=&endTs=&lookback=&limit=`
(milliseconds), which answers whole traces as lists of Zipkin v2 spans (collectors/zipkin_json.py
reads them, shared client/server spans included). Searching per span name gives each operation its
own search limit, so a busy one does not crowd out the rest (a service whose spans have no name is
searched by service alone).

Zipkin counts nothing for the window, so the tail is pulled on purpose, as for Jaeger
(`store_pull.tail_pass`): each root operation's p95 of the first pass becomes the `minDuration`
(microseconds; Zipkin keeps a trace when a span of the service lasts at least that long) of one more
search, which lists the slow traces a limit-cut first pass missed. The sample is drawn from those
traces; nothing is fetched twice.
With span-metrics in Prometheus (collectors/span_metrics.py), only the entry operations they rank
first are searched (lowercased, as Zipkin stores names), each tail at their p95, and the sample is
weighted to their counts.

A trace whose spans name no service (no `localEndpoint.serviceName`, as an Envoy sidecar without
a configured cluster name writes) is listed by no service's search. Without `--service`, one more
search without `serviceName` (which the API allows: every trace of the window) lists them too;
they are analyzed under `unknown_service` and counted in `input` (`traces_without_service`).
"""

from __future__ import annotations

from collectors import zipkin_json
from collectors.otlp_files import SourceStats
from collectors.otlp_shape import trace_id as hex_trace_id
from collectors.sampling import Whole
from collectors.store_pull import (SPAN_METRICS, Found, Payload, Ranked, StoreError, StoreSettings, candidate_of,
                                   external_top, get_json, search_each, tail_pass)

ALL = ""  # the search key of the search without serviceName


class Zipkin:
    name = "zipkin"

    def __init__(self, settings: StoreSettings, span_metrics: list[Ranked] | None = None) -> None:
        self.settings = settings
        self.span_metrics = span_metrics or []  # the window's entry operations ranked from span-metrics
        self._targeted = 0
        self.api = settings.client("application/json")
        self._unnamed: int | None = None  # None: not looked for (--service given)
        self._whole: dict[tuple[str, str], Whole] = {}
        self._searches = 0
        self._tail_added = 0
        self._read: dict[str, Found] = {}  # trace id -> the trace as first listed

    def search(self, start_ns: int, end_ns: int, services: list[str] | None, limit: int) -> list[Found]:
        known = get_json(self.api, "/api/v2/services", None, "the service list")
        if not isinstance(known, list):
            raise StoreError(f"{self.api.base_url}/api/v2/services: not a Zipkin answer (a list of services)")
        wanted = [str(s) for s in known if not services or s in services]
        named = {str(s).lower() for s in known}
        # Zipkin keeps service and span names lowercased; span-metrics keep them as the SDK wrote them.
        lowered = {s.lower() for s in wanted}
        top = external_top(self.span_metrics, [r.service for r in self.span_metrics if r.service.lower() in lowered],
                           self.settings)
        pairs = [(r.service.lower(), r.operation.lower()) for r in top] or [
            (svc, name) for svc in wanted for name in self._span_names(svc) or [ALL]]
        self._searches, self._targeted = len(pairs), len(top)
        by_id = {f.candidate.trace_id: f for f in search_each(
            pairs, lambda key, s, e: self._search(key[0], s, e, limit, span_name=key[1]), start_ns, end_ns, limit,
            self.settings)}
        # A root naming no service (read as unknown_service) cannot be searched by it.
        self._whole, self._tail_added = tail_pass(
            by_id, lambda key, min_us: self._search(key[0], start_ns, end_ns, limit, span_name=key[1], min_us=min_us)
            if key[0].lower() in named else [], {(r.service.lower(), r.operation.lower()): r for r in top}, limit)
        found = list(by_id.values())
        if services:
            return found
        seen = {f.candidate.trace_id for f in found}
        everything = search_each([ALL], lambda svc, s, e: self._search(svc, s, e, limit), start_ns, end_ns, limit,
                                 self.settings)
        unnamed = [f for f in everything if f.candidate.trace_id not in seen and not _names_a_service(f)]
        self._unnamed = len(unnamed)
        return found + unnamed

    def _span_names(self, service: str) -> list[str]:
        answer = get_json(self.api, "/api/v2/spans", {"serviceName": service}, f"the span names of {service}")
        return sorted({str(n) for n in answer if n}) if isinstance(answer, list) else []

    def _search(self, service: str, start_ns: int, end_ns: int, limit: int, span_name: str = ALL,
                min_us: int | None = None) -> list[Found]:
        end_ms, start_ms = end_ns // 1_000_000, start_ns // 1_000_000
        params = {"endTs": str(end_ms), "lookback": str(max(1, end_ms - start_ms)), "limit": str(limit)}
        if service != ALL:
            params["serviceName"] = service
        if span_name != ALL:
            params["spanName"] = span_name
        if min_us is not None:
            params["minDuration"] = str(min_us)
        answer = get_json(self.api, "/api/v2/traces", params,
                          f"the trace search for {service}" if service != ALL else "the trace search")
        out = []
        scratch = SourceStats(path="")
        for spans in answer if isinstance(answer, list) else []:
            if not isinstance(spans, list) or not spans or not isinstance(spans[0], dict):
                continue
            tid = hex_trace_id(spans[0].get("traceId"))
            if tid in self._read:  # listed by an earlier search (one per span name): read once
                out.append(self._read[tid])
                continue
            (doc,) = zipkin_json.to_otlp([spans], scratch)
            c = candidate_of(tid, doc)
            if c is not None:
                out.append(self._read.setdefault(tid, Found(c, ("json", [spans]))))
        return out

    def fetch(self, trace_id: str) -> Payload:
        raise StoreError(f"trace {trace_id} was not in the search answer")  # searches carry whole traces

    def population(self, start_ns: int, end_ns: int) -> dict[tuple[str, str], int | Whole]:
        # No aggregate count API: the listed traces are the population, split at the p95 the tail was searched with.
        return dict(self._whole)

    def ranking(self) -> dict:
        tail = f"({self._tail_added} more tail traces listed)"
        out: dict = {"ranked_by": f"search results: {self._searches} (service, span name) searches, then one "
                                  f"minDuration search per root operation above its p95 {tail}"}
        if self._targeted:
            out = {"ranked_by": f"{SPAN_METRICS}; the top {self._targeted} of {len(self.span_metrics)} entry "
                                f"operations searched, then each again with minDuration at the window's p95 {tail}",
                   "ranked": [r.to_dict() for r in self.span_metrics[: max(self._targeted, 20)]]}
        if self._unnamed is not None:
            out["ranked_by"] += ", and one search without serviceName for spans naming no service"
            out["traces_without_service"] = self._unnamed
        return out


def _names_a_service(found: Found) -> bool:
    _, body = found.payload  # type: ignore[misc]
    return any((s.get("localEndpoint") or {}).get("serviceName") for trace in body for s in trace
               if isinstance(s, dict))
