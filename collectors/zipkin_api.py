"""Zipkin as a trace source (`--zipkin URL`).

`GET /api/v2/services`, then per service `GET /api/v2/traces?serviceName=&endTs=&lookback=&limit=`
(milliseconds), which answers whole traces as lists of Zipkin v2 spans (collectors/zipkin_json.py
reads them, shared client/server spans included). The sample is drawn from those traces; nothing
is fetched twice.

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
from collectors.store_pull import Found, Payload, StoreError, StoreSettings, candidate_of, get_json, search_each

ALL = ""  # the search key of the search without serviceName


class Zipkin:
    name = "zipkin"

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.api = settings.client("application/json")
        self._unnamed: int | None = None  # None: not looked for (--service given)

    def search(self, start_ns: int, end_ns: int, services: list[str] | None, limit: int) -> list[Found]:
        known = get_json(self.api, "/api/v2/services", None, "the service list")
        if not isinstance(known, list):
            raise StoreError(f"{self.api.base_url}/api/v2/services: not a Zipkin answer (a list of services)")
        wanted = [str(s) for s in known if not services or s in services]
        found = search_each(wanted, lambda svc, s, e: self._search(svc, s, e, limit), start_ns, end_ns, limit,
                            self.settings)
        if services:
            return found
        seen = {f.candidate.trace_id for f in found}
        everything = search_each([ALL], lambda svc, s, e: self._search(svc, s, e, limit), start_ns, end_ns, limit,
                                 self.settings)
        unnamed = [f for f in everything if f.candidate.trace_id not in seen and not _names_a_service(f)]
        self._unnamed = len(unnamed)
        return found + unnamed

    def _search(self, service: str, start_ns: int, end_ns: int, limit: int) -> list[Found]:
        end_ms, start_ms = end_ns // 1_000_000, start_ns // 1_000_000
        params = {"endTs": str(end_ms), "lookback": str(max(1, end_ms - start_ms)), "limit": str(limit)}
        if service != ALL:
            params["serviceName"] = service
        answer = get_json(self.api, "/api/v2/traces", params,
                          f"the trace search for {service}" if service != ALL else "the trace search")
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

    def population(self, start_ns: int, end_ns: int) -> dict[tuple[str, str], int | Whole]:
        return {}  # Zipkin has no aggregate count API: the searches' list is the population

    def ranking(self) -> dict:
        if self._unnamed is None:
            return {"ranked_by": "search results (per service)"}
        return {"ranked_by": "search results (per service, and one without serviceName for spans naming none)",
                "traces_without_service": self._unnamed}


def _names_a_service(found: Found) -> bool:
    _, body = found.payload  # type: ignore[misc]
    return any((s.get("localEndpoint") or {}).get("serviceName") for trace in body for s in trace
               if isinstance(s, dict))
