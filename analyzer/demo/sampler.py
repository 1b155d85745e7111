"""A CPU profiler for the demo's own services: samples every thread's Python stack and weights
it by the CPU time that thread used since the previous sample, so waiting threads (the HTTP
server's accept loop, exporters between batches) weigh nothing. Written as speedscope JSON,
which `profile-first analyze --profile` reads and speedscope.app opens.

It needs no ptrace rights and no extra package, which is why the demo uses it; for your own
services use py-spy, async-profiler, pprof or `node --cpu-prof` (see the README).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from types import FrameType


class CpuSampler:
    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self._frames: dict[tuple[str, str], int] = {}
        self._weights: dict[tuple[int, ...], float] = {}
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="profile-first-sampler", daemon=True)

    def start(self) -> CpuSampler:
        self._thread.start()
        return self

    def stop(self, path: Path) -> None:
        """Stop sampling and write the profile to `path` (speedscope JSON, seconds)."""
        self._stop.set()
        self._thread.join(timeout=5)
        frames = [{"name": name, "file": file} for (name, file) in self._frames]
        stacks = list(self._weights.items())
        doc = {"$schema": "https://www.speedscope.app/file-format-schema.json", "shared": {"frames": frames},
               "profiles": [{"type": "sampled", "name": "cpu", "unit": "seconds", "startValue": 0,
                             "endValue": sum(w for _, w in stacks), "samples": [list(s) for s, _ in stacks],
                             "weights": [w for _, w in stacks]}],
               "exporter": "profile-first demo sampler"}
        path.write_text(json.dumps(doc))

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self.interval_s):
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                used = self._cpu_delta(ident)
                if used > 0:
                    key = self._stack(frame)
                    self._weights[key] = self._weights.get(key, 0.0) + used

    def _cpu_delta(self, ident: int) -> float:
        try:
            now = time.clock_gettime(time.pthread_getcpuclockid(ident))
        except (OSError, ValueError):  # the thread ended between the two calls
            return 0.0
        before = self._cpu.get(ident)
        self._cpu[ident] = now
        return 0.0 if before is None else now - before

    def _stack(self, frame: FrameType | None) -> tuple[int, ...]:
        codes = []
        while frame is not None:
            key = (frame.f_code.co_qualname, frame.f_code.co_filename)
            code = self._frames.setdefault(key, len(self._frames))
            codes.append(code)
            frame = frame.f_back
        return tuple(reversed(codes))
