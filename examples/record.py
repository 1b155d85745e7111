"""Record the README's example traces: `python examples/record.py` (from the repository root or anywhere).

Runs the workloads in tests/workloads/ with the real OpenTelemetry SDK and instrumentations
(SQLite on a temp file, HTTP services on 127.0.0.1, a throwaway redis-server) and writes OTLP JSON
lines into examples/, as the Collector's file exporter would. Needs the test extras installed
and the `redis-server` binary (Debian package `redis-server`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `tests.workloads` lives in the repository, not in the package

from tests.workloads import cache, mixed, network, orders  # noqa: E402
from tests.workloads.recording import leaked_instrumentations, record, write_jsonl  # noqa: E402
from tests.workloads.servers import free_port, start_redis, stop_process  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "examples", help="output directory (default: examples/)")
    parser.add_argument("--requests", type=int, default=50, help="requests per workload (default: 50)")
    args = parser.parse_args(argv)
    n: int = args.requests
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="profile-first-examples-") as tmp:
        db = orders.make_orders_db(Path(tmp) / "orders.db")
        port = free_port()
        redis_proc = start_redis(port)
        try:
            jobs = {
                "orders-n-plus-one.otlp.jsonl": (orders.orders_n_plus_one, {"db_path": db, "requests": n}),
                "gateway-sequential.otlp.jsonl": (network.gateway_sequential, {"requests_n": n}),
                "profile-cache-miss.otlp.jsonl": (
                    cache.profile_cache_miss,
                    {"redis_port": port, "db_path": db, "requests": n},
                ),
                "mixed.otlp.jsonl": (mixed.mixed_db_and_network, {"db_path": db, "requests_n": n}),
            }
            for name, (workload, kwargs) in jobs.items():
                spans = record(workload, **kwargs)
                if leaked := leaked_instrumentations():
                    raise RuntimeError(f"{workload.__name__} left {leaked} instrumented")
                path = write_jsonl(spans, out / name)
                print(f"{path}: {len(spans)} spans, {path.stat().st_size / 1024:.0f} KiB")
        finally:
            stop_process(redis_proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
