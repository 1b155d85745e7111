"""Vectorized views of a hot spot's spans shared by the database, network and caching detectors.

`waiting(ctx)` gives the hot spot's *waiting* spans (database, cache, remote, messaging) that
are not nested in another waiting span, so an ORM span wrapping a driver span, or a client
span wrapping a retry, is counted once. Every array in the view is aligned and sorted by
(owner entry span, start); per-request numbers are taken over all of the hot spot's requests.
In a weighted sample every span carries its request's weight (`Waiting.weight`): the rules sum,
count and take quantiles with it, so their shares and savings estimate the whole window's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from analyzer.model.arrays import sorted_unique
from analyzer.model.findings import Evidence
from analyzer.model.spans import NO_CODE
from heuristics.context import HotspotContext

NS_PER_MS = 1e6


@dataclass(frozen=True)
class Waiting:
    rows: np.ndarray  # table rows, sorted by (owner, start)
    req: np.ndarray  # index of the owning request within the hot spot (0..count-1)
    start: np.ndarray  # ns, clipped to the parent's frame
    end: np.ndarray
    dur: np.ndarray  # ns, clipped length
    crit: np.ndarray  # ns of the span (children included) on its request's critical path
    cls: np.ndarray  # SpanClass
    stmt: np.ndarray  # statement code, -1 absent
    peer: np.ndarray  # peer code, -1 absent
    weight: np.ndarray  # float64: the sample weight of the span's request (1 when not sampled)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def select(self, mask: np.ndarray) -> "Waiting":
        return Waiting(self.rows[mask], self.req[mask], self.start[mask], self.end[mask], self.dur[mask],
                       self.crit[mask], self.cls[mask], self.stmt[mask], self.peer[mask], self.weight[mask])


def waiting(ctx: HotspotContext) -> Waiting:
    """The hot spot's waiting spans; computed once per hot spot, every rule reads them."""
    return ctx.once("waiting", lambda: _waiting(ctx))


def _waiting(ctx: HotspotContext) -> Waiting:
    t, b = ctx.table, ctx.breakdown
    rows, req = b.waiting_rows(ctx.hotspot.entries)
    s, e = b.clip_start[rows], b.clip_end[rows]
    dur = e - s
    # A critical span's whole clipped interval is on the path: its exclusive time plus its
    # critical children's (for a client span, that includes the downstream's server span).
    crit = np.where(b.on_path[rows], dur, 0)
    return Waiting(rows, req, s, e, dur, crit, t.span_class[rows], t.statement[rows],
                   t.peer[rows], ctx.req_weight[req])


def typical_duration(ctx: HotspotContext, w: Waiting) -> np.ndarray:
    """Per span, the median duration of its kind of call in the hot spot: same statement, else same
    peer, else same span name. One hiccup of a usually short call does not make it look long."""
    if not len(w):
        return np.zeros(0)
    t = ctx.table
    n_stmt, n_peer = len(t.statements), len(t.peers)
    key = np.where(w.stmt >= 0, w.stmt.astype(np.int64),
                   np.where(w.peer >= 0, n_stmt + w.peer.astype(np.int64), n_stmt + n_peer + t.name[w.rows]))
    key = key * 8 + w.cls  # a statement text used by two classes stays two kinds
    # One sort groups the spans by kind; each kind's median goes back to its spans' places.
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    wts = np.split(w.weight[order], bounds)
    medians = [ctx.quantile(g, 0.5, wt) for g, wt in zip(np.split(w.dur[order], bounds), wts)]
    out = np.empty(len(w))
    out[order] = np.repeat(medians, np.diff(np.concatenate(([0], bounds, [len(w)]))))
    return out


def run_ids(boundary: np.ndarray) -> np.ndarray:
    """Consecutive-run ids: a new run starts wherever `boundary` is True (index 0 always starts one)."""
    if not boundary.size:
        return boundary.astype(np.int64)
    b = boundary.copy()
    b[0] = True
    return np.cumsum(b) - 1


def location(ctx: HotspotContext, rows: np.ndarray) -> str | None:
    """The most common code location among `rows`, "path:line (function)", if spans carry one."""
    codes = ctx.table.code_location[rows]
    codes = codes[codes != NO_CODE]
    if not codes.size:
        return None
    values, counts = np.unique(codes, return_counts=True)
    return ctx.table.code_locations[int(values[np.argmax(counts)])]


def sample_trace(ctx: HotspotContext, rows: np.ndarray) -> str:
    return "trace " + ctx.sample_trace(rows) if rows.size else ""


def sample(ctx: HotspotContext, w: Waiting, mask: np.ndarray, weights: np.ndarray) -> tuple[float, str]:
    """(sum of `weights` over the `mask` spans of the slowest such request, "trace <id>" of that request)."""
    reqs = sorted_unique(w.req[mask])
    if not reqs.size:
        return 0.0, ""
    r = int(reqs[np.argmax(ctx.hotspot.durations[reqs])])
    value = float(np.asarray(weights)[mask & (w.req == r)].sum())
    return value, "trace " + ctx.table.trace_id_hex(int(ctx.table.trace[ctx.hotspot.entries[r]]))


def sample_evidence(signal: str, unit: str, ctx: HotspotContext, w: Waiting, mask: np.ndarray,
                    weights: np.ndarray) -> Evidence:
    """Evidence quoting the slowest request that shows the pattern, with its own measurement."""
    value, source = sample(ctx, w, mask, weights)
    return Evidence(signal, value, unit, source)


def statement_text(ctx: HotspotContext, code: int) -> str:
    return ctx.table.statements[code] if code >= 0 else "(no statement)"


def command_kind(ctx: HotspotContext, rows: np.ndarray, kinds: dict[str, int]) -> np.ndarray:
    """`kinds[COMMAND]` per span (0 when absent): the command is the first word of the span's
    statement (`GET ?`), else of its name; one lookup per distinct statement or name."""
    t = ctx.table
    stmt = t.statement[rows].astype(np.int64)
    key = np.where(stmt >= 0, stmt, -2 - t.name[rows].astype(np.int64))
    uniq, inverse = np.unique(key, return_inverse=True)
    table = np.zeros(uniq.shape[0], dtype=np.int8)
    for i, k in enumerate(uniq.tolist()):
        text = t.statements[k] if k >= 0 else t.names[-2 - k]
        table[i] = kinds.get((text.split(None, 1) or [""])[0].upper(), 0)
    return table[inverse]


_EQ_PARAM = re.compile(r"(\b[\w.]+)\s*=\s*\?")
_FILTER_COLUMNS = re.compile(r"(\b[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)?)\s*(?:=|<>|!=|<=|>=|<|>|\bIN\b|\bLIKE\b)\s*[?(]",
                             re.IGNORECASE)
_JOIN_ON = re.compile(r"\bON\s+([A-Za-z_][\w.]*)\s*=\s*([A-Za-z_][\w.]*)", re.IGNORECASE)


def batched_shape(statement: str) -> tuple[str, str | None]:
    """The IN-list form of a per-row statement and the column it filters on.

    `SELECT a FROM t WHERE t_id = ? ORDER BY a` -> (`SELECT a FROM t WHERE t_id IN (?) ORDER BY a`, `t_id`)."""
    where = statement.upper().find(" WHERE ")
    if where < 0:
        return statement, None
    head, tail = statement[:where], statement[where:]
    m = _EQ_PARAM.search(tail)
    if not m:
        return statement, None
    return head + tail[: m.start()] + f"{m.group(1)} IN (?)" + tail[m.end():], m.group(1)


def index_candidates(statement: str) -> list[str]:
    """Columns compared with a parameter after WHERE, then join columns: what an index would serve.

    Bare primary keys (`id`, `x.id`) are left out; they are indexed already."""
    cut = statement.upper().find(" WHERE ")
    cols = _FILTER_COLUMNS.findall(statement[cut:]) if cut >= 0 else []
    for a, b in _JOIN_ON.findall(statement):
        cols += [a, b]
    return list(dict.fromkeys(c for c in cols if c.upper() not in ("AND", "OR", "NOT")
                              and c.rsplit(".", 1)[-1].lower() != "id"))


def ms(ns: float) -> float:
    return float(ns) / NS_PER_MS
