"""Cache-aside workloads of the `profile` service: real redis (opentelemetry-instrumentation-redis) in front of SQLite."""

from __future__ import annotations

import json
import random
from pathlib import Path

import redis
from opentelemetry.instrumentation.redis import RedisInstrumentor

from tests.workloads.orders import CUSTOMERS, connect, query
from tests.workloads.recording import Recorder, entry_span

#: The miss path: a customer's order total, a join that scans `order_items` (~36 ms unindexed).
PROFILE_QUERY = (
    "SELECT count(*), sum(i.qty * i.price_cents) FROM order_items i JOIN orders o ON o.id = i.order_id "
    "WHERE o.customer_id = ?"
)
CACHE_TTL_S = 300


def _profile_requests(rec: Recorder, redis_port: int, db_path: Path, ids: list[int], warm: list[int]) -> None:
    tp = rec.provider("profile")
    # Set-up traffic (flush, warm-up) goes through a separate, uninstrumented client: it happened
    # before the capture window in the story these traces tell.
    admin = redis.Redis(host="127.0.0.1", port=redis_port)
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    conn = connect(db_path, tp)
    try:
        admin.flushdb()
        for pid in warm:
            admin.set(f"profile:{pid}", json.dumps({"id": pid, "orders": 0, "total_cents": 0}), ex=CACHE_TTL_S)
        RedisInstrumentor.instrument_client(client, tracer_provider=tp)
        for pid in ids:
            with entry_span(tp, "/profile/{id}", f"/profile/{pid}"):
                cached = client.get(f"profile:{pid}")
                if cached is None:
                    count, total = query(conn, PROFILE_QUERY, (pid,))[0]
                    value = json.dumps({"id": pid, "orders": count, "total_cents": total or 0})
                    client.set(f"profile:{pid}", value, ex=CACHE_TTL_S)
    finally:
        RedisInstrumentor.uninstrument_client(client)
        client.close()
        admin.close()
        conn.close()


def profile_cache_miss(rec: Recorder, *, redis_port: int, db_path: Path, requests: int = 30, seed: int = 13) -> None:
    """`profile` GET /profile/{id}: redis GET, on a miss a ~36 ms SQLite query, then redis SET (TTL 300 s).

    Ids rarely repeat (10% of requests reuse an earlier id), so about 90% of GETs miss and nearly
    every request pays the database. Cause a human would name: a cache that never hits (caching);
    the cache only adds a round trip.
    """
    rng = random.Random(seed)
    fresh = rng.sample(range(CUSTOMERS), k=min(requests, CUSTOMERS))
    ids: list[int] = []
    for i in range(requests):
        ids.append(rng.choice(ids) if ids and rng.random() < 0.10 else fresh[i % len(fresh)])
    _profile_requests(rec, redis_port, db_path, ids, warm=[])


def profile_cache_warm(rec: Recorder, *, redis_port: int, db_path: Path, requests: int = 30, seed: int = 13) -> None:
    """Near-miss of `profile_cache_miss`: the same endpoint with 10 hot, pre-warmed ids taking 95% of requests.

    Cause a human would name: none; the cache works and the database is rarely touched.
    """
    rng = random.Random(seed)
    hot = rng.sample(range(CUSTOMERS), k=10)
    cold = [c for c in range(CUSTOMERS) if c not in hot]
    rng.shuffle(cold)
    ids = [rng.choice(hot) if rng.random() < 0.95 else cold.pop() for _ in range(requests)]
    _profile_requests(rec, redis_port, db_path, ids, warm=hot)
