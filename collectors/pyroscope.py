"""Grafana Pyroscope: each service's CPU profile for the window, merged by the server.

`GET /pyroscope/render?query=process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="X"}
&from=S&until=E&format=json` answers a flamebearer: `names`, and `levels`, one array per depth
of (x offset, total, self, name index) quadruples whose x offsets are delta-encoded against the
end of the previous node on the same level. Ticks divided by `metadata.sampleRate` are seconds.

Span profiles (Pyroscope's otel-profiling integrations) label samples with `span_name`; asking
for `{service_name="X", span_name="OP"}` gives the samples of one operation, which the PF-PROF
rules then use for that hot spot.

Requests go through the bounded client (collectors/http_client.py: total deadline, size cap,
retries, no credentials across a redirect to another host, secrets redacted). Credentials come
from the environment only: `$PROFILE_FIRST_PYROSCOPE_TOKEN(_FILE)` (bearer) or
`$PROFILE_FIRST_PYROSCOPE_USER` + `$PROFILE_FIRST_PYROSCOPE_PASSWORD(_FILE)`;
`$PROFILE_FIRST_PYROSCOPE_TENANT` is sent as `X-Scope-OrgID`.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Mapping, Sequence

from analyzer.model.profile import Profile, ProfileBuilder
from collectors.http_auth import Transport, connect
from collectors.http_client import HttpClient, TransportError
from collectors.profile_text import split_frame

PROFILE_TYPE = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
ENV_PREFIX = "PROFILE_FIRST_PYROSCOPE"
MAX_SPAN_QUERIES = 20  # operations asked for span profiles, per service


class PyroscopeError(Exception):
    pass


def selector(service: str, span_name: str | None = None) -> str:
    def q(v: str) -> str:
        return json.dumps(v)  # a PromQL-style string literal: quotes and backslashes escaped

    labels = f"service_name={q(service)}" + (f", span_name={q(span_name)}" if span_name else "")
    return f"{PROFILE_TYPE}{{{labels}}}"


def fetch_profiles(url: str, services: Sequence[str], start_s: float, end_s: float,
                   operations: dict[str, list[str]] | None = None, timeout: float = 30.0,
                   env: dict[str, str] | None = None) -> tuple[list[Profile], list[str]]:
    """(profiles, problems): one merged profile per service with samples, plus span-linked ones.

    A service with no profile in the window is reported in `problems`, never silently dropped."""
    client = _client(url, timeout, os.environ if env is None else env)
    profiles, problems = [], []
    for service in services:
        base = _render(client, selector(service), start_s, end_s)
        if base is None:
            problems.append(f"Pyroscope has no CPU profile for {service} in the window")
            continue
        b = ProfileBuilder()
        weights: dict[tuple[tuple[int, ...], str | None], float] = {}
        for stack, w in _stacks(b, base):
            weights[(stack, None)] = weights.get((stack, None), 0.0) + w
        for op in (operations or {}).get(service, [])[:MAX_SPAN_QUERIES]:
            doc = _render(client, selector(service, op), start_s, end_s)
            # Span-linked samples are a subset of the service's: move them under the span's name.
            for stack, w in (_stacks(b, doc) if doc is not None else ()):
                moved = min(w, weights.get((stack, None), 0.0))
                weights[(stack, None)] = weights.get((stack, None), 0.0) - moved
                weights[(stack, op)] = weights.get((stack, op), 0.0) + moved
        for (stack, op), w in weights.items():
            b.add(list(stack), w, op)
        profiles.append(b.finish(service, f"{url} ({selector(service)})", "pyroscope", unit="seconds"))
    return profiles, problems


def _client(url: str, timeout: float, env: Mapping[str, str]) -> HttpClient:
    tenant = env.get(f"{ENV_PREFIX}_TENANT")
    transport = Transport(timeout=timeout, headers={"X-Scope-OrgID": tenant} if tenant else {})
    try:
        return connect(url.rstrip("/"), transport, prefix=ENV_PREFIX, env=dict(env))
    except ValueError as err:
        raise PyroscopeError(str(err)) from None


def _render(client: HttpClient, query: str, start_s: float, end_s: float) -> dict | None:
    params = {"query": query, "from": str(int(start_s)), "until": str(int(end_s) + 1), "format": "json"}
    where = f"{client.base_url}/pyroscope/render"
    try:
        r = client.request("GET", "/pyroscope/render", params=params)
    except TransportError as err:
        raise PyroscopeError(f"cannot get {query} from Pyroscope at {where}: {err}") from None
    if r.status != 200:
        raise PyroscopeError(f"Pyroscope answered HTTP {r.status} for {query} at {where}")
    try:
        doc = json.loads(r.body)
    except ValueError:
        raise PyroscopeError(f"{where} does not look like a Pyroscope API (the answer is not JSON)") from None
    fb = doc.get("flamebearer") if isinstance(doc, dict) else None
    if not isinstance(fb, dict) or not fb.get("numTicks"):
        return None
    return doc


def _stacks(b: ProfileBuilder, doc: dict) -> list[tuple[tuple[int, ...], float]]:
    """(root-first frame codes, CPU seconds) of every flamebearer node with self time."""
    fb, meta = doc["flamebearer"], doc.get("metadata") or {}
    names = [str(n) for n in fb.get("names") or []]
    rate = float(meta.get("sampleRate") or 0) or (1e9 if meta.get("units") == "nanoseconds" else 100.0)
    codes = [b.frame(*split_frame(n)) for n in names]
    starts: list[list[int]] = []  # per level: absolute x of each node
    nodes: list[list[tuple[int, int, int]]] = []  # per level: (x, self, name)
    for level in fb.get("levels") or []:
        xs, ns, prev_end = [], [], 0
        for i in range(0, len(level) - 3, 4):
            x = prev_end + int(level[i])
            total, self_, name = int(level[i + 1]), int(level[i + 2]), int(level[i + 3])
            prev_end = x + total
            xs.append(x)
            ns.append((x, self_, name))
        starts.append(xs)
        nodes.append(ns)
    out = []
    for depth in range(1, len(nodes)):  # level 0 is the "total" root
        for x, self_, name in nodes[depth]:
            if self_ <= 0 or not 0 <= name < len(codes):
                continue
            stack = [codes[name]]
            for d in range(depth - 1, 0, -1):  # the parent is the node on the level above that spans x
                k = bisect.bisect_right(starts[d], x) - 1
                if k < 0:
                    break
                stack.append(codes[nodes[d][k][2]])
            out.append((tuple(reversed(stack)), self_ / rate))
    return out
