"""Generates docs/metrics.md from the PromQL catalog: `python -m collectors.catalog_docs [--check]`.

Which metric families the Prometheus collector reads for each runtime signal, best first, every
generation of each runtime's client libraries included; `--check` exits 1 when the page is stale
(the test suite checks it too).
"""

from __future__ import annotations

import sys
from pathlib import Path

from collectors.promql import CATALOG

PAGE = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


def page() -> str:
    out = ["# Metrics read from Prometheus", "",
           "Generated from `collectors/promql.py` by `make docs`; do not edit by hand.", "",
           "For each signal, the metric families that can carry it, best first: per service, the first "
           "variant whose families the service exposes is queried. Counters are read as their increase over "
           "the window (rate ranges follow the scrape interval found in the data), so a window mean is exact "
           "for a 2-minute capture and for 7 days alike. How each signal is used: README, How it decides; "
           "the runtimes' one-line setups: README, Runtime metrics.", ""]
    for spec in CATALOG:
        out += [f"## `{spec.name}` ({spec.unit})", "", "| source | needs |", "|---|---|"]
        out += [f"| {v.key} | {', '.join(f'`{n}`' for n in v.needs)} |" for v in spec.variants]
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    text = page()
    if "--check" in argv:
        return 0 if PAGE.exists() and PAGE.read_text(encoding="utf-8") == text else 1
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
