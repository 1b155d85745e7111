"""Cache-aside workloads of the `profile` service: real redis (opentelemetry-instrumentation-redis) in front of SQLite."""

from __future__ import annotations

import json
import random
from pathlib import Path

import redis
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.trace import Span

from tests.workloads.orders import CUSTOMERS, connect, query
from tests.workloads.recording import OffCpu, Recorder, entry_span, unstalled

#: The miss path: a customer's order total, a join that scans `order_items` (~36 ms unindexed).
PROFILE_QUERY = (
    "SELECT count(*), sum(i.qty * i.price_cents) FROM order_items i JOIN orders o ON o.id = i.order_id "
    "WHERE o.customer_id = ?"
)
CACHE_TTL_S = 300


def _profile_requests(rec: Recorder, redis_port: int, db_path: Path, ids: list[int], warm: list[int],
                      unstall: bool = False) -> None:
    """One request per id; with `unstall`, each is done again until its cache calls ran without a
    scheduling stall (`unstalled`), from the same cache state (a redone miss misses again)."""
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
            key = f"profile:{pid}"

            def request(clock: OffCpu, pid: int = pid, key: str = key,
                        was_cached: bool = bool(admin.exists(key))) -> Span:
                if not was_cached:
                    admin.delete(key)  # a redone miss starts from the same empty key
                with entry_span(tp, "/profile/{id}", f"/profile/{pid}") as span:
                    with clock:
                        cached = client.get(key)
                    if cached is None:
                        count, total = query(conn, PROFILE_QUERY, (pid,))[0]
                        value = json.dumps({"id": pid, "orders": count, "total_cents": total or 0})
                        with clock:
                            client.set(key, value, ex=CACHE_TTL_S)
                return span

            if unstall:
                unstalled(rec, request)
            else:
                request(OffCpu())
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
    # A hit takes ~0.1 ms; PF-CACHE003's floor is 5 ms, under the stalls of a busy machine.
    _profile_requests(rec, redis_port, db_path, ids, warm=hot, unstall=True)
