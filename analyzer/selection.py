"""What the user asked for is in the data: the named services, a window with spans in it.

A typo in `--service` or a window beside the data would otherwise give a report with a header
and nothing under it, and exit 0; each is a UserError (one line, exit 2) that says what the
data does hold.
"""

from __future__ import annotations

import numpy as np

from analyzer.cliutil import UserError, closest
from analyzer.model.spans import SpanTable
from analyzer.pipeline import Inputs, rfc3339
from analyzer.renderers.escape import for_terminal

MAX_LISTED = 20


def require_services(requested: list[str], inputs: Inputs) -> None:
    """Every requested service is in the traces, the metrics or the CPU profiles read."""
    known = sorted(set(inputs.table.services) | set(inputs.signals.services if inputs.signals else ())
                   | {p.service for p in inputs.profiles if p.service})
    unknown = [name for name in requested if name not in known]
    if not unknown:
        return
    name = unknown[0]
    guess = closest(name, known)
    hint = f"; did you mean {for_terminal(guess)!r}?" if guess else ""
    listed = ", ".join(for_terminal(k) for k in known[:MAX_LISTED]) + (f" and {len(known) - MAX_LISTED} more"
                                                                     if len(known) > MAX_LISTED else "")
    where = f"the data has {listed}" if known else "the data has no services"
    raise UserError(f"--service {for_terminal(name)!r} is in no trace or metric read{hint} ({where})")


def require_spans_in_window(table: SpanTable, start: float | None, end: float | None) -> None:
    """Some span starts in the explicit window [start, end) (unix seconds)."""
    if (start is None and end is None) or len(table) == 0:
        return
    st = table.start
    lo = int(start * 1e9) if start is not None else np.iinfo(np.int64).min
    hi = int(end * 1e9) if end is not None else np.iinfo(np.int64).max
    if ((st >= lo) & (st < hi)).any():
        return
    window = f"{rfc3339(start) if start is not None else 'the start'} → {rfc3339(end) if end is not None else 'now'}"
    raise UserError(f"no spans start in the window {window}; the traces read cover "
                    f"{rfc3339(float(st.min()) / 1e9)} → {rfc3339(float(table.end.max()) / 1e9)}")
