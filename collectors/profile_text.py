"""Folded (collapsed) stacks: one `frame;frame;frame COUNT` line per stack, root first.

py-spy `--format raw` writes frames as `func (file.py:LINE)`; async-profiler `collapsed` adds
`_[j]`/`_[i]`/`_[k]` to mark JIT-compiled, inlined and kernel frames; `perf script |
stackcollapse-perf.pl` writes bare symbols. A function is its name and file: the line in
py-spy's frames is where the call was, and would split one function into many.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from analyzer.model.profile import Profile, ProfileBuilder

_PYSPY_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_ASYNC_PROFILER_MARK = re.compile(r"_\[[jikt0]\]$")


def looks_folded(head: str, complete: bool) -> bool:
    """Whether the first lines look like folded stacks (`...;... 123`). Unless `complete` (the
    whole file is in `head`), the last line may be cut short and is not judged."""
    lines = [ln for ln in head.splitlines() if ln.strip()]
    if not complete:
        lines = lines[:-1]
    return bool(lines) and all(re.search(r"\s\d+$", ln) for ln in lines[:5])


def read_folded(lines: Iterable[str], source: str, service: str | None, bad: Counter) -> Profile:
    """Folded stacks with sample counts; `bad` counts lines that are not `stack COUNT`."""
    b = ProfileBuilder()
    per_stack: Counter = Counter()
    for line in lines:
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            bad["invalid_lines"] += 1
            continue
        if n <= 0:
            bad["invalid_lines"] += 1
            continue
        per_stack[stack] += n
    for stack, n in per_stack.items():
        codes = [b.frame(*split_frame(f)) for f in stack.split(";") if f] if stack.strip() else []
        b.add(codes, n)
    return b.finish(service, source, "folded", unit="samples")


def split_frame(text: str) -> tuple[str, str]:
    """(function name, file) of one folded frame."""
    m = _PYSPY_FRAME.match(text)
    if m:
        return m["name"], m["file"]
    return _ASYNC_PROFILER_MARK.sub("", text), ""
