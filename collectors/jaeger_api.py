"""The Jaeger query service as a trace source (`--jaeger URL`).

`/api/v3` (Jaeger v2, recent 1.x) is asked first: `GET /api/v3/services`, then per service
`GET /api/v3/traces?query.service_name=&query.start_time_min=&query.start_time_max=&query.num_traces=`
(RFC 3339 times), whose answer is the traces themselves as OTLP/JSON wrapped in `{"result": …}`
(one object per line when it streams). A Jaeger that answers 404 there gets the legacy API the UI
uses: `GET /api/services` and `GET /api/traces?service=&start=&end=&limit=` (microseconds),
answering `{"data": [trace, …]}` in Jaeger's own JSON (collectors/jaeger_json.py).

Both searches return whole traces, so nothing is fetched twice: the sample is drawn from what
the searches returned and the rest is dropped.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from collectors import jaeger_json, otlp_wrapped
from collectors.otlp_files import SourceStats
from collectors.otlp_shape import trace_id as hex_trace_id
from collectors.store_pull import (NS, Found, Payload, StoreError, StoreSettings, candidate_of, checked, get_json,
                                   search_each)


class Jaeger:
    name = "jaeger"

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.api = settings.client("application/json")
        self.v3: bool | None = None

    def _services(self) -> list[str]:
        try:
            answer = get_json(self.api, "/api/v3/services", None, "the service list")
            self.v3 = True
            return [str(s) for s in (answer.get("services") or [])] if isinstance(answer, dict) else []
        except StoreError as e:
            if "HTTP 404" not in str(e):
                raise
        self.v3 = False
        answer = get_json(self.api, "/api/services", None, "the service list")
        return [str(s) for s in (answer.get("data") or [])] if isinstance(answer, dict) else []

    def search(self, start_ns: int, end_ns: int, services: list[str] | None, limit: int) -> list[Found]:
        known = self._services()
        wanted = [s for s in known if not services or s in services]
        return search_each(wanted, lambda svc, s, e: self._search(svc, s, e, limit), start_ns, end_ns, limit,
                           self.settings)

    def _search(self, service: str, start_ns: int, end_ns: int, limit: int) -> list[Found]:
        if self.v3:
            params = {"query.service_name": service, "query.start_time_min": _rfc3339(start_ns),
                      "query.start_time_max": _rfc3339(end_ns), "query.num_traces": str(limit)}
            body = checked(self.api, "/api/v3/traces", params, f"the trace search for {service}").body
            return self._v3_traces(body)
        params = {"service": service, "start": str(start_ns // 1000), "end": str(end_ns // 1000), "limit": str(limit)}
        answer = get_json(self.api, "/api/traces", params, f"the trace search for {service}")
        out = []
        scratch = SourceStats(path="")
        for trace in (answer.get("data") or []) if isinstance(answer, dict) else []:
            if not isinstance(trace, dict):
                continue
            doc = jaeger_json.trace_to_otlp(trace, scratch)
            c = candidate_of(hex_trace_id(trace.get("traceID")), doc)
            if c is not None:
                out.append(Found(c, ("json", {"data": [trace]})))
        return out

    def _v3_traces(self, body: bytes) -> list[Found]:
        """The traces of a v3 answer: one `{"result": …}` object, or one per line."""
        out = []
        for line in body.splitlines() or [body]:
            if not line.strip():
                continue
            try:
                doc = otlp_wrapped.hex_ids(otlp_wrapped.unwrap(json.loads(line)), SourceStats(path=""))
            except (ValueError, AttributeError):
                raise StoreError(f"{self.api.base_url}/api/v3/traces: the answer is not OTLP JSON") from None
            by_trace: dict[str, list] = {}
            for rs in doc.get("resourceSpans") or ():
                for ss in rs.get("scopeSpans") or ():
                    for s in ss.get("spans") or ():
                        by_trace.setdefault(str(s.get("traceId") or ""), []).append((rs, s))
            for tid, spans in by_trace.items():
                one = {"resourceSpans": [{"resource": rs.get("resource") or {}, "scopeSpans": [{"spans": [s]}]}
                                         for rs, s in spans]}
                c = candidate_of(tid, one)
                if c is not None:
                    out.append(Found(c, ("json", one)))
        return out

    def fetch(self, trace_id: str) -> Payload:
        raise StoreError(f"trace {trace_id} was not in the search answer")  # searches carry whole traces

    def population(self, start_ns: int, end_ns: int) -> dict[tuple[str, str], int]:
        return {}  # Jaeger has no aggregate count API: the searches' list is the population


def _rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, timezone.utc).isoformat().replace("+00:00", "Z")
