"""The floors a trace reader is compared against: parsing alone, on the generated files.

    python -m benchmarks.bench_floor --input DIR [--sizes 100000,300000,1000000] [--json OUT]

For each size, in a fresh subprocess each (so peak RSS is that run's own):
  - `ExportTraceServiceRequest.ParseFromString` on the single-message `.pb`;
  - the same per batch of the length-delimited `.binpb`, streaming (each batch dropped after it
    is parsed, as a reader that turns batches into columns would);
  - stdlib `json.loads` of every line of the `.jsonl`, streaming too, and `orjson.loads` when
    orjson is installed;
  - each again on the `.gz` file, gunzip included in the time.
The file is read into memory before the clock starts, so times are parse (and gunzip) alone; its
bytes are part of the peak RSS, as they are for a reader. Missing sizes are generated into DIR
first (seed 0), unless --no-generate.

The end-to-end benchmark reuses `floor_figures()` (or one `FLOORS` entry with
`common.measure_in_subprocess`) and `common.ratio_line()` to print its ratio to these floors.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks.common import Figures, measure_in_subprocess
from benchmarks.gen_traces import iter_framed, paths_for
from benchmarks.gen_traces import main as gen_main

DEFAULT_SIZES = (100_000, 300_000, 1_000_000)


class _Clock:
    """Wall and CPU time together: CPU time stays honest when other processes share the cores."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def _load(path: str) -> tuple[bytes, int, tuple[float, float]]:
    """(uncompressed bytes, file size, (wall, cpu) seconds spent in gunzip)."""
    raw = Path(path).read_bytes()
    if not path.endswith(".gz"):
        return raw, len(raw), (0.0, 0.0)
    clock = _Clock()
    data = gzip.decompress(raw)
    return data, len(raw), clock.lap()


def _timed(size: int, spans: int, gunzip: tuple[float, float], parse: tuple[float, float], **extra) -> dict:
    return {"spans": spans, "bytes": size, "seconds": gunzip[0] + parse[0], "cpu_s": gunzip[1] + parse[1],
            "gunzip_s": gunzip[0], **extra}


# ---- measured functions (run in the child; return spans, bytes and the seconds they timed)


def parse_pb(path: str) -> dict:
    """ParseFromString of one ExportTraceServiceRequest holding every span."""
    data, size, gunzip = _load(path)
    clock = _Clock()
    msg = ExportTraceServiceRequest()
    msg.ParseFromString(data)
    parse = clock.lap()
    spans = sum(len(ss.spans) for rs in msg.resource_spans for ss in rs.scope_spans)
    return _timed(size, spans, gunzip, parse)


def parse_framed(path: str) -> dict:
    """ParseFromString per length-delimited batch; each batch dropped after counting its spans."""
    data, size, gunzip = _load(path)
    spans = batches = 0
    clock = _Clock()
    for frame in iter_framed(data):
        msg = ExportTraceServiceRequest.FromString(frame)
        spans += sum(len(ss.spans) for rs in msg.resource_spans for ss in rs.scope_spans)
        batches += 1
    return _timed(size, spans, gunzip, clock.lap(), batches=batches)


def loads_lines(path: str, lib: str = "json") -> dict:
    """`lib.loads` of every JSON line; each document dropped after counting its spans."""
    loads = importlib.import_module(lib).loads
    data, size, gunzip = _load(path)
    spans = lines = off = 0
    clock = _Clock()
    # One line sliced at a time (not splitlines): a second copy of the file would inflate peak RSS.
    while off < len(data):
        nl = data.find(b"\n", off)
        nl = len(data) if nl < 0 else nl
        if nl > off:
            doc = loads(data[off:nl])
            spans += sum(len(ss.get("spans", ())) for rs in doc.get("resourceSpans", ())
                         for ss in rs.get("scopeSpans", ()))
            lines += 1
        off = nl + 1
    return _timed(size, spans, gunzip, clock.lap(), lines=lines)


# ---- the floors and the driver


@dataclass(frozen=True)
class Floor:
    label: str
    file_key: str  # key of gen_traces.paths_for
    fn_path: str
    kwargs: tuple[tuple[str, str], ...] = ()


FLOORS: tuple[Floor, ...] = (
    Floor("pb ParseFromString (1 message)", "pb", "benchmarks.bench_floor:parse_pb"),
    Floor("pb.gz gunzip+ParseFromString", "pb.gz", "benchmarks.bench_floor:parse_pb"),
    Floor("binpb ParseFromString per batch", "binpb", "benchmarks.bench_floor:parse_framed"),
    Floor("binpb.gz gunzip+ParseFromString", "binpb.gz", "benchmarks.bench_floor:parse_framed"),
    Floor("jsonl json.loads per line", "jsonl", "benchmarks.bench_floor:loads_lines", (("lib", "json"),)),
    Floor("jsonl.gz gunzip+json.loads", "jsonl.gz", "benchmarks.bench_floor:loads_lines", (("lib", "json"),)),
    Floor("jsonl orjson.loads per line", "jsonl", "benchmarks.bench_floor:loads_lines", (("lib", "orjson"),)),
    Floor("jsonl.gz gunzip+orjson.loads", "jsonl.gz", "benchmarks.bench_floor:loads_lines", (("lib", "orjson"),)),
)


def available_floors() -> list[Floor]:
    """FLOORS minus those needing a library that is not installed (orjson is optional)."""
    have_orjson = importlib.util.find_spec("orjson") is not None
    return [f for f in FLOORS if have_orjson or dict(f.kwargs).get("lib") != "orjson"]


def ensure_inputs(input_dir: Path, n_spans: int, generate: bool = True,
                  forms: Sequence[str] | None = None) -> dict[str, Path]:
    """The generated files for `n_spans`, generating them (seed 0) when missing and allowed; only
    the `forms` given (keys of `paths_for`, e.g. "binpb", "binpb.gz") when not None: at 10M spans
    the other forms would take minutes and gigabytes more."""
    paths = paths_for(input_dir, n_spans)
    if forms is not None:
        paths = {k: p for k, p in paths.items() if k in forms}
    if not all(p.exists() for p in paths.values()):
        formats = sorted({k.split(".")[0] for k in paths})
        if not generate:
            missing = [str(p) for p in paths.values() if not p.exists()]
            raise FileNotFoundError(f"missing {missing}; run python -m benchmarks.gen_traces "
                                    f"--spans {n_spans} --out {input_dir} --formats {','.join(formats)}")
        gen_main(["--spans", str(n_spans), "--out", str(input_dir), "--formats", ",".join(formats)])
    return paths


def floor_figures(input_dir: Path, n_spans: int, floors: Sequence[Floor] | None = None,
                  generate: bool = True, repeat: int = 1) -> list[Figures]:
    """Every floor for one size, each measured in its own subprocess; the fastest of `repeat`."""
    paths = ensure_inputs(Path(input_dir), n_spans, generate)
    out = []
    for f in floors if floors is not None else available_floors():
        kwargs = {"path": str(paths[f.file_key]), **dict(f.kwargs)}
        fig = min((measure_in_subprocess(f.fn_path, kwargs, label=f.label) for _ in range(repeat)),
                  key=lambda fig: fig.seconds)
        if fig.spans != n_spans:
            raise RuntimeError(f"{f.label}: parsed {fig.spans} spans from {paths[f.file_key]}, "
                               f"expected {n_spans}")
        out.append(fig)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_floor", description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, required=True, help="directory of gen_traces output")
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    ap.add_argument("--no-generate", action="store_true", help="fail instead of generating missing sizes")
    ap.add_argument("--repeat", type=int, default=1, help="runs per figure, the fastest is kept")
    ap.add_argument("--json", type=Path, help="also write the figures here as JSON")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    by_size: dict[int, list[Figures]] = {}
    for n in sizes:
        by_size[n] = floor_figures(args.input, n, generate=not args.no_generate, repeat=args.repeat)
        for fig in by_size[n]:
            print(fig.line(), flush=True)
    if len(sizes) > 1:  # growth: does time and memory scale linearly with spans?
        lo, hi = min(sizes), max(sizes)
        print(f"growth {lo:,} -> {hi:,} spans (x{hi / lo:g}):")
        for a, b in zip(by_size[lo], by_size[hi]):
            cpu = b.extra.get("cpu_s", 0.0) / max(1e-9, a.extra.get("cpu_s", 0.0))
            print(f"  {a.label:<34} time x{b.seconds / a.seconds:6.2f}   cpu x{cpu:6.2f}"
                  f"   peak RSS x{b.peak_rss / a.peak_rss:5.2f}"
                  f"   RSS above baseline x{(b.peak_rss - b.base_rss) / max(1, a.peak_rss - a.base_rss):5.2f}")
    if args.json:
        args.json.write_text(json.dumps({str(n): [f.to_dict() for f in figs] for n, figs in by_size.items()},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
