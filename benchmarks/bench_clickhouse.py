"""`analyze --clickhouse` against a bare scan of the same `otel_traces` table.

    python -m benchmarks.bench_clickhouse [--spans 1250000,5000000] [--dir DIR] [--no-http]
    python -m benchmarks.bench_clickhouse --spans 2000000,10000000,50000000 --dir /scratch/ch

The tables: the benchmark fleet (`gen_traces`, `--base` spans, one hour) loaded with the
exporter's mapping (`otel_traces_table`), then copied inside the engine (INSERT ... SELECT from the
base joined with `numbers()`, ten copies a statement) into consecutive hours with fresh trace and
span ids (cityHash64 of the id and the copy number), one table per size, in chDB's MergeTree on
disk under `--dir` (default `.bench/clickhouse/`; 50M spans are ~2.7 GB and take ~13 minutes to
build on 2 cores, once).

Measured, each in a fresh process (`common.measure_in_subprocess`): wall seconds of the call and
CPU seconds of the process (the machine is shared; CPU time drifts less):
- the floor: chDB opening the database and `SELECT ServiceName, SpanName, count(), sum(Duration)
  ... GROUP BY ServiceName, SpanName`;
- the tool: chDB opening the database, every push-down query, the sample pulled and decoded, the
  analysis and the JSON report (Python imports excluded from both);
- for the largest table, the tool again over HTTP (clickhouse-connect) against
  tests/clickhouse_http.py serving the same directory from another process.
The ratio is tool / floor. Peak RSS is the process's: with chDB the engine runs in it (~430 MiB
resident once loaded, in the floor too); over HTTP it holds the streamed results and the sample.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from analyzer.config import Config
from analyzer.pipeline import Inputs, analyze
from analyzer.renderers import render
from benchmarks.common import REPO, Figures, measure_in_subprocess
from collectors.clickhouse_traces import Options, load_clickhouse

DIR = REPO / ".bench" / "clickhouse"
DEFAULT_SIZES = (1_250_000, 5_000_000)
DEFAULT_BASE = 200_000
HOUR_S = 3600
COPIES_PER_INSERT = 10  # 2M spans per INSERT ... SELECT at the default base


def table_name(n_spans: int) -> str:
    return f"otel.traces_{n_spans}"


def build(sizes: Sequence[int], base_spans: int = DEFAULT_BASE, seed: int = 0, directory: Path = DIR) -> Path:
    """The chDB directory holding `table_name(n)` for each n in `sizes` (cached per table)."""
    from chdb import session

    from benchmarks.gen_traces import generate_traces
    from benchmarks.otel_traces_table import create_table, load_otlp_jsonl

    path = directory / f"db-{base_spans}-{seed}"
    todo = [n for n in sizes if not (path / f".built-{n}").exists()]
    if not todo:
        return path
    directory.mkdir(parents=True, exist_ok=True)
    base_file = directory / f"fleet-{base_spans}-{seed}.otlp.jsonl"
    if not base_file.exists():
        gen = generate_traces(base_spans, seed=seed, window_s=HOUR_S)
        tmp = base_file.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for line in gen.json_lines():
                f.write(line + "\n")
        tmp.rename(base_file)
    s = session.Session(str(path))
    try:
        create_table(s, "otel.base")
        if not int(str(s.query("SELECT count() FROM otel.base", "CSV")).strip() or 0):
            load_otlp_jsonl(s, base_file, "otel.base")
        for n in todo:
            _fill_copies(s, table_name(n), n, base_spans)
            (path / f".built-{n}").touch()
    finally:
        s.close()
    return path


def _fill_copies(s, table: str, n: int, base_spans: int) -> None:
    """`table` := the base hour copied into consecutive hours with fresh ids, inside the engine:
    INSERT ... SELECT from the base joined with `numbers()` (the copy number), a few copies per
    statement so each insert's blocks stay small. A last partial copy keeps whole traces (by
    trace-id hash), so the table holds about n spans."""
    from benchmarks.otel_traces_table import create_table

    s.query(f"DROP TABLE IF EXISTS {table}")
    create_table(s, table)
    copies = math.ceil(n / base_spans)
    # Of the last copy, the share of traces (in 1/10,000ths) that brings the table to about n spans.
    last = round(10_000 * (n - (copies - 1) * base_spans) / base_spans)
    for c0 in range(0, copies, COPIES_PER_INSERT):
        k = min(COPIES_PER_INSERT, copies - c0)
        s.query(f"""
            INSERT INTO {table} SELECT * EXCEPT c REPLACE (
                Timestamp + toIntervalSecond({HOUR_S} * c) AS Timestamp,
                {_new_id('TraceId', 32)} AS TraceId,
                {_new_id('SpanId', 16)} AS SpanId,
                if(ParentSpanId = '', '', {_new_id('ParentSpanId', 16)}) AS ParentSpanId)
            FROM otel.base CROSS JOIN (SELECT number AS c FROM numbers({c0}, {k})) AS copies
            WHERE c < {copies - 1} OR cityHash64(otel.base.TraceId) % 10000 < {last}
            SETTINGS max_threads = 2, max_insert_threads = 2
        """)


def _new_id(column: str, digits: int) -> str:
    """A hex id unique per (id, copy): copy 0 keeps the original."""
    halves = [f"leftPad(lower(hex(cityHash64({column}, c, {i}))), 16, '0')" for i in range(digits // 16)]
    return f"if(c = 0, {column}, {' || '.join(halves)})"


def bare_scan(path: str, table: str) -> dict:
    """The floor: open the database and make one grouped pass over the table, in chDB."""
    from chdb import session

    t0 = time.perf_counter()
    s = session.Session(path)
    try:
        s.query(f"SELECT ServiceName, SpanName, count(), sum(Duration) FROM {table} GROUP BY ServiceName, SpanName",
                "CSV")
        seconds = time.perf_counter() - t0
        n = int(str(s.query(f"SELECT count() FROM {table}", "CSV")).strip())
    finally:
        s.close()
    return {"spans": n, "bytes": 0, "seconds": seconds}


def tool(path: str, table: str, url: str | None = None) -> dict:
    """The tool's whole run from the store to a JSON report (imports done before): chDB over the
    directory at `path`, or a server's HTTP interface at `url` (chDB is then not even imported)."""
    t0 = time.perf_counter()
    loaded = load_clickhouse(url or f"chdb:{path}", Options(table=table))
    report = analyze(Inputs(loaded.table, loaded.sources, loaded.repairs, store=loaded.figures), Config())
    text = render(report, "json")
    seconds = time.perf_counter() - t0
    src = loaded.sources[0].to_dict()
    return {"spans": src["pushdown"]["window_spans"], "bytes": len(text), "seconds": seconds,
            "sample_spans": len(loaded.table), "sample_traces": src["sampling"]["pulled"],
            "queries": src["pushdown"]["queries"], "operations": src["pushdown"]["operations"]}


def bench(sizes: Sequence[int], base_spans: int = DEFAULT_BASE, directory: Path = DIR, http: bool = True,
          emit=print) -> list[dict]:
    """Floor and tool for each table size; then, for the largest, the tool over HTTP against
    tests/clickhouse_http.py serving the same directory in another process (its peak RSS is then
    the sample's and the streamed results', the engine's memory being the server's)."""
    path = build(sizes, base_spans, directory=directory)
    rows = []
    for n in sizes:
        table = table_name(n)
        # chDB imports first in both processes, so their baselines and peaks compare.
        floor = measure_in_subprocess("benchmarks.bench_clickhouse:bare_scan", {"path": str(path), "table": table},
                                      label=f"bare GROUP BY, {n:,} spans")
        run = measure_in_subprocess("benchmarks.bench_clickhouse:tool", {"path": str(path), "table": table},
                                    label=f"analyze --clickhouse chdb:, {n:,} spans")
        rows.append(_emit(emit, _row(n, "chdb", floor, run), run))
    if http:
        n = max(sizes)
        with _standin(path) as url:
            run = measure_in_subprocess("benchmarks.bench_clickhouse:tool",
                                        {"path": str(path), "table": table_name(n), "url": url},
                                        label=f"analyze --clickhouse http://, {n:,} spans")
        rows.append(_emit(emit, _row(n, "http", floor, run), run))
    return rows


def _emit(emit, row: dict, run: Figures) -> dict:
    # Over HTTP the engine's CPU is the server's: this process's CPU is not compared with the floor's.
    cpu = (f"cpu {row['floor_cpu_s']:5.2f} s: x{row['ratio']:.1f} wall, x{row['cpu_ratio']:.1f} cpu"
           if row["engine"] == "chdb" else f"x{row['ratio']:.1f} wall; this process's cpu only, the engine's is the server's")
    emit(f"{run.label:<44} {row['tool_s']:7.2f} s, cpu {row['tool_cpu_s']:6.2f} s (floor {row['floor_s']:5.2f} s, {cpu})  "
         f"peak RSS {row['tool_peak_mib']:5d} MiB (floor {row['floor_peak_mib']} MiB; {row['sample_spans']:,} sampled "
         f"spans in {row['sample_traces']:,} traces, {row['queries']} queries)")
    return row


@contextlib.contextmanager
def _standin(path: Path) -> Iterator[str]:
    """tests/clickhouse_http.py (ClickHouse's HTTP interface in front of chDB) on a free port."""
    from tests.workloads.servers import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.clickhouse_http", "--path", str(path), "--port", str(port)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", "the stand-in did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _row(n: int, engine: str, floor: Figures, run: Figures) -> dict:
    return {"spans": n, "engine": engine, "tool_s": round(run.seconds, 3), "floor_s": round(floor.seconds, 3),
            "tool_cpu_s": round(run.cpu_seconds, 2), "floor_cpu_s": round(floor.cpu_seconds, 2),
            "ratio": round(run.seconds / floor.seconds, 2) if floor.seconds else None,
            "cpu_ratio": round(run.cpu_seconds / floor.cpu_seconds, 2) if floor.cpu_seconds else None,
            "tool_peak_mib": round(run.peak_rss / 2**20), "floor_peak_mib": round(floor.peak_rss / 2**20),
            **run.extra}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_clickhouse", description=__doc__.split("\n")[0])
    ap.add_argument("--spans", default=",".join(map(str, DEFAULT_SIZES)),
                    help="comma list of table sizes (the issue's target: 50000000)")
    ap.add_argument("--base", type=int, default=DEFAULT_BASE, help="spans generated, then copied up to each size")
    ap.add_argument("--dir", type=Path, default=DIR, help="where the chDB database is built and cached")
    ap.add_argument("--no-http", action="store_true", help="skip the run over HTTP")
    ap.add_argument("--rebuild", action="store_true", help="drop the cached tables first")
    args = ap.parse_args(argv)
    if args.rebuild:
        shutil.rmtree(args.dir / f"db-{args.base}-0", ignore_errors=True)
    bench(parse_sizes(args.spans), args.base, args.dir, http=not args.no_http)


def parse_sizes(text: str) -> list[int]:
    return sorted({int(float(s)) for s in text.split(",") if s.strip()})


if __name__ == "__main__":
    sys.exit(main())
