"""The Jaeger query service as a trace source (`--jaeger URL`).

`/api/v3` (Jaeger v2, recent 1.x) is asked first: `GET /api/v3/services`, per service
`GET /api/v3/operations?service=` (`{"operations": [{"name", "spanKind"}]}`), then per (service,
operation) `GET /api/v3/traces?query.service_name=&query.operation_name=&query.start_time_min=
&query.start_time_max=&query.search_depth=` (and its older name `query.num_traces`; RFC 3339
times; `query.duration_min` as "1.5s"),
whose answer is the traces themselves as OTLP/JSON wrapped in `{"result": …}` (one object per
line when it streams). A Jaeger that answers 404 there gets the legacy API the UI uses:
`GET /api/services`, `GET /api/services/{service}/operations` (`{"data": [name, …]}`) and
`GET /api/traces?service=&operation=&start=&end=&limit=&minDuration=` (microseconds; minDuration
as "1500us"), answering `{"data": [trace, …]}` in Jaeger's own JSON (collectors/jaeger_json.py).

Searching per (service, operation) gives every operation its own search limit, so a busy one
does not crowd out the rest. Jaeger counts nothing for the window, so the tail is pulled on
purpose: after the first pass, each entry operation's p95 (of the traces listed) is the
`minDuration` of a second search for that operation, which lists the slow traces a limit-cut first
pass missed; the sample then splits tail and body at that p95. Entry operations of kind server,
consumer or unspecified are searched (v3 says the kind; the legacy list does not, so all).
With span-metrics in Prometheus (collectors/span_metrics.py), only the entry operations they rank
first are searched, each tail at their p95, and the sample is weighted to their counts.

Both searches return whole traces, so nothing is fetched twice: the sample is drawn from what
the searches returned and the rest is dropped.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from urllib.parse import quote

from collectors import jaeger_json, otlp_wrapped
from collectors.otlp_files import SourceStats
from collectors.otlp_shape import trace_id as hex_trace_id
from collectors.sampling import Whole
from collectors.store_pull import (NS, SPAN_METRICS, Found, Payload, Ranked, StoreError, StoreSettings, candidate_of,
                                   checked, external_top, get_json, search_each, tail_pass)

ENTRY_KINDS = ("server", "consumer", "", "unspecified")


class Jaeger:
    name = "jaeger"

    def __init__(self, settings: StoreSettings, span_metrics: list[Ranked] | None = None) -> None:
        self.settings = settings
        self.span_metrics = span_metrics or []  # the window's entry operations ranked from span-metrics
        self.api = settings.client("application/json")
        self.v3: bool | None = None
        self._whole: dict[tuple[str, str], Whole] = {}
        self._tail_added = 0
        self._operations = 0
        self._targeted = 0

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

    def _operations_of(self, service: str) -> list[str]:
        """The service's entry operations (every operation when the API does not say the kind)."""
        if self.v3:
            answer = get_json(self.api, "/api/v3/operations", {"service": service}, f"the operations of {service}")
            ops = (answer.get("operations") or []) if isinstance(answer, dict) else []
            return sorted({str(o.get("name")) for o in ops if isinstance(o, dict) and o.get("name")
                           and str(o.get("spanKind") or "").lower() in ENTRY_KINDS})
        answer = get_json(self.api, f"/api/services/{quote(service, safe='')}/operations", None,
                          f"the operations of {service}")
        ops = (answer.get("data") or []) if isinstance(answer, dict) else []
        # Newer 1.x answer objects ({"name", "spanKind"}) here too.
        return sorted({str(o.get("name") if isinstance(o, dict) else o) for o in ops
                       if (o.get("name") if isinstance(o, dict) else o)
                       and (not isinstance(o, dict) or str(o.get("spanKind") or "").lower() in ENTRY_KINDS)})

    def search(self, start_ns: int, end_ns: int, services: list[str] | None, limit: int) -> list[Found]:
        known = self._services()
        wanted = [s for s in known if not services or s in services]
        top = external_top(self.span_metrics, wanted, self.settings)
        pairs = [(r.service, r.operation) for r in top] or [
            (svc, op) for svc in wanted for op in self._operations_of(svc)]
        self._operations = len(pairs)
        found = {f.candidate.trace_id: f for f in search_each(
            pairs, lambda key, s, e: self._search(key[0], key[1], s, e, limit), start_ns, end_ns, limit,
            self.settings)}
        self._whole, self._tail_added = tail_pass(
            found, lambda key, min_us: self._search(key[0], key[1], start_ns, end_ns, limit, min_us=min_us),
            {(r.service, r.operation): r for r in top}, limit)
        self._targeted = len(top)
        return list(found.values())

    def _search(self, service: str, operation: str, start_ns: int, end_ns: int, limit: int,
                min_us: int | None = None) -> list[Found]:
        what = f"the trace search for {service} {operation}"
        if self.v3:
            params = {"query.service_name": service, "query.operation_name": operation,
                      "query.start_time_min": _rfc3339(start_ns), "query.start_time_max": _rfc3339(end_ns),
                      # search_depth since Jaeger 2.x renamed num_traces, which stays an alias there
                      "query.search_depth": str(limit), "query.num_traces": str(limit)}
            if min_us is not None:
                params["query.duration_min"] = f"{min_us / 1e6:.6f}s"
            body = checked(self.api, "/api/v3/traces", params, what).body
            return self._v3_traces(body)
        params = {"service": service, "operation": operation, "start": str(start_ns // 1000),
                  "end": str(end_ns // 1000), "limit": str(limit)}
        if min_us is not None:
            params["minDuration"] = f"{min_us}us"
        answer = get_json(self.api, "/api/traces", params, what)
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

    def population(self, start_ns: int, end_ns: int) -> dict[tuple[str, str], int | Whole]:
        # Jaeger counts nothing for the window: the listed traces are the population, split at the p95
        # the tail was searched with.
        return dict(self._whole)

    def ranking(self) -> dict:
        tail = f"({self._tail_added} more tail traces listed)"
        if self._targeted:
            return {"ranked_by": f"{SPAN_METRICS}; the top {self._targeted} of {len(self.span_metrics)} entry "
                                 f"operations searched, then each again with minDuration at the window's p95 {tail}",
                    "ranked": [r.to_dict() for r in self.span_metrics[: max(self._targeted, 20)]]}
        return {"ranked_by": f"search results: {self._operations} (service, operation) searches, then one "
                             f"minDuration search per entry operation above its p95 {tail}"}


def _rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, timezone.utc).isoformat().replace("+00:00", "Z")
