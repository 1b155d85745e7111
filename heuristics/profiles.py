"""Profile rules (PF-PROF*): CPU a profile shows going to work that has a cheaper fix than a new language.

Serialization, regex compilation, log formatting, string building and re-parsing cost the
same kind of CPU in any language; a Rust rewrite would still do them. Each rule measures the
share of the service's profiled CPU spent in stacks through such frames (each stack once), and
when runtime metrics say how much of the hot spot's time is CPU work, how much of that time the
pattern explains. When the profiler linked samples to spans (pprof `span_name` labels,
Pyroscope span profiles), the hot spot's own samples are used instead of the service's.

Savings are estimates: the measured CPU share times the cut the remedy usually brings
(`expected_cut`, configurable), never more than the measured CPU time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from analyzer.model.findings import Evidence, Finding
from analyzer.model.profile import Frame
from analyzer.model.profile_frames import language
from heuristics.context import HotspotContext
from heuristics.registry import rule
from heuristics.runtime import fmt_ms, measure


@dataclass(frozen=True)
class Pattern:
    """Frames that do one kind of work, by language, and the cheaper fix per language."""

    what: str
    frames: Mapping[str, re.Pattern[str]]  # language -> regex over "name (file)"
    remedies: Mapping[str, str]

    def matches(self, frame: Frame) -> bool:
        pattern = self.frames.get(language(frame))
        return bool(pattern and pattern.search(f"{frame.name} ({frame.file})"))

    def remedy(self, lang: str) -> str:
        return self.remedies.get(lang, self.remedies["any"])


SERIALIZATION = Pattern(
    "JSON/serialization",
    {"python": re.compile(r"\((?:.*/)?(json|simplejson|pickle|copyreg|marshmallow|pydantic)/|"
                          r"^(dumps|loads|iterencode|_iterencode\w*) \("),
     "go": re.compile(r"^(encoding/(json|xml|gob)|github\.com/(goccy/go-json|json-iterator)|google\.golang\.org/protobuf)"),
     "js": re.compile(r"^(JSON\.)?(stringify|parse|serialize\w*)\b|^(SerializeJSON|JsonStringify|JsonParse)"),
     "jvm": re.compile(r"^(com/fasterxml/jackson|com/google/gson|org/json|javax?/json)/"),
     "native": re.compile(r"^(JSON\.)?(stringify|parse) \(|Json(Stringifier|Parser)")},
    {"python": "switch the serializer (orjson or msgspec encode the same data several times faster than the json "
               "module), serialize less (select fields, paginate) or cache encoded responses",
     "go": "use a faster codec (goccy/go-json, sonic, easyjson with generated code) or encode less",
     "js": "use a schema-based serializer (fast-json-stringify) or send less data per response",
     "jvm": "reuse one ObjectMapper, add Jackson's Blackbird/Afterburner module, or stream with JsonGenerator",
     "any": "use a faster serializer or serialize less"},
)
REGEX_COMPILE = Pattern(
    "regex compilation",
    {"python": re.compile(r"\((?:.*/)?(re|sre_compile|sre_parse)/(_compiler|_parser|__init__)\.py\)|"
                          r"\((?:.*/)?(sre_compile|sre_parse)\.py\)|^_compile \((?:.*/)?re/"),
     "go": re.compile(r"^regexp\.(Compile|MustCompile|compile)|^regexp/syntax\."),
     "js": re.compile(r"^(RegExp|RegExpCompile|RegExpInitialize)\b"),
     "jvm": re.compile(r"^java/util/regex/Pattern\.(compile|<init>)"),
     "native": re.compile(r"^(RegExp|pcre2?_compile)")},
    {"python": "compile each pattern once at import (re.compile at module level) instead of per call; "
               "re's cache holds only 512 patterns and a dynamic pattern misses it every time",
     "go": "compile each regexp once (a package-level regexp.MustCompile) and reuse it",
     "jvm": "hold each Pattern in a static final field instead of calling Pattern.compile or String.matches per call",
     "any": "compile regular expressions once and reuse them"},
)
LOGGING = Pattern(
    "log formatting",
    {"python": re.compile(r"\((?:.*/)?(logging|structlog|loguru)/"),
     "go": re.compile(r"^(log\.|log/slog\.|go\.uber\.org/zap|github\.com/sirupsen/logrus|github\.com/rs/zerolog)"),
     "js": re.compile(r"node_modules/(pino|winston|bunyan|debug|log4js)/|^console\.|^(formatWithOptions|inspect) "),
     "jvm": re.compile(r"^(ch/qos/logback|org/apache/(logging/)?log4j|org/slf4j|java/util/logging)/")},
    {"python": "log less on the hot path (level checks, lazy %-style arguments instead of f-strings), "
               "and format in a background handler (QueueHandler)",
     "go": "lower the log level on the hot path and use a structured logger without reflection (zap, zerolog)",
     "js": "log less per request and use an asynchronous logger (pino with a transport)",
     "jvm": "guard debug logs, use parameterized messages and an async appender",
     "any": "log less on the hot path and format asynchronously"},
)
STRING_BUILDING = Pattern(
    "string building",
    {"python": re.compile(r"^(join|format|__format__|_vformat|substitute) \((?:.*/)?(string|textwrap)"),
     "go": re.compile(r"^(runtime\.(concatstrings|concatstring\d|slicebytetostring|rawstring)|"
                      r"strings\.\(\*Builder\)\.grow|fmt\.(Sprintf|Sprint|Fprintf|\(\*pp\)))"),
     "js": re.compile(r"^(StringAdd\w*|StringBuilderConcat|StringPrototype\w*|NumberToString)"),
     "jvm": re.compile(r"^java/lang/(AbstractStringBuilder\.(append|ensureCapacity|newCapacity)|"
                       r"StringConcatHelper|String\.format|StringBuilder\.)")},
    {"go": "build strings with a preallocated strings.Builder or bytes.Buffer instead of + and fmt.Sprintf in loops",
     "jvm": "preallocate StringBuilder capacity and avoid String.format on the hot path",
     "any": "build strings once (join or a preallocated buffer) instead of repeated concatenation and formatting"},
)
PARSING = Pattern(
    "repeated parsing",
    {"python": re.compile(r"\((?:.*/)?(_strptime|urllib/parse|ast|tomllib|yaml|xml|email|http/cookies|"
                          r"dateutil|decimal|_pydecimal|ipaddress|configparser)[/.]"),
     "go": re.compile(r"^(time\.Parse|net/url\.Parse|strconv\.Parse|encoding/xml|gopkg\.in/yaml|"
                      r"net/netip\.Parse|text/template\.\(\*Template\)\.Parse|html/template\.\(\*Template\)\.Parse)"),
     "js": re.compile(r"^(DateParse|Date\.parse|URL|parseURL|parse) \(node:url"),
     "jvm": re.compile(r"^(java/text/SimpleDateFormat\.parse|java/time/format/DateTimeFormatter\.parse|"
                       r"java/net/URI\.<init>|javax/xml/parsers|org/yaml/snakeyaml)")},
    {"python": "parse once and keep the parsed value (cache datetime formats, URLs, configs and templates) "
               "instead of re-parsing per request",
     "go": "parse templates, layouts and configuration once at start-up; reuse parsed values",
     "jvm": "reuse a thread-safe DateTimeFormatter and parsed objects instead of parsing per request",
     "any": "parse once and reuse the parsed value"},
)


def _profile_finding(ctx: HotspotContext, th: Mapping[str, float], code: str, pattern: Pattern) -> list[Finding]:
    view = ctx.profile
    if view is None or view.total <= 0:
        return []
    h = ctx.hotspot
    mask = view.frame_mask(pattern.matches)
    if not mask.any():
        return []
    stacks = view.for_span(h.operation)
    linked = stacks is not None and bool(stacks.any())
    share = view.share_of_stacks_with(mask, stacks if linked else None)
    if share < th["min_share"]:
        return []
    scope = f"profile samples linked to spans named {h.operation!r}" if linked else f"{view.service}'s profile"
    langs = [language(f) for f, m in zip(view.frames, mask) if m]
    lang = max(set(langs), key=langs.count)
    top = _top_frame(view, mask)
    evidence = [Evidence(f"profile_cpu_share_{pattern.what.split('/')[0].lower().replace(' ', '_')}", share, "ratio",
                         f"{scope} ({', '.join(view.formats)}: {', '.join(view.sources[:3])}); hottest frame: {top}")]
    m = measure(ctx)
    explained = share * m.cpu_share if m.cpu_measured else 0.0
    mean_ms = h.total_ms / h.estimated_count if h.count else 0.0
    saving = mean_ms * explained * th["expected_cut"]
    if m.cpu_measured and m.cpu_share <= 0:
        tail = "; runtime metrics attribute none of this hot spot's time to CPU work"
    elif m.cpu_measured:
        evidence.append(Evidence("cpu_share_of_hotspot", m.cpu_share, "ratio", "runtime metrics (PF-CPU001)"))
        tail = (f"; CPU work is {m.cpu_share:.0%} of this hot spot's time, so it explains {explained:.0%} of it "
                f"(~{fmt_ms(mean_ms * explained)} per {h.operation} request)")
    else:
        tail = "; without CPU metrics its share of the request time is not measured"
    message = f"{share:.0%} of the CPU in {scope} is {pattern.what}{tail}"
    return [Finding(code, "cpu_bound", message, pattern.remedy(lang), share=explained, saving_ms=saving,
                    evidence=evidence)]


def _top_frame(view, mask: np.ndarray) -> str:  # noqa: ANN001 - ProfileView
    from analyzer.profile_summary import cumulative_weights

    cum = np.where(mask, cumulative_weights(view), -1.0)
    return view.frames[int(np.argmax(cum))].label()


@rule("PF-PROF001", "serialization-cpu", "cpu_bound",
      "CPU profiles show serialization (JSON, pickle, protobuf) taking a large share of the service's CPU",
      min_share=0.15, expected_cut=0.6)
def serialization(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    The service's CPU profile (or the hot spot's own samples, when spans are linked) spends at
    least `min_share` of its CPU in stacks through serialization code: Python's json, pickle,
    pydantic; Go's encoding/json; V8's JSON.stringify/parse; Jackson or Gson.

    ## Why it matters
    A Rust rewrite would still serialize the same data. A faster serializer in the same
    language (orjson and msgspec for Python, goccy/go-json or sonic for Go, fast-json-stringify
    for Node, Blackbird for Jackson) or serializing less is hours of work, not months.

    ## How it measures
    Share = CPU in stacks holding any serialization frame / the profile's CPU, each stack once.
    Share of the hot spot's time = that share x the hot spot's CPU share from runtime metrics.
    Saving = that time x `expected_cut` (an assumption: fast serializers commonly cut 60% or more).

    ## False positives
    A service whose job is to transform documents (a JSON API gateway) may need the CPU; the
    remedy then is a faster serializer, still not a rewrite. V8 counts `JSON.stringify` in its
    caller, so Node profiles rarely show it (the rule stays silent rather than guess).

    ## How to fix
    Switch the serializer or serialize less (select fields, paginate, cache encoded responses).
    """
    return _profile_finding(ctx, th, "PF-PROF001", SERIALIZATION)


@rule("PF-PROF002", "regex-compilation", "cpu_bound",
      "CPU profiles show regular expressions being compiled on the hot path", min_share=0.05, expected_cut=0.9)
def regex_compilation(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    At least `min_share` of the profiled CPU is in stacks through the regex compiler: Python's
    `re._compiler`/`sre_parse`, Go's `regexp.Compile`/`regexp/syntax`, `java.util.regex.Pattern.compile`.

    ## Why it matters
    Compiling a pattern costs far more than matching it. Compiling per call (a dynamic pattern, a
    `String.matches`, a Python pattern beyond `re`'s 512-entry cache) burns CPU that compiling once
    removes entirely.

    ## How it measures
    As PF-PROF001; `expected_cut` defaults to 0.9 because compiling once removes almost all of it.

    ## False positives
    A service that compiles user-supplied patterns must compile them; cache them by pattern.

    ## How to fix
    Compile each pattern once (module level, a static field) and reuse it.
    """
    return _profile_finding(ctx, th, "PF-PROF002", REGEX_COMPILE)


@rule("PF-PROF003", "log-formatting", "cpu_bound",
      "CPU profiles show log formatting taking a large share of the service's CPU", min_share=0.10, expected_cut=0.5)
def log_formatting(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    At least `min_share` of the profiled CPU is in stacks through the logging library (Python's
    logging, structlog; Go's log, zap, logrus; pino or winston; logback, log4j).

    ## Why it matters
    Formatting and writing log records on every request is CPU a rewrite keeps. Fewer records on
    the hot path, lazy formatting and asynchronous handlers remove most of it.

    ## How it measures
    As PF-PROF001, with `expected_cut` 0.5.

    ## False positives
    Audit logs that must be written per request; even then, format them asynchronously.

    ## How to fix
    Log less on the hot path, check levels before formatting, use an asynchronous handler.
    """
    return _profile_finding(ctx, th, "PF-PROF003", LOGGING)


@rule("PF-PROF004", "string-building", "cpu_bound",
      "CPU profiles show repeated string concatenation and formatting", min_share=0.10, expected_cut=0.5)
def string_building(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    At least `min_share` of the profiled CPU in string building: Go's `runtime.concatstrings` and
    `fmt.Sprintf`, Java's `AbstractStringBuilder` growth and `String.format`, V8's string adds.

    ## Why it matters
    Quadratic concatenation in a loop and formatting per field are algorithmic, not linguistic:
    a preallocated builder or one join fixes them in any language.

    ## How it measures
    As PF-PROF001, with `expected_cut` 0.5.

    ## False positives
    CPython builds strings in C, which py-spy shows as the calling Python line: there the rule
    rarely fires, and when it does the frames are `string`/`textwrap` helpers.

    ## How to fix
    Build strings once: a join or a preallocated builder instead of repeated concatenation.
    """
    return _profile_finding(ctx, th, "PF-PROF004", STRING_BUILDING)


@rule("PF-PROF005", "repeated-parsing", "cpu_bound",
      "CPU profiles show dates, URLs, templates or documents being parsed again and again", min_share=0.10,
      expected_cut=0.7)
def repeated_parsing(ctx: HotspotContext, th: Mapping[str, float]) -> list[Finding]:
    """
    ## What it detects
    At least `min_share` of the profiled CPU in parsers of values that rarely change: Python's
    `_strptime`, `urllib.parse`, yaml, xml, `ast`; Go's `time.Parse`, `url.Parse`, template parsing;
    Java's `SimpleDateFormat.parse`, `DateTimeFormatter.parse`, `URI` construction.

    ## Why it matters
    Parsing the same formats, templates or configuration per request is work a cache or a
    start-up parse removes; a rewrite would parse just as often.

    ## How it measures
    As PF-PROF001, with `expected_cut` 0.7.

    ## False positives
    A service whose input is the document to parse (an importer) parses by design.

    ## How to fix
    Parse once and keep the parsed value: at start-up, or in a cache keyed by the raw text.
    """
    return _profile_finding(ctx, th, "PF-PROF005", PARSING)


# Rules whose remedy is a code change in the same language: listed among the fixes to make
# before a rewrite, like the database, network and caching findings.
CHEAPER_FIX_RULES = frozenset({"PF-PROF001", "PF-PROF002", "PF-PROF003", "PF-PROF004", "PF-PROF005"})
