"""The configuration file (TOML): classification margins, rule thresholds, per-operation overrides.

    [classify]
    min_share = 0.30          # a category must explain at least this share of a hot spot
    margin = 0.10             # ... and lead the next category by this much

    ignore = ["PF-NET003"]    # rules never reported

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
from pathlib import Path

from analyzer.classify import ClassifyConfig


class ConfigError(Exception):
    """The config file is unreadable or has a wrong value. One line, user-facing."""


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
    sections: Mapping[str, object] = field(default_factory=dict)  # other tables, e.g. [prometheus]

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
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e
    try:
        cls = data.pop("classify", {})
        classify = ClassifyConfig(**{k: float(v) for k, v in cls.items()})
        overrides = tuple(
            Override(
                service=str(o["service"]),
                operation=o.get("operation"),
                ignore=frozenset(o.get("ignore", ())),
                rules=_rules(o.get("rules", {})),
            )
            for o in data.pop("override", [])
        )
        return Config(
            classify=classify,
            ignore=frozenset(data.pop("ignore", ())),
            rules=_rules(data.pop("rules", {})),
            overrides=overrides,
            sections=data,
        )
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"{path}: invalid config: {e}") from e


def _rules(table: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, float]]:
    return {code: {k: float(v) for k, v in values.items()} for code, values in table.items()}  # type: ignore[arg-type]
