"""Where a service's CPU goes, from its profiles: by function, by package, by owner (own code,
libraries, the runtime), and the smallest set of its own functions a partial rewrite would touch.

Shares are of the profile's CPU total (idle excluded by the readers). A function's *self* share
counts the stacks it is innermost in; its *cumulative* share the stacks it is anywhere in, once
per stack. The partial-rewrite set charges every stack to its innermost own frame (the own
function that ran the library and runtime code beneath it: a native rewrite of that function
replaces those calls too) and takes the fewest functions covering `cover` of what is charged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from analyzer.model.profile import Frame, Profile
from analyzer.model.profile_frames import LIBRARY, OWN, RUNTIME, FrameRules, classify

DEFAULT_COVER = 0.80
TOP_FUNCTIONS = 15
TOP_PACKAGES = 10
FLAME_MIN_SHARE = 0.005  # call-tree nodes narrower than this are left out of the flame graph
FLAME_MAX_DEPTH = 24
FLAME_MAX_NODES = 400


@dataclass
class ProfileView:
    """One service's merged profiles, with per-frame owners, ready for shares of any frame set."""

    service: str
    frames: list[Frame]
    owners: np.ndarray  # object [n_frames]: own | library | runtime
    kinds: list[str]  # package (own/library) or runtime part (gc, alloc, jit, interpreter, native)
    offsets: np.ndarray
    stack_frames: np.ndarray
    weights: np.ndarray
    unit: str
    sources: list[str]
    formats: list[str]
    span_codes: np.ndarray | None = None
    span_names: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return float(self.weights.sum())

    def stack_ids(self) -> np.ndarray:
        return np.repeat(np.arange(self.weights.size), np.diff(self.offsets))

    def share_of_stacks_with(self, frame_mask: np.ndarray, stacks: np.ndarray | None = None) -> float:
        """Share of CPU in stacks holding any frame of `frame_mask` (optionally among `stacks` only)."""
        total = float(self.weights.sum() if stacks is None else self.weights[stacks].sum())
        if total <= 0:
            return 0.0
        hit = np.zeros(self.weights.size, dtype=bool)
        hit[self.stack_ids()[frame_mask[self.stack_frames]]] = True
        if stacks is not None:
            hit &= stacks
        return float(self.weights[hit].sum()) / total

    def for_span(self, name: str) -> np.ndarray | None:
        """Stacks the profiler linked to spans named `name`; None when it linked none."""
        if self.span_codes is None or name not in self.span_names:
            return None
        return self.span_codes == self.span_names.index(name)

    def frame_mask(self, predicate) -> np.ndarray:  # noqa: ANN001 - Callable[[Frame], bool]
        return np.fromiter((bool(predicate(f)) for f in self.frames), dtype=bool, count=len(self.frames))


def merge(service: str, profiles: Sequence[Profile], rules: FrameRules = FrameRules()) -> ProfileView:
    """One view of every profile of `service`. Profiles in seconds and in sample counts are not
    mixed: sample counts are scaled to seconds when the others give the scale, else all stay counts."""
    frames: list[Frame] = []
    code: dict[Frame, int] = {}
    parts, offs, weights, spans, span_names = [], [np.zeros(1, dtype=np.int64)], [], [], []
    in_seconds = [p for p in profiles if p.unit == "seconds"]
    unit = "seconds" if in_seconds else "samples"
    base = 0
    for p in profiles:
        remap = np.empty(len(p.frames), dtype=np.int32)
        for i, f in enumerate(p.frames):
            c = code.get(f)
            if c is None:
                c = code[f] = len(frames)
                frames.append(f)
            remap[i] = c
        parts.append(remap[p.stack_frames])
        offs.append(p.offsets[1:] + base)
        base += int(p.offsets[-1])
        w = p.weights
        if unit == "seconds" and p.unit != "seconds":
            # A count-only profile next to timed ones: skip rather than add apples to oranges.
            w = np.zeros_like(w)
        weights.append(w)
        names = {n: len(span_names) + i for i, n in enumerate(n for n in p.span_names if n not in span_names)}
        span_names.extend(names)
        if p.span_codes is not None:
            lookup = np.array([span_names.index(n) for n in p.span_names] + [-1], dtype=np.int32)
            spans.append(lookup[p.span_codes])
        else:
            spans.append(np.full(p.weights.size, -1, dtype=np.int32))
    owners_kinds = [classify(f, rules) for f in frames]
    return ProfileView(
        service=service, frames=frames,
        owners=np.array([o for o, _ in owners_kinds], dtype=object),
        kinds=[k for _, k in owners_kinds],
        offsets=np.concatenate(offs), stack_frames=np.concatenate(parts) if parts else np.zeros(0, np.int32),
        weights=np.concatenate(weights) if weights else np.zeros(0), unit=unit,
        sources=[p.source for p in profiles], formats=sorted({p.format for p in profiles}),
        span_codes=np.concatenate(spans) if span_names else None, span_names=span_names)


def leaf_codes(v: ProfileView) -> np.ndarray:
    lengths = np.diff(v.offsets)
    out = np.full(v.weights.size, -1, dtype=np.int64)
    ok = lengths > 0
    out[ok] = v.stack_frames[v.offsets[1:][ok] - 1]
    return out


def self_weights(v: ProfileView) -> np.ndarray:
    leaf = leaf_codes(v)
    ok = leaf >= 0
    return np.bincount(leaf[ok], weights=v.weights[ok], minlength=len(v.frames))


def cumulative_weights(v: ProfileView) -> np.ndarray:
    """Per frame, the CPU of the stacks it appears in, each stack once (recursion not double counted)."""
    if not v.stack_frames.size:
        return np.zeros(len(v.frames))
    sid = v.stack_ids()
    key = np.unique(sid.astype(np.int64) * len(v.frames) + v.stack_frames)
    return np.bincount(key % len(v.frames), weights=v.weights[key // len(v.frames)], minlength=len(v.frames))


def charged_to_own(v: ProfileView) -> np.ndarray:
    """Per frame, the CPU of the stacks whose innermost own frame it is. Python's `<module>`
    frames run at import, not per request: they are never a rewrite target."""
    targets = (v.owners == OWN) & np.fromiter((f.name != "<module>" for f in v.frames), dtype=bool,
                                               count=len(v.frames))
    is_own = targets[v.stack_frames]
    pos = np.where(is_own, np.arange(v.stack_frames.size), -1)
    lengths = np.diff(v.offsets)
    out = np.zeros(len(v.frames))
    ok = lengths > 0
    if not ok.any():
        return out
    last = np.maximum.reduceat(pos, v.offsets[:-1][ok])
    has = last >= 0
    np.add.at(out, v.stack_frames[last[has]], v.weights[ok][has])
    return out


def partial_rewrite_set(v: ProfileView, cover: float = DEFAULT_COVER) -> dict:
    """The fewest own functions covering `cover` of the CPU charged to own code."""
    charged = charged_to_own(v)
    total, own_total = v.total, float(charged.sum())
    if total <= 0 or own_total <= 0:
        return {"functions": [], "covers": 0.0, "own_share": 0.0, "target": cover}
    order = np.argsort(-charged, kind="stable")
    acc, chosen = 0.0, []
    for c in order:
        if charged[c] <= 0 or acc >= cover * own_total:
            break
        acc += float(charged[c])
        chosen.append(int(c))
    return {
        "functions": [{"function": v.frames[c].name, "file": v.frames[c].file,
                       "share": _r(charged[c] / total)} for c in chosen],
        "covers": _r(acc / total),
        "own_share": _r(own_total / total),
        "target": cover,
    }


def summarize(v: ProfileView, cover: float = DEFAULT_COVER) -> dict:
    """The per-service profile summary of the report."""
    total = v.total
    selfw, cumw = self_weights(v), cumulative_weights(v)
    by_owner = {o: 0.0 for o in (OWN, LIBRARY, RUNTIME)}
    runtime_parts: dict[str, float] = {}
    for c in np.flatnonzero(selfw):
        by_owner[v.owners[c]] += selfw[c]
        if v.owners[c] == RUNTIME:
            runtime_parts[v.kinds[c]] = runtime_parts.get(v.kinds[c], 0.0) + selfw[c]
    functions = [
        {"function": v.frames[c].name, "file": v.frames[c].file, "owner": v.owners[c], "package": _package(v, c),
         "self_share": _r(selfw[c] / total), "cumulative_share": _r(cumw[c] / total)}
        for c in np.argsort(-selfw, kind="stable")[:TOP_FUNCTIONS] if selfw[c] > 0
    ]
    packages: dict[tuple[str, str], float] = {}
    for c in np.flatnonzero(selfw):
        key = (_package(v, c), v.owners[c])
        packages[key] = packages.get(key, 0.0) + selfw[c]
    top_packages = sorted(packages.items(), key=lambda kv: -kv[1])[:TOP_PACKAGES]
    return {
        "sources": v.sources,
        "formats": v.formats,
        "total": _r(total),
        "unit": v.unit,
        "by_owner": {k: _r(x / total) for k, x in by_owner.items()},
        "runtime": {k: _r(x / total) for k, x in sorted(runtime_parts.items(), key=lambda kv: -kv[1])},
        "gc_share": _r(runtime_parts.get("gc", 0.0) / total),
        "functions": functions,
        "packages": [{"package": p, "owner": o, "self_share": _r(x / total)} for (p, o), x in top_packages],
        "partial_rewrite": partial_rewrite_set(v, cover),
        "flame": flame_nodes(v),
    }


def flame_nodes(v: ProfileView) -> list[dict]:
    """The call tree's widest nodes, for an icicle chart: depth, start and width as shares of the
    CPU, laid out left to right in order of first appearance; narrow and deep nodes are pruned."""
    total = v.total
    if total <= 0:
        return []
    children: dict[tuple[int, ...], dict[int, float]] = {}
    for i in range(v.weights.size):
        stack = v.stack_frames[v.offsets[i]:v.offsets[i + 1]][:FLAME_MAX_DEPTH].tolist()
        w = float(v.weights[i])
        for d in range(len(stack)):
            level = children.setdefault(tuple(stack[:d]), {})
            level[stack[d]] = level.get(stack[d], 0.0) + w
    out: list[dict] = []
    todo = [((), 0.0)]
    while todo and len(out) < FLAME_MAX_NODES:
        path, start = todo.pop(0)
        for code, w in children.get(path, {}).items():
            if w / total < FLAME_MIN_SHARE:
                continue
            out.append({"depth": len(path), "start": _r(start / total), "width": _r(w / total),
                        "function": v.frames[code].name, "owner": v.owners[code]})
            todo.append((path + (code,), start))
            start += w
    return out


def _package(v: ProfileView, c: int) -> str:
    return v.kinds[c] if v.owners[c] != RUNTIME else "runtime"


def _r(x: float) -> float:
    return round(float(x), 4)
