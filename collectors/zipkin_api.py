"""Zipkin as a trace source (`--zipkin URL`).

`GET /api/v2/services`, then per service `GET /api/v2/traces?serviceName=&endTs=&lookback=&limit=`
(milliseconds), which answers whole traces as lists of Zipkin v2 spans (collectors/zipkin_json.py
reads them, shared client/server spans included). The sample is drawn from those traces; nothing
is fetched twice. A trace whose spans name no service is listed by no service's search.
"""

from __future__ import annotations

from collectors import zipkin_json
from collectors.otlp_files import SourceStats
from collectors.otlp_shape import trace_id as hex_trace_id
from collectors.store_pull import Found, Payload, StoreError, StoreSettings, candidate_of, get_json, search_each


class Zipkin:
    name = "zipkin"

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.api = settings.client("application/json")

    def search(self, start_ns: int, end_ns: int, services: list[str] | None, limit: int) -> list[Found]:
        known = get_json(self.api, "/api/v2/services", None, "the service list")
        if not isinstance(known, list):
            raise StoreError(f"{self.api.base_url}/api/v2/services: not a Zipkin answer (a list of services)")
        wanted = [str(s) for s in known if not services or s in services]
        return search_each(wanted, lambda svc, s, e: self._search(svc, s, e, limit), start_ns, end_ns, limit,
                           self.settings)

    def _search(self, service: str, start_ns: int, end_ns: int, limit: int) -> list[Found]:
        end_ms, start_ms = end_ns // 1_000_000, start_ns // 1_000_000
        params = {"serviceName": service, "endTs": str(end_ms), "lookback": str(max(1, end_ms - start_ms)),
                  "limit": str(limit)}
        answer = get_json(self.api, "/api/v2/traces", params, f"the trace search for {service}")
        out = []
        scratch = SourceStats(path="")
        for spans in answer if isinstance(answer, list) else []:
            if not isinstance(spans, list) or not spans or not isinstance(spans[0], dict):
                continue
            tid = hex_trace_id(spans[0].get("traceId"))
            (doc,) = zipkin_json.to_otlp([spans], scratch)
            c = candidate_of(tid, doc)
            if c is not None:
                out.append(Found(c, ("json", [spans])))
        return out

    def fetch(self, trace_id: str) -> Payload:
        raise StoreError(f"trace {trace_id} was not in the search answer")  # searches carry whole traces

    def population(self, start_ns: int, end_ns: int) -> dict[tuple[str, str], int]:
        return {}  # Zipkin has no aggregate count API: the searches' list is the population
