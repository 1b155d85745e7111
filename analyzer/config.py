"""The configuration file (TOML): classification margins, rule thresholds, per-operation overrides,
and the settings of scheduled `report` runs. docs/config.md is the reference (generated from
analyzer/config_schema.py, which `load_config` validates against: an unknown name or a bad value
is a ConfigError naming the key, the value and what is allowed).

    ignore = ["PF-NET003"]    # rules never reported (top-level keys come before the first table)

    [classify]
    min_share = 0.30          # a category must explain at least this share of a hot spot
    margin = 0.10             # ... and lead the next category by this much

    [rules."PF-DB001"]        # global thresholds of one rule
    min_repetitions = 5

    [[override]]              # for one service, or one operation of it
    service = "reports"
    operation = "GET /report/yearly"   # optional
    ignore = ["PF-DB002"]
    [override.rules."PF-DB002"]
    min_share = 0.9

    [rewrite]
    cpu_speedup = 2.0         # how much faster CPU work is assumed to run after a rewrite

    [prometheus]              # the Prometheus collector's settings (no secrets: those come from env)
    timeout = 30
    headers = { "X-Scope-OrgID" = "tenant-1" }
    [prometheus.selectors]    # series of a service, when its labels do not name it
    cart = '{namespace="shop", container="cart"}'
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from analyzer.classify import ClassifyConfig
from analyzer.config_schema import validate
import collectors.store_settings  # noqa: F401  (registers the [sources.*] tables of the trace stores)
from heuristics.registry import all_rules


class ConfigError(Exception):
    """The config file is unreadable or has wrong values. `problems` lists each, one line apiece."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        more = f" (and {len(problems) - 1} more: `profile-first config check {path}` lists them)" \
            if len(problems) > 1 else ""
        super().__init__(f"{path}: {problems[0]}{more}")


@dataclass(frozen=True)
class Override:
    service: str
    operation: str | None
    ignore: frozenset[str]
    rules: Mapping[str, Mapping[str, float]]

    def matches(self, service: str, operation: str) -> bool:
        return self.service == service and (self.operation is None or self.operation == operation)


@dataclass(frozen=True)
class Config:
    classify: ClassifyConfig = ClassifyConfig()
    ignore: frozenset[str] = frozenset()
    rules: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    overrides: tuple[Override, ...] = ()
    ignore_operations: tuple[str, ...] = ()  # exact names or globs of operations never reported
    sections: Mapping[str, object] = field(default_factory=dict)  # other tables, e.g. [prometheus]
    path: str | None = None

    def ignores_operation(self, operation: str) -> bool:
        return any(fnmatchcase(operation, pattern) for pattern in self.ignore_operations)

    def enabled(self, code: str, service: str, operation: str) -> bool:
        if code in self.ignore:
            return False
        return not any(o.matches(service, operation) and code in o.ignore for o in self.overrides)

    def thresholds(self, code: str, defaults: Mapping[str, float], service: str, operation: str) -> dict[str, float]:
        """Defaults, then the global [rules] table, then matching overrides (service, then operation)."""
        merged = dict(defaults)
        merged.update(self.rules.get(code, {}))
        for o in sorted(self.overrides, key=lambda o: o.operation is not None):
            if o.matches(service, operation):
                merged.update(o.rules.get(code, {}))
        return merged


def load_config(path: str | None) -> Config:
    if path is None:
        return Config()
    return build(path, read_config(path))


def read_config(path: str) -> dict:
    """The parsed and validated document; ConfigError on anything else."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(path, [f"cannot read config: {e.strerror or e}"]) from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(path, [f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                                 "TOML files are UTF-8"]) from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, [f"invalid TOML: {e}"]) from e
    except RecursionError as e:
        raise ConfigError(path, ["invalid TOML: arrays or tables nested too deeply"]) from e
    problems = validate(data, {code: r.defaults for code, r in all_rules().items()})
    if problems:
        raise ConfigError(path, problems)
    return data


def build(path: str, data: dict) -> Config:
    """A Config from a validated document (`read_config`)."""
    data = dict(data)
    cls = data.pop("classify", {})
    scope = data.get("scope", {})
    return Config(
        classify=ClassifyConfig(**{k: float(v) for k, v in cls.items()}),
        ignore=frozenset(data.pop("ignore", ())),
        rules=_rules(data.pop("rules", {})),
        overrides=tuple(
            Override(service=o["service"], operation=o.get("operation"), ignore=frozenset(o.get("ignore", ())),
                     rules=_rules(o.get("rules", {})))
            for o in data.pop("override", [])
        ),
        ignore_operations=tuple(scope.get("ignore_operations", ())),
        sections=data,
        path=path,
    )


def _rules(table: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, float]]:
    return {code: {k: float(v) for k, v in values.items()} for code, values in table.items()}  # type: ignore[arg-type]
