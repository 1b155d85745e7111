"""A CPU profile in columns: the stacks a service was sampled in, and how much CPU each took.

Every profile format (pprof, folded stacks, speedscope, V8 `.cpuprofile`, Pyroscope) lands in
this one shape, so the analysis never knows which profiler took it. Stacks are stored root
first in one flat array of frame codes with CSR offsets, like the SpanTable's columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One function: its name and where it lives (a file path, a URL or a Go package path)."""

    name: str
    file: str = ""

    def label(self) -> str:
        return f"{self.name} ({self.file})" if self.file else self.name


@dataclass
class Profile:
    service: str | None
    source: str  # file path or URL it came from
    format: str  # pprof | folded | speedscope | cpuprofile | pyroscope
    frames: list[Frame]
    offsets: np.ndarray  # int64 [n_stacks + 1]: stack i is frames[stack_frames[offsets[i]:offsets[i+1]]]
    stack_frames: np.ndarray  # int32 frame codes, root first
    weights: np.ndarray  # float64 [n_stacks]: CPU seconds, or samples when `unit` is "samples"
    unit: str = "seconds"
    # Span names the profiler linked samples to (pprof labels, Pyroscope span profiles): a code per
    # stack into `span_names`, -1 where the sample carries none.
    span_codes: np.ndarray | None = None
    span_names: list[str] = field(default_factory=list)

    @property
    def n_stacks(self) -> int:
        return int(self.weights.size)

    @property
    def total(self) -> float:
        return float(self.weights.sum())

    def leaf_codes(self) -> np.ndarray:
        """The innermost frame of each stack (-1 for an empty stack)."""
        lengths = np.diff(self.offsets)
        out = np.full(self.n_stacks, -1, dtype=np.int64)
        nonempty = lengths > 0
        out[nonempty] = self.stack_frames[self.offsets[1:][nonempty] - 1]
        return out

    def stack_of(self, i: int) -> np.ndarray:
        return self.stack_frames[self.offsets[i]:self.offsets[i + 1]]


class ProfileBuilder:
    """Collects stacks of frames (root first) with weights and interns the frames."""

    def __init__(self) -> None:
        self._codes: dict[Frame, int] = {}
        self.frames: list[Frame] = []
        self._stacks: list[list[int]] = []
        self._weights: list[float] = []
        self._spans: list[int] = []
        self._span_codes: dict[str, int] = {}

    def frame(self, name: str, file: str = "") -> int:
        f = Frame(name, file)
        code = self._codes.get(f)
        if code is None:
            code = self._codes[f] = len(self.frames)
            self.frames.append(f)
        return code

    def add(self, stack: list[int], weight: float, span_name: str | None = None) -> None:
        if weight <= 0 or not np.isfinite(weight):
            return
        self._stacks.append(stack)
        self._weights.append(float(weight))
        if span_name:
            code = self._span_codes.setdefault(span_name, len(self._span_codes))
            self._spans.append(code)
        else:
            self._spans.append(-1)

    def __len__(self) -> int:
        return len(self._stacks)

    def finish(self, service: str | None, source: str, fmt: str, unit: str = "seconds") -> Profile:
        lengths = np.fromiter((len(s) for s in self._stacks), dtype=np.int64, count=len(self._stacks))
        offsets = np.zeros(len(self._stacks) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((c for s in self._stacks for c in s), dtype=np.int32, count=int(offsets[-1]))
        spans = np.asarray(self._spans, dtype=np.int32)
        return Profile(service, source, fmt, self.frames, offsets, flat,
                       np.asarray(self._weights, dtype=np.float64), unit,
                       span_codes=spans if self._span_codes else None,
                       span_names=list(self._span_codes))
