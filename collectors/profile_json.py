"""The JSON profile formats: speedscope (py-spy `--format speedscope` and many converters) and
Chrome/V8 `.cpuprofile` (`node --cpu-prof`, Chrome DevTools)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from analyzer.model.profile import Profile, ProfileBuilder

_SPEEDSCOPE_UNITS = {"seconds": 1.0, "milliseconds": 1e-3, "microseconds": 1e-6, "nanoseconds": 1e-9}
# V8's pseudo-frames: (idle) is not CPU; (program) is native code V8 cannot name.
V8_IDLE = "(idle)"
V8_ROOT = "(root)"


class ProfileFormatError(ValueError):
    pass


def is_speedscope(doc: object) -> bool:
    return isinstance(doc, dict) and "speedscope" in str(doc.get("$schema", "")) or (
        isinstance(doc, dict) and isinstance(doc.get("shared"), dict) and isinstance(doc.get("profiles"), list))


def is_cpuprofile(doc: object) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("nodes"), list) and "samples" in doc


def read_speedscope(doc: dict, source: str, service: str | None, bad: Counter) -> Profile:
    frames = doc.get("shared", {}).get("frames") if isinstance(doc.get("shared"), dict) else None
    if not isinstance(frames, list):
        raise ProfileFormatError("a speedscope file without shared.frames")
    b = ProfileBuilder()
    codes = [b.frame(str(f.get("name", "?")), str(f.get("file") or "")) if isinstance(f, dict) else b.frame("?")
             for f in frames]
    n = len(codes)
    units = set()
    for prof in doc.get("profiles") or []:
        if not isinstance(prof, dict):
            bad["invalid_profiles"] += 1
            continue
        unit = str(prof.get("unit", "none"))
        factor = _SPEEDSCOPE_UNITS.get(unit)
        units.add("seconds" if factor else "samples")
        factor = factor or 1.0
        per_stack: Counter = Counter()
        if prof.get("type") == "sampled":
            samples, weights = prof.get("samples") or [], prof.get("weights") or []
            if len(weights) != len(samples):
                weights = [1.0] * len(samples)
            for stack, w in zip(samples, weights):
                if not isinstance(stack, list) or not all(isinstance(i, int) and 0 <= i < n for i in stack):
                    bad["invalid_samples"] += 1
                    continue
                per_stack[tuple(stack)] += float(w)
        elif prof.get("type") == "evented":
            _evented(prof.get("events") or [], n, per_stack, bad)
        else:
            bad["invalid_profiles"] += 1
            continue
        for stack, w in per_stack.items():
            b.add([codes[i] for i in stack], w * factor)
    unit = "seconds" if units == {"seconds"} else "samples"
    return b.finish(service, source, "speedscope", unit=unit)


def _evented(events: list, n: int, per_stack: Counter, bad: Counter) -> None:
    """Open/close events -> time spent in each stack (the time between consecutive events)."""
    stack: list[int] = []
    last = None
    for ev in events:
        if not isinstance(ev, dict) or not isinstance(ev.get("frame"), int) or not 0 <= ev["frame"] < n:
            bad["invalid_samples"] += 1
            continue
        at = float(ev.get("at", 0.0))
        if last is not None and stack and at > last:
            per_stack[tuple(stack)] += at - last
        last = at
        if ev.get("type") == "O":
            stack.append(ev["frame"])
        elif ev.get("type") == "C" and stack:
            stack.pop()


def read_cpuprofile(doc: dict, source: str, service: str | None, bad: Counter) -> Profile:
    nodes = doc["nodes"]
    parent: dict[int, int] = {}
    frame_of: dict[int, tuple[str, str]] = {}
    for node in nodes:
        if not isinstance(node, dict) or not isinstance(node.get("id"), int):
            bad["invalid_samples"] += 1
            continue
        cf = node.get("callFrame") if isinstance(node.get("callFrame"), dict) else {}
        name = str(cf.get("functionName") or "(anonymous)")
        frame_of[node["id"]] = (name, str(cf.get("url") or ""))
        for child in node.get("children") or []:
            if isinstance(child, int):
                parent[child] = node["id"]
    samples = np.asarray([s for s in doc.get("samples") or [] if isinstance(s, int)], dtype=np.int64)
    deltas = np.asarray([d for d in doc.get("timeDeltas") or [] if isinstance(d, (int, float))], dtype=np.float64)
    # Sample i lasts until sample i+1: its weight is the next delta (the last one gets the mean).
    if deltas.size == samples.size and samples.size > 1:
        w = np.empty(samples.size)
        w[:-1] = np.clip(deltas[1:], 0, None)
        w[-1] = w[:-1].mean()
        weights, unit = w * 1e-6, "seconds"
    else:
        weights, unit = np.ones(samples.size), "samples"
    b = ProfileBuilder()
    uniq, inverse = np.unique(samples, return_inverse=True)
    per_node = np.bincount(inverse, weights=weights, minlength=uniq.size)
    for node_id, w in zip(uniq.tolist(), per_node.tolist()):
        path = []
        cur, guard = node_id, 0
        while cur in frame_of and guard < 10_000:
            path.append(cur)
            cur, guard = parent.get(cur, -1), guard + 1
        names = [frame_of[i] for i in reversed(path)]
        names = [f for f in names if f[0] != V8_ROOT]
        if not names or names[-1][0] == V8_IDLE:
            continue  # idle is not CPU
        b.add([b.frame(*f) for f in names], w)
    return b.finish(service, source, "cpuprofile", unit=unit)
