"""Grafana Pyroscope: each service's CPU profile for the window, merged by the server.

`GET /pyroscope/render?query=process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="X"}
&from=S&until=E&format=json` answers a flamebearer: `names`, and `levels`, one array per depth
of (x offset, total, self, name index) quadruples whose x offsets are delta-encoded against the
end of the previous node on the same level. Ticks divided by `metadata.sampleRate` are seconds.

Span profiles (Pyroscope's otel-profiling integrations) label samples with `span_name`; asking
for `{service_name="X", span_name="OP"}` gives the samples of one operation, which the PF-PROF
rules then use for that hot spot.

Credentials come from the environment only: `$PROFILE_FIRST_PYROSCOPE_TOKEN` (bearer) or
`$PROFILE_FIRST_PYROSCOPE_USER` + `$PROFILE_FIRST_PYROSCOPE_PASSWORD`; `$PROFILE_FIRST_PYROSCOPE_TENANT`
is sent as `X-Scope-OrgID`.
"""

from __future__ import annotations

import bisect
import json
import os
import time
from collections.abc import Sequence

import requests

from analyzer.profile import Profile, ProfileBuilder
from collectors.profile_text import split_frame

PROFILE_TYPE = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
MAX_RESPONSE = 64 << 20  # a merged flame graph is a summary; this bounds a misbehaving server
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
    session = _session(os.environ if env is None else env)
    profiles, problems = [], []
    for service in services:
        base = _render(session, url, selector(service), start_s, end_s, timeout)
        if base is None:
            problems.append(f"Pyroscope has no CPU profile for {service} in the window")
            continue
        b = ProfileBuilder()
        weights: dict[tuple[tuple[int, ...], str | None], float] = {}
        for stack, w in _stacks(b, base):
            weights[(stack, None)] = weights.get((stack, None), 0.0) + w
        for op in (operations or {}).get(service, [])[:MAX_SPAN_QUERIES]:
            doc = _render(session, url, selector(service, op), start_s, end_s, timeout)
            # Span-linked samples are a subset of the service's: move them under the span's name.
            for stack, w in (_stacks(b, doc) if doc is not None else ()):
                moved = min(w, weights.get((stack, None), 0.0))
                weights[(stack, None)] = weights.get((stack, None), 0.0) - moved
                weights[(stack, op)] = weights.get((stack, op), 0.0) + moved
        for (stack, op), w in weights.items():
            b.add(list(stack), w, op)
        profiles.append(b.finish(service, f"{url} ({selector(service)})", "pyroscope", unit="seconds"))
    return profiles, problems


def _session(env) -> requests.Session:  # noqa: ANN001 - a Mapping[str, str]
    s = requests.Session()
    token, user = env.get("PROFILE_FIRST_PYROSCOPE_TOKEN"), env.get("PROFILE_FIRST_PYROSCOPE_USER")
    if token:
        s.headers["Authorization"] = f"Bearer {token}"
    elif user:
        s.auth = (user, env.get("PROFILE_FIRST_PYROSCOPE_PASSWORD", ""))
    if env.get("PROFILE_FIRST_PYROSCOPE_TENANT"):
        s.headers["X-Scope-OrgID"] = env["PROFILE_FIRST_PYROSCOPE_TENANT"]
    return s


def _render(session: requests.Session, url: str, query: str, start_s: float, end_s: float,
            timeout: float) -> dict | None:
    params = {"query": query, "from": str(int(start_s)), "until": str(int(end_s) + 1), "format": "json"}
    deadline = time.monotonic() + timeout
    try:
        with session.get(url.rstrip("/") + "/pyroscope/render", params=params, timeout=timeout, stream=True,
                         allow_redirects=False) as r:
            body = bytearray()
            for chunk in r.iter_content(65536):
                body += chunk
                if len(body) > MAX_RESPONSE:
                    raise PyroscopeError(f"Pyroscope answered more than {MAX_RESPONSE >> 20} MiB for {query}")
                if time.monotonic() > deadline:
                    raise PyroscopeError(f"Pyroscope did not answer within {timeout:g} s for {query}")
            if r.status_code != 200:
                raise PyroscopeError(f"Pyroscope answered HTTP {r.status_code} for {query} at {url}")
    except requests.RequestException as err:
        raise PyroscopeError(f"cannot reach Pyroscope at {url}: {type(err).__name__}") from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise PyroscopeError(f"{url} does not look like a Pyroscope API (the answer is not JSON)") from None
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
