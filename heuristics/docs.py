"""Generates docs/rules/ from the rule registry: `python -m heuristics.docs [--check]`.

The pages are made from each detector's docstring, so they cannot drift from the code;
`--check` exits 1 when a page is missing or stale (the test suite runs it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from heuristics.registry import Rule, all_rules

DOCS = Path(__file__).resolve().parent.parent / "docs" / "rules"


def page(r: Rule) -> str:
    lines = [f"# {r.code} {r.name}", "", f"Category: `{r.category}`. {r.summary}", "", r.doc, ""]
    if r.defaults:
        lines += ["## Thresholds", "", "| name | default |", "|---|---|"]
        lines += [f"| `{k}` | {v:g} |" for k, v in r.defaults.items()]
        lines += ["", f"Override globally under `[rules.\"{r.code}\"]` in the config file, or per service/operation "
                  "in an `[[override]]` table; silence with `ignore = [\"" + r.code + "\"]`.", ""]
    return "\n".join(lines)


def index(rules: dict[str, Rule]) -> str:
    lines = ["# Rules", "", "Generated from the detectors' docstrings by `make docs`; do not edit by hand.", "",
             "| code | category | name | summary |", "|---|---|---|---|"]
    lines += [f"| [{r.code}]({r.code}.md) | {r.category} | {r.name} | {r.summary} |" for r in rules.values()]
    return "\n".join(lines) + "\n"


def expected() -> dict[Path, str]:
    rules = all_rules()
    files = {DOCS / f"{r.code}.md": page(r) for r in rules.values()}
    files[DOCS / "README.md"] = index(rules)
    return files


def main(argv: list[str]) -> int:
    files = expected()
    if "--check" in argv:
        stale = [str(p) for p, text in files.items() if not p.exists() or p.read_text() != text]
        for p in stale:
            print(f"stale or missing: {p} (run `make docs`)")
        return 1 if stale else 0
    DOCS.mkdir(parents=True, exist_ok=True)
    for p, text in files.items():
        p.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
