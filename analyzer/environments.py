"""The `deployment.environment` filter of `report` and `analyze --environment`: which spans and
which Prometheus series it keeps, and what a report says of it.

One rule for both signals: what names another environment is left out, what names none is kept,
so that a fleet that sets no environment is never emptied by the filter.
"""

from __future__ import annotations

import numpy as np

from analyzer.model.spans import SpanTable
from collectors.promql import quote, re_escape

ENV_LABEL = "deployment_environment"  # deployment.environment as a Prometheus label
ALL = "*"  # the name that turns the filter off


def environments_asked(names: object) -> tuple[str, ...]:
    """The deployment.environment values to keep; `*` (or none given): every one, no filter."""
    names = tuple(str(n) for n in names)  # type: ignore[union-attr]
    return () if ALL in names else names


def environment_filter(table: SpanTable, environments: tuple[str, ...]) -> tuple[SpanTable, dict | None]:
    """The spans of `environments` (and those whose resource names none, as for Prometheus), and the
    report's `environment_filter`: what was asked and the spans read per environment. No filter
    asked: the table as it is and None."""
    if not environments:
        return table, None
    counts = np.bincount(table.environment + 1, minlength=len(table.environments) + 1)
    by_environment = {name: int(n) for name, n in zip(["", *table.environments], counts.tolist()) if n}
    keep = table.environment_mask(environments)
    kept = int(np.count_nonzero(keep))
    applied = {"environments": list(environments), "spans_read": len(table), "spans_kept": kept,
               "by_environment": by_environment}
    return (table if kept == len(table) else table.take(keep)), applied


def kept_nothing(applied: dict | None) -> str | None:
    """What to say when the filter `applied` left out every span read; None when it kept some
    (or read none: then there is nothing it took away)."""
    if not applied or not applied["spans_read"] or applied["spans_kept"]:
        return None
    seen = ", ".join(f"{name} ({n:,} spans)" for name, n in sorted(applied["by_environment"].items(), key=lambda x: -x[1]))
    return (f"no span is from deployment.environment {' or '.join(applied['environments'])}: "
            f"the traces read are from {seen}")


def asked_for(environments: tuple[str, ...] | list[str]) -> str:
    """" (deployment.environment production or staging, or none, was asked for)", for a message
    about a search that found nothing with the filter in it; "" with no filter."""
    return f" (deployment.environment {' or '.join(environments)}, or none, was asked for)" if environments else ""


def with_environment_matcher(extra_matchers: str, environments: tuple[str, ...]) -> str:
    """`extra_matchers` (Prometheus label matchers added to every selector) with the filter's:
    series without the label are kept (`=~"production|"` also matches an absent label), only
    series that name another environment are left out."""
    extra = str(extra_matchers or "").strip().strip("{}").strip()
    if not environments:
        return extra
    matcher = f"{ENV_LABEL}=~{quote('|'.join(re_escape(e) for e in environments) + '|')}"
    return f"{extra}, {matcher}" if extra else matcher
