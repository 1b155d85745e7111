"""A workload with two causes in one endpoint, where one clearly dominates."""

from __future__ import annotations

import random
from contextlib import ExitStack
from pathlib import Path

import requests
from opentelemetry.instrumentation.requests import RequestsInstrumentor

from tests.workloads.orders import ORDERS, ORDERS_PER_PAGE, connect, load_orders_one_by_one
from tests.workloads.recording import Recorder, entry_span, instrumented
from tests.workloads.servers import DownstreamService


def mixed_db_and_network(rec: Recorder, *, db_path: Path, requests_n: int = 12, seed: int = 17) -> None:
    """`orders` GET /orders/report: the N+1 item loading (~110 ms) plus one `pricing` call (~20-30 ms).

    Cause a human would name: database first (N+1 queries, ~4x the network time), then the slow
    downstream call. Use the unindexed database.
    """
    tp = rec.provider("orders")
    rng = random.Random(seed)
    with ExitStack() as stack:
        pricing = stack.enter_context(DownstreamService(rec.provider("pricing"), "/quote", (20.0, 30.0), seed=seed))
        stack.enter_context(instrumented(RequestsInstrumentor(), tracer_provider=tp))
        session = stack.enter_context(requests.Session())
        conn = connect(db_path, tp)
        stack.callback(conn.close)
        for _ in range(requests_n):
            after = rng.randrange(ORDERS - ORDERS_PER_PAGE)
            with entry_span(tp, "/orders/report", f"/orders/report?after={after}"):
                load_orders_one_by_one(conn, tp, after)
                session.get(f"{pricing.url}/quote?after={after}", timeout=5).raise_for_status()
