"""Run one measured call in a fresh interpreter and collect its figures.

Each figure runs in its own subprocess so peak RSS belongs to that call alone: `ru_maxrss` of
`RUSAGE_CHILDREN` is the maximum over every child ever waited for, so it would carry the largest
earlier run into later lines; `os.wait4` returns the rusage of exactly one child.

The measured function is named `"package.module:function"`, gets keyword arguments that are JSON
values, and returns a dict with `spans` and `bytes` and, when setup (reading the file) must not
count, `seconds` for the part it timed itself; otherwise the whole call is timed. Other keys are
kept in `Figures.extra`.

    fig = measure_in_subprocess("benchmarks.bench_floor:parse_pb", {"path": "traces-1000000.pb"},
                                label="pb")
    print(fig.line())
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
_MARK = "PF-FIGURES "


@dataclass(frozen=True)
class Figures:
    """One measured call: what it read, how long it took and how much memory the process peaked at."""

    label: str
    spans: int
    bytes: int
    seconds: float
    peak_rss: int  # bytes, the child's VmHWM: its own peak, not the parent's inherited through fork
    base_rss: int  # bytes, the child's RSS after imports, before the call
    cpu_seconds: float  # user + system of the child, whole process
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spans_per_s(self) -> float:
        return self.spans / self.seconds if self.seconds > 0 else float("inf")

    def line(self) -> str:
        return (f"{self.label:<34} {self.spans:>10,} spans {self.bytes / 1e6:>9.1f} MB "
                f"{self.seconds:>8.3f} s {self.spans_per_s / 1e6:>7.3f} M spans/s  "
                + (f"cpu {self.extra['cpu_s']:>7.3f} s  " if "cpu_s" in self.extra else "")
                + f"peak RSS {self.peak_rss / 2**20:>7.0f} MiB (+{(self.peak_rss - self.base_rss) / 2**20:.0f})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"spans_per_s": self.spans_per_s}


def ratio_line(fig: Figures, floor: Figures) -> str:
    """How far a measured figure is above a floor measured on the same input."""
    return (f"{fig.label} / {floor.label}: time x{fig.seconds / floor.seconds:.2f}, "
            f"peak RSS x{fig.peak_rss / floor.peak_rss:.2f}")


def _status_kib(field: str) -> int:
    """A `/proc/self/status` figure in bytes (VmRSS: now; VmHWM: this process image's peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _rss_now() -> int:
    return _status_kib("VmRSS")


def measure_in_subprocess(fn_path: str, kwargs: dict[str, Any], label: str | None = None,
                          timeout: float = 3600.0) -> Figures:
    """Call `fn_path(**kwargs)` in a fresh interpreter; raise with its stderr if it fails."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.common", fn_path, json.dumps(kwargs)],
                                stdout=out, stderr=err, env=env, cwd=REPO)
        deadline = time.monotonic() + timeout
        while True:  # wait4 (not Popen.wait) to get this child's own rusage
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
        out.seek(0)
        err.seek(0)
        result = next((json.loads(line[len(_MARK):]) for line in out if line.startswith(_MARK)), None)
        if proc.returncode != 0 or result is None:
            raise RuntimeError(f"{fn_path}({kwargs}) exited {proc.returncode}:\n{err.read()[-4000:]}")
    res = result["result"]
    return Figures(label=label or fn_path, spans=int(res.pop("spans")), bytes=int(res.pop("bytes")),
                   seconds=float(res.pop("seconds", result["wall_s"])),
                   # Not ru_maxrss: Linux keeps it across fork and exec, so a child would report the
                   # benchmark runner's own peak whenever that was larger.
                   peak_rss=result["peak_rss"], base_rss=result["base_rss"],
                   cpu_seconds=usage.ru_utime + usage.ru_stime, extra=res)


def _child(fn_path: str, kwargs_json: str) -> None:
    module, _, name = fn_path.partition(":")
    fn = getattr(importlib.import_module(module), name)
    base = _rss_now()
    t0 = time.perf_counter()
    result = fn(**json.loads(kwargs_json))
    wall = time.perf_counter() - t0
    print(_MARK + json.dumps({"result": result, "wall_s": wall, "base_rss": base, "peak_rss": _status_kib("VmHWM")}),
          flush=True)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
