"""Every benchmark of the performance targets, as one table (`make bench`).

    python -m benchmarks.run [--quick] [--skip receiver,prometheus] [--no-json]

1. Trace analysis end to end against its parse floor (`bench_analyze`): `.pb`, `.binpb`, `.jsonl` at
   100k, 300k and 1M spans, the gzip forms at 300k; each figure and floor the lower CPU time of two
   fresh-process runs. Then the growth of the framed protobuf path from 100k to 1M spans (with
   `--growth-to 10000000`, `make bench-10m`: from 1M to 10M, ~10 minutes more and 4 GB of input
   under `.bench/`): three batches of each size alternated, a batch of the small size ten runs,
   of the large one run, the lowest mean CPU of each kept; with the reader's ratio to the floor at
   both sizes, peak RSS per span and the growth exponent.
2. The OTLP/HTTP receiver (`bench_receiver.py`): as fast as a load generator in another process
   can send for 10 s, then paced at 100,000 spans/s for 10 s with the capture written in its
   default format (framed protobuf + zstd, target >= 100,000 spans/s); both must lose nothing.
3. The Prometheus collector (`bench_prometheus`): 7 days x 50 services from a real Prometheus; the
   request count must not grow with the number of services. Then the same 11 services from a
   20- and a 500-service Prometheus (target: within 1.3x), and the collector's CPU per response
   byte against bare `requests` + `json.loads` of the same responses (target: within 1.5x).
   Skipped with a note when Prometheus or promtool is not installed
   (`scripts/install-test-servers.sh` installs them).
4. ClickHouse (`bench_clickhouse`): `analyze --clickhouse chdb:PATH` against a bare
   `GROUP BY ServiceName, SpanName` over the same exporter table in chDB's MergeTree, at
   `--clickhouse-spans` (default 1.25M and 5M; opt-in `2000000,10000000,50000000`, the issue's
   target, with `--clickhouse-dir` on a disk with ~4 GB free), then over HTTP for the largest.

Generated traces are cached under `.bench/traces/seed-0/` (by size and seed), the Prometheus TSDB
under `.bench/prom-*`; the figures are also written to `.bench/results.json`. About 4 minutes on
the 2-core benchmark machine once the inputs are cached (the first run generates them, ~1 min more;
the first Prometheus build ~2 min more).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import bench_analyze
from benchmarks.common import REPO

RECEIVER_SECONDS = 10.0
REPEAT = 2  # runs per analysis figure and floor, the lowest CPU time kept: one run stalled by the machine does not decide
PACED_RATE = 100_000


def _section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def analysis(sizes: Sequence[int], gz_size: int | None) -> list[dict]:
    _section("trace analysis: CPU seconds in a fresh process, start-up subtracted; ratio to the parse floor")
    emit = lambda line: print(line, flush=True)  # noqa: E731
    rows = bench_analyze.bench(bench_analyze.DEFAULT_INPUT, sizes, ("pb", "binpb", "jsonl"), REPEAT, emit=emit)
    if gz_size:
        rows += bench_analyze.bench(bench_analyze.DEFAULT_INPUT, [gz_size], ("binpb.gz", "jsonl.gz"), REPEAT, emit=emit)
    return [r.to_dict() for r in rows]


def growth(small: int, large: int) -> dict:
    _section(f"growth of the framed protobuf path, {small:,} -> {large:,} spans: CPU seconds, lowest mean of "
             f"{bench_analyze.GROWTH_ROUNDS} batches per size alternated ({large // small} runs of {small:,} against "
             f"1 of {large:,}), start-up subtracted; floors beside")
    g = bench_analyze.growth(bench_analyze.DEFAULT_INPUT, small, large, emit=lambda line: print(line, flush=True))
    for line in g.lines():
        print(line, flush=True)
    return g.to_dict()


def _receiver_run(label: str, *args: str) -> dict[str, Any]:
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_receiver.py"), "--seconds", str(RECEIVER_SECONDS), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=RECEIVER_SECONDS + 600)
    try:
        # The result is the last JSON document printed (indented over several lines).
        result = json.loads(proc.stdout[proc.stdout.rindex("\n{") + 1:] if "\n{" in proc.stdout else proc.stdout)
    except ValueError:
        print(f"{label}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}", flush=True)
        return {"label": label, "failed": True, "exit": proc.returncode}
    gen = result["generator"]
    line = (f"{label:<34} {gen['acked_spans']:>10,} spans  {result['spans_per_s']:>9,} spans/s  "
            f"receiver cpu {result['receiver_cpu_s']:5.2f} s  retried {gen['retries']}  "
            f"{'none lost' if result['none_lost'] else 'SPANS LOST'}")
    if "write_spans_per_s" in result:
        what = "OTLP/JSON" if result.get("write") == "json" else "framed protobuf + zstd (the default)"
        line += f"  capture written as {what} at {result['write_spans_per_s']:,} spans/s (target >= 100,000)"
    print(line, flush=True)
    return {"label": label, **result}


def receiver() -> list[dict]:
    _section(f"OTLP/HTTP receiver: protobuf from a load generator in another process, {RECEIVER_SECONDS:g} s each")
    return [_receiver_run("receiver, as fast as it can"),
            _receiver_run(f"receiver, paced at {PACED_RATE:,} spans/s", "--rate", str(PACED_RATE), "--write", "proto")]


def prometheus() -> dict:
    _section("Prometheus: 7-day report over 50 services (request count must not grow with services); "
             "11 services from 20 vs 500; CPU per response byte vs bare requests + json.loads")
    from tests.prom import PROMETHEUS, PROMTOOL

    missing = [p for p in (PROMETHEUS, PROMTOOL) if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"not installed: {', '.join(missing)} (scripts/install-test-servers.sh)")

    lines: list[str] = []
    exits = []
    # The 7-day fleet, then cost against the server's size (issue 17): the same 11 services from
    # 20 and 500 services (a quarter day keeps the 500-service backfill short), and CPU per byte.
    for extra in ((), ("--scale", "20,500", "--scale-days", "0.25")):
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_prometheus", *extra], cwd=REPO, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line.rstrip("\n"))
        exits.append(proc.wait())
    return {"exit": max(exits), "lines": lines}


def clickhouse(sizes: Sequence[int], directory: Path) -> list[dict]:
    _section(f"ClickHouse: analyze --clickhouse vs a bare GROUP BY over the same table "
             f"({', '.join(f'{n:,}' for n in sizes)} spans)")
    from benchmarks import bench_clickhouse

    return bench_clickhouse.bench(sizes, directory=directory, emit=lambda line: print(line, flush=True))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100k and 300k spans only, no gzip forms")
    ap.add_argument("--skip", default="", help="comma list of analysis,receiver,prometheus,clickhouse")
    ap.add_argument("--clickhouse-spans", default="1250000,5000000",
                    help="comma list of ClickHouse table sizes (opt-in: 2000000,10000000,50000000)")
    ap.add_argument("--clickhouse-dir", type=Path, default=REPO / ".bench" / "clickhouse",
                    help="where the ClickHouse tables are built and cached (50M spans: ~2.7 GB)")
    ap.add_argument("--growth-to", type=int, default=1_000_000, metavar="N",
                    help="growth measured from N/10 to N spans (default 1000000; make bench-10m: 10000000)")
    ap.add_argument("--no-json", action="store_true", help="do not write .bench/results.json")
    args = ap.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    wall = time.monotonic()
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if "analysis" not in skip:
        sizes = (100_000, 300_000) if args.quick else bench_analyze.DEFAULT_SIZES
        results["analysis"] = analysis(sizes, None if args.quick else 300_000)
        if not args.quick:
            results["growth"] = growth(args.growth_to // 10, args.growth_to)
    if "receiver" not in skip:
        results["receiver"] = receiver()
    if "prometheus" not in skip:
        try:
            results["prometheus"] = prometheus()
        except Exception as e:  # no promtool/prometheus here: say so, keep the other figures
            print(f"skipped: {e}", flush=True)
            results["prometheus"] = {"skipped": str(e)}
    if "clickhouse" not in skip:
        from benchmarks.bench_clickhouse import parse_sizes

        sizes = [250_000, 1_000_000] if args.quick else parse_sizes(args.clickhouse_spans)
        results["clickhouse"] = clickhouse(sizes, args.clickhouse_dir)
    results["wall_s"] = round(time.monotonic() - wall, 1)
    print(f"\nall benchmarks: {results['wall_s']:.0f} s", flush=True)
    if not args.no_json:
        out = REPO / ".bench" / "results.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"figures written to {out.relative_to(REPO)}")
    failed = [r for r in results.get("receiver", []) if r.get("failed") or not r.get("none_lost", True)]
    return 1 if failed or results.get("prometheus", {}).get("exit", 0) else 0


if __name__ == "__main__":
    sys.exit(main())
