"""What a service's CPU profile adds to its verdict: the code a rewrite would touch.

- A `recommended` CPU or GC verdict gets a concrete target: the smallest set of the service's own
  functions that covers `cover` of the CPU charged to own code (analyzer/profile_summary.py), the
  Amdahl ceiling of rewriting just those as a native extension beside the full rewrite's, and
  which of the two the report recommends.
- When cheaper fixes in the same language (PF-PROF* findings: serialization, regex compilation,
  log formatting, string building, re-parsing) account for at least `cheaper_fix_share` of the
  profiled CPU, a CPU verdict becomes `not_recommended`: change the serializer, not the language,
  then measure again.

The partial ceiling uses the full ceiling's own measurements: mean latency x CPU share x the
share of CPU the set covers x (1 - 1/S). GC is runtime-wide, so a GC-bound service keeps the
full rewrite as its recommendation; the set is shown as where its allocations start.
"""

from __future__ import annotations

from dataclasses import dataclass

from analyzer.config import Config
from analyzer.model.profile import Profile
from analyzer.model.profile_frames import FrameRules
from analyzer.profile_summary import DEFAULT_COVER, ProfileView, merge, summarize
from analyzer.verdict import NOT_RECOMMENDED, RECOMMENDED

NATIVE_EXTENSION = {
    "python": "a native extension module in Rust (PyO3 with maturin)",
    "node": "a native addon in Rust (napi-rs)",
    "go": "a Rust library called through cgo, or a sidecar service",
    "jvm": "a Rust library called through JNI (jni-rs) or the Panama FFM API",
    "dotnet": "a Rust library called through P/Invoke",
}
MAX_PARTIAL_FUNCTIONS = 10  # more functions than this is a rewrite of the service in all but name
MIN_PARTIAL_COVER = 0.5  # the set must cover at least this share of all profiled CPU
GC_WORTH_SAYING = 0.05  # profiled GC share from which the verdict's reason mentions it


@dataclass(frozen=True)
class ProfileConfig:
    cover: float = DEFAULT_COVER
    cheaper_fix_share: float = 0.5
    frames: FrameRules = FrameRules()


def profile_config(config: Config) -> ProfileConfig:
    """The `[profiles]` table of the config (validated by analyzer/config_schema.py)."""
    t = dict(config.sections.get("profiles", {}) or {})  # type: ignore[arg-type]
    return ProfileConfig(cover=float(t.get("cover", DEFAULT_COVER)),
                         cheaper_fix_share=float(t.get("cheaper_fix_share", 0.5)),
                         frames=FrameRules(own=tuple(t.get("own", ())), library=tuple(t.get("library", ()))))


def views_by_service(profiles: list[Profile], config: Config) -> dict[str, ProfileView]:
    """Every service's profiles merged into one view."""
    by: dict[str, list[Profile]] = {}
    for p in profiles:
        if p.service:
            by.setdefault(p.service, []).append(p)
    rules = profile_config(config).frames
    return {service: merge(service, ps, rules) for service, ps in by.items()}


def attach(service: dict, view: ProfileView, cfg: ProfileConfig, cheaper_fix_rules: frozenset[str]) -> None:
    """Add `profile` to a service's report and adjust its verdict as the module docstring says."""
    summary = summarize(view, cfg.cover)
    part = summary["partial_rewrite"]
    ceiling = service.get("rewrite_ceiling") or {}
    part.update(_partial_ceiling(ceiling, part["covers"]))
    cheaper = _cheaper_fixes(service, cheaper_fix_rules)
    summary["cheaper_fixes"] = cheaper
    verdict = service["verdict"]
    cheaper_share = sum(c["cpu_share"] for c in cheaper)
    if verdict["rust_rewrite"] == RECOMMENDED and verdict["cause"] == "cpu_bound" and cheaper_share >= cfg.cheaper_fix_share:
        names = ", ".join(f"{c['what']} {c['cpu_share']:.0%} ({c['rule']})" for c in cheaper)
        verdict["rust_rewrite"] = NOT_RECOMMENDED
        verdict["reason"] = (f"{verdict['reason'].split(';')[0]}; but {cheaper_share:.0%} of {service['service']}'s "
                             f"profiled CPU is work a rewrite would still do ({names}): fix that in the current "
                             f"language first, then measure again.")
        part["recommendation"] = "fix_first"
    elif verdict["rust_rewrite"] == RECOMMENDED:
        part["recommendation"] = _which(part, verdict["cause"])
        verdict["reason"] += " " + _target_sentence(part, service.get("runtime", "unknown"))
    else:
        part["recommendation"] = "none"
    if summary["gc_share"] >= GC_WORTH_SAYING:
        # GC the profiler saw is evidence beside the GC metrics (and the only GC evidence without them).
        verdict["reason"] += (f" The CPU profile puts {summary['gc_share']:.0%} of the service's CPU in the runtime's "
                              "garbage collector.")
    service["profile"] = summary


def _partial_ceiling(ceiling: dict, covers: float) -> dict:
    basis = ceiling.get("basis") or {}
    mean_ms, mean_pct = ceiling.get("mean_ms"), ceiling.get("mean_pct")
    cpu_share, speedup = basis.get("cpu_share"), ceiling.get("cpu_speedup")
    if not ceiling.get("measured") or None in (mean_ms, mean_pct, cpu_share, speedup):
        return {"ceiling_ms": None, "full_ceiling_ms": mean_ms}
    if not mean_pct:  # a full rewrite would save nothing measurable: neither would a partial one
        return {"ceiling_ms": 0.0, "ceiling_pct": 0.0, "full_ceiling_ms": mean_ms}
    mean_latency = mean_ms / (mean_pct / 100.0)
    partial = mean_latency * cpu_share * covers * (1.0 - 1.0 / speedup)
    return {"ceiling_ms": round(partial, 3), "ceiling_pct": round(100 * partial / mean_latency, 3),
            "full_ceiling_ms": mean_ms}


def _cheaper_fixes(service: dict, rules: frozenset[str]) -> list[dict]:
    """PF-PROF findings of the service, each once (the same profile share repeats per hot spot)."""
    seen: dict[str, dict] = {}
    for h in service.get("hotspots", []):
        for f in h.get("findings", []):
            if f["rule"] in rules and f["rule"] not in seen:
                cpu = next((e["value"] for e in f["evidence"] if e["signal"].startswith("profile_cpu_share")), 0.0)
                what = f["message"].split(" is ", 1)[1].split(";")[0] if " is " in f["message"] else f["rule"]
                seen[f["rule"]] = {"rule": f["rule"], "what": what, "cpu_share": cpu, "remedy": f["remedy"]}
    return sorted(seen.values(), key=lambda c: -c["cpu_share"])


def _which(part: dict, cause: str) -> str:
    if cause == "gc_pause":
        return "full"
    if part["functions"] and len(part["functions"]) <= MAX_PARTIAL_FUNCTIONS and part["covers"] >= MIN_PARTIAL_COVER:
        return "partial"
    return "full"


def _target_sentence(part: dict, runtime: str) -> str:
    fns = part["functions"]
    if not fns:
        return "The profile shows no CPU in the service's own code to target."
    names = ", ".join(f["function"] for f in fns[:5]) + (f" and {len(fns) - 5} more" if len(fns) > 5 else "")
    ceil = (f"; rewriting only {'it' if len(fns) == 1 else 'them'} saves at most {part['ceiling_ms']:.1f} ms per request against "
            f"{part['full_ceiling_ms']:.1f} ms for a full rewrite" if part.get("ceiling_ms") is not None else "")
    if part["recommendation"] == "partial":
        how = NATIVE_EXTENSION.get(runtime, "a native library called from the service")
        one = len(fns) == 1
        return (f"Rewrite target: {len(fns)} function{'' if one else 's'} ({names}) hold{'s' if one else ''} "
                f"{part['covers']:.0%} of its CPU{ceil}: move {'it' if one else 'them'} into {how} rather than "
                "rewriting the service.")
    return (f"Its own hottest functions ({names}) hold only {part['covers']:.0%} of its CPU{ceil}, so the gain "
            f"needs a full rewrite.")
