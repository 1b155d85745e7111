"""Shared fixtures: a real redis-server, SQLite databases, and workloads recorded once per session.

Each `*_jsonl` fixture runs its workload (tests/workloads/) once per session with the real
OpenTelemetry SDK and instrumentations and returns the path of an OTLP JSON lines file, written
exactly like the Collector's file exporter.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from tests.workloads import cache, cpu, mixed, more, network, orders
from tests.workloads.recording import (
    leaked_instrumentations,
    record,
    write_jsonl,
    write_proto_framed,
    write_proto_single,
)
from tests.workloads.servers import free_port, redis_server_binary, start_redis, stop_process


def _record(workload: Callable[..., None], **kwargs: Any) -> list[ReadableSpan]:
    spans = record(workload, **kwargs)
    leaked = leaked_instrumentations()
    assert not leaked, f"{workload.__name__} left {leaked} instrumented; later workloads would be polluted"
    return spans


@pytest.fixture(scope="session")
def redis_server() -> Iterator[int]:
    """Port of a throwaway redis-server on 127.0.0.1 (skipped when redis-server is missing, unless CI=true)."""
    if redis_server_binary() is None:
        msg = "redis-server not installed (Debian package `redis-server`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{msg}; CI must run the redis tests")
        pytest.skip(msg)
    port = free_port()
    proc = start_redis(port)
    try:
        yield port
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def recordings_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory for the session's recorded files."""
    return tmp_path_factory.mktemp("recordings")


@pytest.fixture(scope="session")
def orders_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SQLite orders database without indexes on the filtered columns (200k order_items)."""
    return orders.make_orders_db(tmp_path_factory.mktemp("db") / "orders.db")


@pytest.fixture(scope="session")
def orders_db_indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same data with indexes on order_items.order_id and orders.customer_id."""
    return orders.make_orders_db(tmp_path_factory.mktemp("db") / "orders-indexed.db", indexed=True)


# --- orders (SQLite) -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def orders_n_plus_one_spans(orders_db: Path) -> list[ReadableSpan]:
    """Spans of `orders_n_plus_one` (12 requests, 20 repeated item queries each)."""
    return _record(orders.orders_n_plus_one, db_path=orders_db)


@pytest.fixture(scope="session")
def orders_n_plus_one_jsonl(orders_n_plus_one_spans: list[ReadableSpan], recordings_dir: Path) -> Path:
    """N+1 queries (database): OTLP JSON lines."""
    return write_jsonl(orders_n_plus_one_spans, recordings_dir / "orders-n-plus-one.otlp.jsonl")


@pytest.fixture(scope="session")
def orders_n_plus_one_proto_framed(orders_n_plus_one_spans: list[ReadableSpan], recordings_dir: Path) -> Path:
    """The N+1 recording in the file exporter's `proto` format (4-byte big-endian length per message)."""
    return write_proto_framed(orders_n_plus_one_spans, recordings_dir / "orders-n-plus-one.otlp.binpb")


@pytest.fixture(scope="session")
def orders_n_plus_one_proto_single(orders_n_plus_one_spans: list[ReadableSpan], recordings_dir: Path) -> Path:
    """The N+1 recording as one serialized ExportTraceServiceRequest."""
    return write_proto_single(orders_n_plus_one_spans, recordings_dir / "orders-n-plus-one.request.pb")


@pytest.fixture(scope="session")
def orders_batched_jsonl(orders_db: Path, recordings_dir: Path) -> Path:
    """Near-miss of N+1: the same data in 4 `IN (...)` queries per request."""
    return write_jsonl(_record(orders.orders_batched, db_path=orders_db), recordings_dir / "orders-batched.otlp.jsonl")


@pytest.fixture(scope="session")
def slow_statement_jsonl(orders_db: Path, recordings_dir: Path) -> Path:
    """One slow statement (missing index, ~36 ms) dominating each request."""
    return write_jsonl(_record(orders.slow_statement, db_path=orders_db), recordings_dir / "slow-statement.otlp.jsonl")


@pytest.fixture(scope="session")
def slow_statement_indexed_jsonl(orders_db_indexed: Path, recordings_dir: Path) -> Path:
    """Near-miss of slow statement: the same requests with the index (~0.5 ms)."""
    spans = _record(orders.slow_statement_indexed, db_path=orders_db_indexed)
    return write_jsonl(spans, recordings_dir / "slow-statement-indexed.otlp.jsonl")


# --- network (HTTP on loopback) --------------------------------------------------------------


@pytest.fixture(scope="session")
def gateway_sequential_jsonl(recordings_dir: Path) -> Path:
    """Sequential call chain: gateway -> inventory, pricing, shipping one after another."""
    return write_jsonl(_record(network.gateway_sequential), recordings_dir / "gateway-sequential.otlp.jsonl")


@pytest.fixture(scope="session")
def gateway_parallel_jsonl(recordings_dir: Path) -> Path:
    """Near-miss: the same three calls in parallel."""
    return write_jsonl(_record(network.gateway_parallel), recordings_dir / "gateway-parallel.otlp.jsonl")


@pytest.fixture(scope="session")
def chatty_calls_jsonl(recordings_dir: Path) -> Path:
    """Chatty calls: 30 small urllib calls to the same downstream per request."""
    return write_jsonl(_record(network.chatty_calls), recordings_dir / "chatty-calls.otlp.jsonl")


# --- caching (redis + SQLite) ----------------------------------------------------------------


@pytest.fixture(scope="session")
def profile_cache_miss_jsonl(redis_server: int, orders_db: Path, recordings_dir: Path) -> Path:
    """Cache-aside with ~90% misses: nearly every request pays the database."""
    spans = _record(cache.profile_cache_miss, redis_port=redis_server, db_path=orders_db)
    return write_jsonl(spans, recordings_dir / "profile-cache-miss.otlp.jsonl")


@pytest.fixture(scope="session")
def profile_cache_warm_jsonl(redis_server: int, orders_db: Path, recordings_dir: Path) -> Path:
    """Near-miss: the same endpoint with ~95% hits."""
    spans = _record(cache.profile_cache_warm, redis_port=redis_server, db_path=orders_db)
    return write_jsonl(spans, recordings_dir / "profile-cache-warm.otlp.jsonl")


# --- mixed and CPU ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mixed_jsonl(orders_db: Path, recordings_dir: Path) -> Path:
    """N+1 database time (~110 ms) plus a slower downstream call (~25 ms); database dominates."""
    spans = _record(mixed.mixed_db_and_network, db_path=orders_db)
    return write_jsonl(spans, recordings_dir / "mixed.otlp.jsonl")


@pytest.fixture(scope="session")
def cpu_render_jsonl(recordings_dir: Path) -> Path:
    """~50 ms of pure-Python work per request, all self time (no child spans)."""
    return write_jsonl(_record(cpu.cpu_render), recordings_dir / "cpu-render.otlp.jsonl")


# --- recorded once per session, used by several test modules ------------------------------------


@pytest.fixture(scope="session")
def slow_downstream_jsonl(recordings_dir: Path) -> Path:
    """A downstream whose own server time (120-160 ms) is nearly all of the caller's request."""
    return more.recorded("slow-downstream", recordings_dir, more.downstream_call, latency_ms=(120.0, 160.0))


@pytest.fixture(scope="session")
def wire_delay_jsonl(recordings_dir: Path) -> Path:
    """A fast downstream (1-3 ms) behind a relay adding 20 ms per direction: the wire gap dominates."""
    return more.recorded("wire-delay", recordings_dir, more.downstream_call, latency_ms=(1.0, 3.0), wire_delay_ms=20.0)


@pytest.fixture(scope="session")
def dashboard_sequential_jsonl(orders_db: Path, recordings_dir: Path) -> Path:
    """Three independent aggregate scans run one after another."""
    return more.recorded("dashboard-sequential", recordings_dir, more.dashboard_sequential, db_path=orders_db)


@pytest.fixture(scope="session")
def big_values_jsonl(redis_server: int, recordings_dir: Path) -> Path:
    """Redis reads of 8 MB values: the cache itself is slow."""
    return more.recorded("cache-big-values", recordings_dir, more.catalog_big_values, redis_port=redis_server)


@pytest.fixture(scope="session")
def bestsellers_jsonl(orders_db: Path, recordings_dir: Path) -> Path:
    """The same parameter-free bestseller query in every request."""
    return more.recorded("bestsellers", recordings_dir, more.bestsellers_per_request, db_path=orders_db)



# --- Prometheus ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prom_env():
    """A real Prometheus holding CPU series for `shop-env` in production, in staging and unlabelled, and
    nothing for the `orders` service of the recorded traces: the environment filter's Prometheus side."""
    from tests.prom import OpenMetrics, Window, prometheus_with, require_binaries

    require_binaries()
    window = Window.recent(hours=1.0, lead=600.0)
    om = OpenMetrics(window)
    om.counter("process_cpu_seconds_total", {"job": "shop-env", "deployment_environment": "production"}, 0.25)
    om.counter("process_cpu_seconds_total", {"job": "shop-env", "deployment_environment": "staging"}, 4.0)
    om.counter("process_cpu_seconds_total", {"job": "shop-env", "instance": "unlabelled"}, 0.5)
    with prometheus_with(om.text()) as server:
        yield server, window
