"""The config file's schema: every table and key, its type, the values allowed, and its documentation.

One declaration serves three readers, so they cannot drift apart: `analyzer.config` validates
a file against it (unknown names are errors with a did-you-mean, bad values name the key, the
value and what is allowed), `profile-first config check FILE` prints every problem, and
`docs/config.md` is generated from it (`python -m analyzer.config_docs`).

Rule codes and threshold names are not listed here: they come from the rule registry, so a new
rule is configurable, validated and documented the moment it is registered.

Extension point for sources: a trace store registers its table with `add_source(name, table)`
(e.g. `[sources.tempo]`) from the module that reads it; the table is then validated, documented
and handed to that module as `config.sections["sources"][name]`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from analyzer.cliutil import closest
from analyzer.renderers import formats

# --- node types ------------------------------------------------------------------------------

Problems = list[str]


@dataclass(frozen=True)
class Number:
    """A finite int or float (never a boolean) in [minimum, maximum]; `above` excludes the minimum."""

    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    integer: bool = False

    def allowed(self) -> str:
        what = "an integer" if self.integer else "a number"
        low = None if self.minimum is None else f"{'above' if self.above else 'at least'} {_number(self.minimum)}"
        if low and self.maximum is not None:
            return f"{what} from {_number(self.minimum)} to {_number(self.maximum)}" if not self.above \
                else f"{what} {low} and at most {_number(self.maximum)}"
        return f"{what} {low}" if low else f"a finite {what[2:]}" if not self.integer else what

    def check(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.minimum is not None and (value <= self.minimum if self.above else value < self.minimum):
            return False
        return self.maximum is None or value <= self.maximum


@dataclass(frozen=True)
class Text:
    """A string; `choices` limits it to a set, `pattern` to a regular expression described by `form`."""

    choices: tuple[str, ...] = ()
    pattern: str | None = None
    form: str = ""
    secret_if_wrong: bool = False  # a wrong value may be the secret itself: never echo it

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(f'"{c}"' for c in self.choices)
        return self.form or "a string"

    def check(self, value: object) -> bool:
        if not isinstance(value, str):
            return False
        if self.choices and value not in self.choices:
            return False
        return self.pattern is None or re.fullmatch(self.pattern, value) is not None


@dataclass(frozen=True)
class Boolean:
    def allowed(self) -> str:
        return "true or false"

    def check(self, value: object) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class ListOf:
    item: Number | Text | Boolean
    nonempty: bool = False

    def allowed(self) -> str:
        return ("a non-empty array" if self.nonempty else "an array") + f", each {self.item.allowed()}"


Scalar = Number | Text | Boolean | ListOf


@dataclass(frozen=True)
class Key:
    """One key of a table: its value's type and the documentation shown in docs/config.md."""

    type: Scalar | Table | Mapped | RuleTables | RuleCodes | TableArray
    doc: str
    default: object = None  # None: no default (optional, or required when `required`)
    required: bool = False


@dataclass(frozen=True)
class Table:
    """A table whose keys are all declared. `example` is its docs example when it has no keys."""

    keys: dict[str, Key]
    doc: str = ""


@dataclass(frozen=True)
class Mapped:
    """A table of free names (services, header names) to values of one type."""

    value: Scalar
    key_doc: str = "name"


@dataclass(frozen=True)
class RuleTables:
    """`rules."PF-DB001".min_repetitions = 5`: rule codes and threshold names from the registry."""


@dataclass(frozen=True)
class RuleCodes:
    """`ignore = ["PF-NET003"]`: an array of registered rule codes."""

    def allowed(self) -> str:
        return 'an array of rule codes such as ["PF-NET003"]'


@dataclass(frozen=True)
class TableArray:
    """An array of tables, `[[override]]`."""

    table: Table


# --- values shared by several tables -----------------------------------------------------------

DURATION = Text(pattern=r"\d+(\.\d+)?(s|m|h|d|w)", form='a duration such as "30s", "10m", "2h", "7d" or "1w"')
ENV_NAME = Text(pattern=r"[A-Za-z_][A-Za-z0-9_]*",
                form="the NAME of an environment variable (letters, digits, _), never the secret itself",
                secret_if_wrong=True)
URL = Text(pattern=r"https?://[^\s]+", form="an http:// or https:// URL")
NAME = Text(pattern=r"[A-Za-z0-9][A-Za-z0-9._-]*", form="a name of letters, digits, '.', '_' or '-'")
EMAIL = Text(pattern=r"[^@\s]+@[^@\s]+", form="an e-mail address")
SHARE = Number(0, 1)
POSITIVE = Number(0, above=True)
SECONDS = Number(0, 3600, above=False)
RETRIES = Number(0, 20, integer=True)

# Threshold names ending so are fractions; every other threshold is a count, a time or a ratio >= 0.
_FRACTION_SUFFIXES = ("_share", "_ratio", "_fraction", "_coverage", "_overlap", "_correlation", "_utilization")


def threshold_type(name: str) -> Number:
    return SHARE if name.endswith(_FRACTION_SUFFIXES) else Number(0)


def _rule_ignore(doc: str) -> Key:
    return Key(RuleCodes(), doc, default=[])


# --- the schema --------------------------------------------------------------------------------

CLASSIFY = Table({
    "min_share": Key(SHARE, "A category must explain at least this share of a hot spot's critical-path time.",
                     default=0.30),
    "margin": Key(SHARE, "... and lead the next category by at least this much, else the hot spot is `unknown`.",
                  default=0.10),
}, "How a hot spot's category is picked from the shares each category's evidence explains.")

REWRITE = Table({
    "cpu_speedup": Key(Number(1, 1000), "How much faster CPU work is assumed to run after a rewrite "
                                        "(the rewrite ceiling's S; 1 means no faster).", default=2.0),
}, "The rewrite ceiling (Amdahl bound) shown beside the fix-first saving.")

PROMETHEUS = Table({
    "timeout": Key(Number(0, 3600, above=True), "Seconds per request, from connecting to the last byte; also sent "
                                                "as the query timeout.", default=30.0),
    "max_response_mb": Key(Number(0, 65536, above=True), "Largest decoded answer to one request, in MiB; a larger "
                                                         "one is cut and becomes missing evidence.", default=128.0),
    "max_requests": Key(Number(2, 1_000_000, integer=True), "Requests one run may send; a plan that needs more (a "
                                                            "very fine step over a long window) is refused before "
                                                            "the first.", default=1000),
    "retries": Key(RETRIES, "Extra attempts after a 429/5xx, a reset connection or a read timeout.", default=3),
    "backoff": Key(Number(0, 60), "Seconds; waits backoff × 2^(attempt-1) between attempts.", default=0.5),
    "ca_bundle": Key(Text(form="a path"), "PEM file of CAs to trust instead of the system store."),
    "insecure_skip_verify": Key(Boolean(), "Do not check the TLS certificate (opt-in only).", default=False),
    "headers": Key(Mapped(Text(), "header name"), 'Extra HTTP headers, e.g. `{ "X-Scope-OrgID" = "tenant-1" }`.',
                   default={}),
    "token_file": Key(Text(form="a path"), "File holding the bearer token (e.g. a Kubernetes service-account token)."),
    "password_file": Key(Text(form="a path"), "File holding the basic-auth password; the user comes from "
                                              "`$PROFILE_FIRST_PROM_USER`."),
    "selectors": Key(Mapped(Text(form="a PromQL selector"), "service"),
                     "Series of a service whose labels do not name it: service = PromQL selector.", default={}),
    "service_labels": Key(ListOf(Text(), nonempty=True), "Labels naming the service on a series, first wins.",
                          default=["service_name", "service", "job"]),
    "step": Key(Number(0, 86400, above=True), "Range-query step in seconds (default: automatic, ~2,000 points)."),
    "min_step": Key(Number(0, 86400, above=True), "Floor of the automatic step, in seconds (lowered to two scrape "
                                                 "intervals when the data is scraped faster).", default=15.0),
    "rate_window": Key(DURATION, "Range of rate() in PromQL (default: automatic, the step and at least 4 scrape "
                                 "intervals found in the data, so window means are exact)."),
    "extra_matchers": Key(Text(), 'Added to every selector, e.g. `cluster="eu-1"`.', default=""),
    "max_points": Key(Number(2, 11_000, integer=True), "Points per series per request (Prometheus refuses more "
                                                        "than 11,000).", default=11_000),
    "target_points": Key(Number(2, 11_000, integer=True), "Points per series the automatic step aims for.",
                         default=2016),
    "discovery_points": Key(Number(1, 1000, integer=True), "Instants sampled by the discovery query.", default=24),
}, "How to query a Prometheus-compatible API. No secrets here: see [credentials].")

SOURCES = Table({
    "prometheus": Key(URL, "Prometheus-compatible query API (Prometheus, Thanos, Mimir, VictoriaMetrics); a path "
                           "prefix is fine."),
    "traces": Key(ListOf(Text(form="a path")), "OTLP trace files or directories.", default=[]),
    "metrics": Key(ListOf(Text(form="a path")), "OTLP metrics files.", default=[]),
    "listen": Key(DURATION, "Receive OTLP on 127.0.0.1:4318/4317 for this long, then analyze what arrived."),
    "profiles": Key(ListOf(Text(form="a path, or SERVICE=PATH")),
                    "CPU profiles (pprof, folded stacks, speedscope, V8 .cpuprofile): files or directories; "
                    "`SERVICE=PATH` names the service.", default=[]),
    "pyroscope": Key(URL, "Grafana Pyroscope query API to pull each service's merged CPU profile for the window."),
}, "Where `report` reads telemetry. `analyze` takes these as flags.")

PROFILES = Table({
    "cover": Key(Number(0, 1, above=True), "The partial-rewrite target covers this share of the CPU charged to "
                                           "the service's own functions.", default=0.80),
    "cheaper_fix_share": Key(SHARE, "A CPU verdict becomes not_recommended when PF-PROF findings (serialization, "
                                    "regexes, logging, strings, parsing) hold at least this share of the profiled "
                                    "CPU.", default=0.50),
    "own": Key(ListOf(Text(form="a path or name prefix")), "Frames whose file or name starts so are the "
                                                           "service's own code.", default=[]),
    "library": Key(ListOf(Text(form="a path or name prefix")), "Frames whose file or name starts so are library "
                                                               "code (e.g. third-party packages py-spy shows "
                                                               "without site-packages).", default=[]),
}, "How CPU profiles are read into the verdict (`--profile`, `--pyroscope`).")

CREDENTIALS = Table({
    "prometheus_token": Key(ENV_NAME, "Environment variable holding the Prometheus bearer token."),
    "prometheus_user": Key(ENV_NAME, "Environment variable holding the Prometheus basic-auth user."),
    "prometheus_password": Key(ENV_NAME, "Environment variable holding the Prometheus basic-auth password."),
    "webhook_url": Key(ENV_NAME, "Environment variable holding the webhook URL (a Slack incoming-webhook URL is a "
                                 "secret)."),
    "smtp_user": Key(ENV_NAME, "Environment variable holding the SMTP user."),
    "smtp_password": Key(ENV_NAME, "Environment variable holding the SMTP password."),
}, "Names of the environment variables that hold secrets. The file never holds a secret itself.")

SCOPE = Table({
    "services": Key(ListOf(Text()), "Only these services (empty: every service found).", default=[]),
    "environments": Key(ListOf(Text()), "`deployment.environment` values to report on, applied to Prometheus "
                                        "series (the label `deployment_environment`) and to spans (the resource "
                                        "attribute `deployment.environment.name` or `deployment.environment`); "
                                        "what names none is kept; staging is excluded unless listed here; "
                                        "`[\"*\"]` or `[]`: no filter.",
                        default=["production"]),
    "ignore_operations": Key(ListOf(Text(form="an operation name or glob")),
                             "Operations never reported, by exact name or glob (`*`, `?`, `[...]`): health checks, "
                             "probes. Matched against the operation (`GET /healthz`).", default=[]),
}, "What to report on.")

TEAM = Table({
    "name": Key(NAME, "The team; its report files are named after it.", required=True),
    "services": Key(ListOf(Text(), nonempty=True), "The team's services.", required=True),
}, "One report per team: `[[team]]` tables, each with its services.")

WINDOW = Table({
    "length": Key(DURATION, "How much time the report covers.", default="7d"),
    "end": Key(Text(pattern=r"last_full_day|now|\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d)",
                    form='"last_full_day", "now" or an RFC 3339 time'),
               "Where the window ends: midnight UTC of today (`last_full_day`), now, or a time.",
               default="last_full_day"),
}, "The window of a `report` run.")

OUTPUTS = Table({
    "dir": Key(Text(form="a path"), "Reports go to DIR/<ISO week>/ (e.g. reports/2026-W48/), written atomically.",
               default="reports"),
    "formats": Key(ListOf(Text(choices=formats()), nonempty=True), "Files written per report.",
                   default=["json", "md"]),
    "url": Key(URL, "Where DIR is published (a wiki or file server); links in deliveries use it instead of the "
                    "local path."),
    "metrics_textfile": Key(Text(form="a path"), "Also write the verdicts and hot-spot figures as Prometheus text "
                                                 "exposition here, for node_exporter's textfile collector (with teams, "
                                                 "one file per team: NAME.TEAM.prom)."),
    "trace_url": Key(Text(pattern=r"https?://\S*\{trace_id\}\S*", form="an http(s) URL holding {trace_id}"),
                     "Trace-UI link template for sample traces in the HTML report, e.g. "
                     "`https://jaeger.example.com/trace/{trace_id}`."),
}, "Where and how `report` writes.")

HISTORY = Table({
    "path": Key(Text(form="a path"), "SQLite file keeping every run's report (created on first use).",
                default="reports/history.sqlite"),
    "regression_pct": Key(Number(0, above=True), "A hot spot whose p99 or impact rose by more than this many "
                                                 "percent since the previous run is a regression.", default=10.0),
}, "Week-over-week comparison with the previous run over the same services.")

WEBHOOK = Table({
    "timeout": Key(Number(0, 300, above=True), "Seconds per attempt.", default=10.0),
    "retries": Key(RETRIES, "Extra attempts after a failure.", default=3),
}, "POST a Slack-compatible summary; the URL comes from the variable named by credentials.webhook_url.")

EMAIL_TABLE = Table({
    "host": Key(Text(form="a host name"), "SMTP server.", required=True),
    "port": Key(Number(1, 65535, integer=True), "SMTP port.", default=587),
    "security": Key(Text(choices=("starttls", "ssl", "none")), "How the connection is protected.",
                    default="starttls"),
    "from": Key(EMAIL, "Sender address.", required=True),
    "to": Key(ListOf(EMAIL, nonempty=True), "Recipients.", required=True),
    "subject": Key(Text(), "Subject prefix; the week and the verdict counts follow.", default="profile-first weekly"),
    "timeout": Key(Number(0, 300, above=True), "Seconds per attempt.", default=30.0),
    "retries": Key(RETRIES, "Extra attempts after a failure.", default=2),
}, "Send the report by e-mail (HTML body when rendered, Markdown as the text alternative).")

DELIVERY = Table({
    "push_metrics": Key(URL, "Push the verdicts and hot-spot figures as OTLP/HTTP metrics to this endpoint "
                             "(e.g. http://collector:4318/v1/metrics; credentials from "
                             "$OTEL_EXPORTER_OTLP_METRICS_HEADERS)."),
    "webhook": Key(WEBHOOK, WEBHOOK.doc),
    "email": Key(EMAIL_TABLE, EMAIL_TABLE.doc),
}, "Where `report` sends its summary after writing the files.")

OVERRIDE = Table({
    "service": Key(Text(), "The service this override applies to.", required=True),
    "operation": Key(Text(), "Only this operation of it (exact name)."),
    "ignore": _rule_ignore("Rules not reported for it."),
    "rules": Key(RuleTables(), "Thresholds for it, as in the top-level [rules] table."),
}, "Per service, or per operation of a service: ignores and thresholds that win over the global ones.")

ROOT = Table({
    "classify": Key(CLASSIFY, CLASSIFY.doc),
    "ignore": _rule_ignore("Rules never reported, e.g. `[\"PF-NET003\"]`."),
    "rules": Key(RuleTables(), 'Global thresholds per rule: `[rules."PF-DB001"] min_repetitions = 5`. The names '
                               "and defaults of each rule are in docs/rules/ and `profile-first rule CODE`."),
    "override": Key(TableArray(OVERRIDE), OVERRIDE.doc),
    "rewrite": Key(REWRITE, REWRITE.doc),
    "profiles": Key(PROFILES, PROFILES.doc),
    "prometheus": Key(PROMETHEUS, PROMETHEUS.doc),
    "sources": Key(SOURCES, SOURCES.doc),
    "credentials": Key(CREDENTIALS, CREDENTIALS.doc),
    "scope": Key(SCOPE, SCOPE.doc),
    "team": Key(TableArray(TEAM), TEAM.doc),
    "window": Key(WINDOW, WINDOW.doc),
    "outputs": Key(OUTPUTS, OUTPUTS.doc),
    "history": Key(HISTORY, HISTORY.doc),
    "delivery": Key(DELIVERY, DELIVERY.doc),
})


def add_source(name: str, table: Table) -> None:
    """Register `[sources.NAME]` (a trace store's settings); call at import of the module that reads it."""
    if name in SOURCES.keys:
        raise ValueError(f"[sources.{name}] registered twice")
    # Registered tables after the fixed keys, by name: the docs do not depend on import order.
    fixed = {k: v for k, v in SOURCES.keys.items() if not isinstance(v.type, Table)}
    tables = {k: v for k, v in SOURCES.keys.items() if isinstance(v.type, Table)} | {name: Key(table, table.doc)}
    SOURCES.keys.clear()
    SOURCES.keys.update(fixed | dict(sorted(tables.items())))


# --- validation ------------------------------------------------------------------------------

def validate(data: Mapping[str, object], rules: Mapping[str, Mapping[str, float]]) -> Problems:
    """Every problem of `data` (a parsed TOML document) against ROOT, one line each.

    `rules` maps each registered rule code to its threshold defaults."""
    return list(_table(data, ROOT, "", rules))


def _table(data: object, table: Table, path: str, rules: Mapping[str, Mapping[str, float]]) -> Iterator[str]:
    if not isinstance(data, dict):
        yield f"{path} must be a table ([{path}]), not {_kind(data)}"
        return
    for name, value in data.items():
        key = table.keys.get(name)
        here = f"{path}.{_quote(name)}" if path else _quote(name)
        if key is None:
            yield f"{here}: unknown key{_suggest(name, table.keys)}"
            continue
        yield from _value(value, key.type, here, rules)
    for name, key in table.keys.items():
        if key.required and name not in data:
            yield f"{path + ': ' if path else ''}missing required key {name!r} ({_allowed(key.type)})"


def _value(value: object, kind: object, path: str, rules: Mapping[str, Mapping[str, float]]) -> Iterator[str]:
    if isinstance(kind, Table):
        yield from _table(value, kind, path, rules)
    elif isinstance(kind, TableArray):
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            yield f"{path} must be an array of tables ([[{path}]]), not {_kind(value)}"
            return
        for i, item in enumerate(value):
            yield from _table(item, kind.table, f"{path}[{i}]", rules)
    elif isinstance(kind, Mapped):
        if not isinstance(value, dict):
            yield f"{path} must be a table of {kind.key_doc} = value, not {_kind(value)}"
            return
        for name, v in value.items():
            yield from _value(v, kind.value, f"{path}.{_quote(name)}", rules)
    elif isinstance(kind, RuleTables):
        yield from _rule_tables(value, path, rules)
    elif isinstance(kind, RuleCodes):
        yield from _rule_codes(value, path, rules)
    elif isinstance(kind, ListOf):
        if not isinstance(value, list):
            hint = f" (write [{_show(value)}])" if isinstance(value, str) and kind.item.check(value) else ""
            yield f"{path} = {_show(value)}: must be {kind.allowed()}{hint}"
        elif kind.nonempty and not value:
            yield f"{path} = []: must be {kind.allowed()}"
        else:
            for i, item in enumerate(value):
                if not kind.item.check(item):
                    yield f"{path}[{i}] = {_show(item)}: must be {kind.item.allowed()}"
    elif not kind.check(value):  # type: ignore[union-attr]
        shown = "(value not shown)" if getattr(kind, "secret_if_wrong", False) else _show(value)
        yield f"{path} = {shown}: must be {kind.allowed()}"  # type: ignore[union-attr]


def _rule_tables(value: object, path: str, rules: Mapping[str, Mapping[str, float]]) -> Iterator[str]:
    if not isinstance(value, dict):
        yield f'{path} must be a table of rule codes ([{path}."PF-DB001"]), not {_kind(value)}'
        return
    for code, thresholds in value.items():
        here = f"{path}.{_quote(code)}"
        if code not in rules:
            yield f"{here}: unknown rule code{_suggest(code, rules)}"
            continue
        if not isinstance(thresholds, dict):
            yield f"{here} must be a table of threshold = number, not {_kind(thresholds)}"
            continue
        for name, v in thresholds.items():
            if name not in rules[code]:
                known = ", ".join(rules[code]) or "none"
                yield f"{here}.{_quote(name)}: unknown threshold of {code}{_suggest(name, rules[code])} " \
                      f"(its thresholds: {known})"
                continue
            t = threshold_type(name)
            if not t.check(v):
                yield f"{here}.{_quote(name)} = {_show(v)}: must be {t.allowed()}"


def _rule_codes(value: object, path: str, rules: Mapping[str, object]) -> Iterator[str]:
    if not isinstance(value, list):
        hint = f" (write [{_show(value)}])" if isinstance(value, str) else ""
        yield f"{path} = {_show(value)}: must be {RuleCodes().allowed()}{hint}"
        return
    for i, code in enumerate(value):
        if not isinstance(code, str):
            yield f"{path}[{i}] = {_show(code)}: must be a rule code"
        elif code not in rules:
            yield f"{path}[{i}] = {_show(code)}: unknown rule code{_suggest(code, rules)}"


def _allowed(kind: object) -> str:
    if isinstance(kind, Table):
        return "a table"
    if isinstance(kind, TableArray):
        return "an array of tables"
    if isinstance(kind, Mapped | RuleTables):
        return "a table"
    return kind.allowed()  # type: ignore[union-attr]


def _suggest(name: str, known: Mapping[str, object]) -> str:
    """"; did you mean 'x'?" for a near miss, else the allowed names when they are few."""
    names = list(known)
    close = closest(name, names)
    if close:
        return f"; did you mean {close!r}?"
    if names and all(n.startswith("PF-") for n in names):
        return " (`profile-first rules` lists them)"
    return f" (allowed: {', '.join(names)})" if names else ""


def _quote(name: str) -> str:
    """A key as TOML spells it in a dotted path: bare when it can be, else quoted and escaped."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _show(name)


def _number(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:g}"


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"{_show(value)}"


def _show(value: object) -> str:
    """A value as TOML would spell it, cut short; containers are named, never expanded (they may be deep)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)[:60]


def walk(table: Table = ROOT, path: str = "") -> Iterator[tuple[str, Key]]:
    """(dotted path, key) of every declared key, depth first; for docs."""
    for name, key in table.keys.items():
        here = f"{path}.{name}" if path else name
        yield here, key
        inner = key.type.table if isinstance(key.type, TableArray) else key.type
        if isinstance(inner, Table):
            yield from walk(inner, here)

