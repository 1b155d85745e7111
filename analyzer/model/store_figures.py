"""Figures a trace store computed over the whole window, beside the sample analyzed here.

When traces are pulled as a sample (ClickHouse: `collectors/clickhouse_traces.py`), the hot-spot
ranking, latency quantiles, error counts and per-trace statement repetitions are computed in
the store over every span of the window. The report shows them beside the sample's weighted
estimates, and the N+1 rule quotes the whole-window repetition figures as evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OperationFigures:
    """Entry spans of one (service, operation) over the window."""

    count: int
    total_ns: int
    quantiles_ns: dict[float, float]  # 0.5, 0.95, 0.99 -> ns
    errors: int
    roots: int = 0  # of them, spans without a parent (the trace's own root)

    def to_dict(self) -> dict:
        return {"count": self.count, "total_ms": round(self.total_ns / 1e6, 3),
                **{f"p{int(q * 100)}_ms": round(v / 1e6, 3) for q, v in sorted(self.quantiles_ns.items())},
                "errors": self.errors}


@dataclass(frozen=True)
class Repetition:
    """One normalized statement in one (service, entry operation), counted per trace."""

    statement: str  # normalized as the SpanTable normalizes (analyzer/model/statement.py)
    traces: int  # traces whose requests ran it
    executions: int
    most_in_one_trace: int
    repeating_traces: int  # traces running it at least `min_repetitions` times
    repeated_executions: int  # executions in those traces


@dataclass
class StoreFigures:
    """What the store computed, and how (for the report's `input`)."""

    engine: str  # "clickhouse" or "chdb"
    min_repetitions: int
    operations: dict[tuple[str, str], OperationFigures] = field(default_factory=dict)
    repetitions: dict[tuple[str, str], list[Repetition]] = field(default_factory=dict)

    def operation(self, service: str, operation: str) -> OperationFigures | None:
        return self.operations.get((service, operation))

    def repetition(self, service: str, operation: str, statement: str) -> Repetition | None:
        for r in self.repetitions.get((service, operation), ()):
            if r.statement == statement:
                return r
        return None
