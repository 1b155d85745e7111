"""Generates docs/config.md from the config schema: `python -m analyzer.config_docs [--check]`.

The reference is made from analyzer/config_schema.py, the declaration `load_config` validates
against, plus the rule registry's thresholds, and embeds examples/weekly.toml (which a test
loads); `--check` exits 1 when the page is stale (the test suite checks it too).
"""

from __future__ import annotations

import sys
from pathlib import Path

from analyzer.config_schema import (
    ROOT,
    Key,
    ListOf,
    Mapped,
    RuleCodes,
    RuleTables,
    Table,
    TableArray,
    threshold_type,
)
from heuristics.registry import all_rules
import collectors.store_settings  # noqa: F401  (registers the [sources.*] tables of the trace stores)

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "config.md"
EXAMPLE = REPO / "examples" / "weekly.toml"


def page() -> str:
    out = ["# Configuration file", "",
           "Generated from `analyzer/config_schema.py` by `make docs`; do not edit by hand.", "",
           "One TOML file serves `analyze --config FILE` and `report --config FILE`. It is validated as a whole: "
           "an unknown table, key, rule code or threshold name is an error with a did-you-mean, and a value of the "
           "wrong type or out of range is an error naming the key, the value and what is allowed (exit 2). "
           "`profile-first config check FILE` lists every problem. Command-line flags override the file.", "",
           "Keys at the top level (`ignore`) must come before the first `[table]` header: in TOML, a key after "
           "a header belongs to that table.", ""]
    for name, key in ROOT.keys.items():
        out += _section(name, key)
    out += _thresholds()
    out += ["## Complete example", "", f"`{EXAMPLE.relative_to(REPO)}` (the test suite loads it):", "", "```toml",
            EXAMPLE.read_text(encoding="utf-8").rstrip("\n"), "```", ""]
    return "\n".join(out)


def _section(path: str, key: Key) -> list[str]:
    kind = key.type
    if isinstance(kind, TableArray):
        return _table(f"[[{path}]]", path, kind.table, key.doc)
    if isinstance(kind, Table):
        return _table(f"[{path}]", path, kind, key.doc)
    return [f"## `{path}`", "", key.doc, "", f"Type: {_type(kind)}.{_default(key)}", ""]


def _table(title: str, path: str, table: Table, doc: str) -> list[str]:
    out = [f"## `{title}`" if path.count(".") == 0 else f"### `{title}`", "", doc, ""]
    rows = [(name, key) for name, key in table.keys.items() if not isinstance(key.type, Table)]
    if rows:
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, key in rows:
            default = "required" if key.required else _toml(key.default) if key.default is not None else ""
            out.append(f"| `{name}` | {_type(key.type)} | {default} | {_cell(key.doc)} |")
        out.append("")
    for name, key in table.keys.items():
        if isinstance(key.type, Table):
            out += _table(f"[{path}.{name}]", f"{path}.{name}", key.type, key.doc)
    return out


def _thresholds() -> list[str]:
    out = ["## Rule thresholds", "",
           'Names a `[rules."CODE"]` or `[override.rules."CODE"]` table takes, with their defaults. Names ending in '
           "`_share`, `_ratio`, `_fraction`, `_coverage`, `_overlap`, `_correlation` or `_utilization` are "
           "fractions from 0 to 1; the others are numbers at least 0. Each rule's page in docs/rules/ says what "
           "they mean.", "", "| rule | threshold | default | allowed |", "|---|---|---|---|"]
    for code, r in all_rules().items():
        for name, value in r.defaults.items():
            out.append(f"| [{code}](rules/{code}.md) | `{name}` | {value:g} | {threshold_type(name).allowed()} |")
    return out + [""]


def _type(kind: object) -> str:
    if isinstance(kind, RuleCodes | RuleTables):
        return "rule codes" if isinstance(kind, RuleCodes) else "table of rule codes"
    if isinstance(kind, Mapped):
        return f"table of {kind.key_doc} = {kind.value.allowed()}"
    if isinstance(kind, ListOf):
        return kind.allowed()
    return kind.allowed()  # type: ignore[union-attr]


def _default(key: Key) -> str:
    return f" Default: {_toml(key.default)}." if key.default is not None else ""


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, list):
        return "`[" + ", ".join(f'"{v}"' if isinstance(v, str) else f"{v}" for v in value) + "]`"
    if isinstance(value, dict):
        return "`{}`"
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: list[str]) -> int:
    text = page()
    if "--check" in argv:
        if not PAGE.exists() or PAGE.read_text(encoding="utf-8") != text:
            print(f"stale or missing: {PAGE} (run `make docs`)")
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
