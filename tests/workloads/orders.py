"""Database workloads of the `orders` service against a real SQLite file (opentelemetry-instrumentation-sqlite3)."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span

from tests.workloads.recording import OffCpu, Recorder, entry_span, internal_span, unstalled

#: Rows in `order_items`. Without an index on `order_id` each lookup scans them all: ~5.5 ms per
#: query on a 2026 laptop core, enough to make an N+1 pattern cost real time.
ORDER_ITEMS_ROWS = 200_000
ORDERS = 5_000
CUSTOMERS = 500
ORDERS_PER_PAGE = 20

# The instrumentation times `Cursor.execute`, and SQLite steps a plain scan lazily, so most of
# its cost would land in `fetchall`, outside the span. ORDER BY on an unindexed column makes
# SQLite finish the scan (to sort) inside `execute`, so the CLIENT span holds the query's cost.
ITEMS_BY_ORDER = "SELECT sku, qty, price_cents FROM order_items WHERE order_id = ? ORDER BY sku"
ORDERS_PAGE = "SELECT id, customer_id, status FROM orders WHERE id > ? ORDER BY id LIMIT ?"
TOP_SKUS_BY_CUSTOMER = (
    "SELECT i.sku, sum(i.qty) FROM order_items i JOIN orders o ON o.id = i.order_id "
    "WHERE o.customer_id = ? GROUP BY i.sku ORDER BY 2 DESC LIMIT 10"
)


def make_orders_db(path: Path, indexed: bool = False, rows: int = ORDER_ITEMS_ROWS, seed: int = 1) -> Path:
    """Create (or reuse) the orders database: `orders` (5k rows) and `order_items` (`rows` rows).

    `indexed=False` leaves `order_items.order_id` and `orders.customer_id` unindexed, which is the
    cause in the N+1 and slow-statement workloads; `indexed=True` adds both indexes (the fix).
    """
    if path.exists():
        return path
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    rng = random.Random(seed)
    conn = sqlite3.connect(tmp)
    try:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, status TEXT, created_at TEXT)")
        conn.execute(
            "CREATE TABLE order_items (id INTEGER PRIMARY KEY, order_id INTEGER, sku TEXT, qty INTEGER, price_cents INTEGER)"
        )
        conn.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?)",
            ((i, rng.randrange(CUSTOMERS), rng.choice(("paid", "shipped", "open")), "2026-11-01") for i in range(ORDERS)),
        )
        conn.executemany(
            "INSERT INTO order_items (order_id, sku, qty, price_cents) VALUES (?, ?, ?, ?)",
            (
                (rng.randrange(ORDERS), f"SKU-{rng.randrange(10_000):05d}", rng.randrange(1, 5), rng.randrange(100, 10_000))
                for _ in range(rows)
            ),
        )
        if indexed:
            conn.execute("CREATE INDEX ix_order_items_order_id ON order_items (order_id)")
            conn.execute("CREATE INDEX ix_orders_customer_id ON orders (customer_id)")
        conn.commit()
    finally:
        conn.close()
    tmp.rename(path)  # atomic, so a half-built file is never reused
    return path


def connect(db_path: Path, provider: TracerProvider) -> sqlite3.Connection:
    """A SQLite connection whose statements become CLIENT spans of `provider`'s service."""
    return SQLite3Instrumentor().instrument_connection(sqlite3.connect(db_path), tracer_provider=provider)


def query(conn: sqlite3.Connection, sql: str, params: Sequence[object] = ()) -> list[tuple]:
    """Run one statement through a cursor and fetch all rows.

    Always via a cursor: the instrumentation traces `Cursor.execute`, while the C shortcut
    `Connection.execute` bypasses it and would record nothing.
    """
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return cur.fetchall()
    finally:
        cur.close()


def load_orders_one_by_one(conn: sqlite3.Connection, provider: TracerProvider, after_id: int) -> int:
    """The N+1 pattern: one query for a page of orders, then one item query per order.

    Every 5th order also runs `SELECT 1` (a pool-checkout ping) and every 7th a tiny INTERNAL
    span, so the repeated statements are not back to back, as in real code.
    Returns the number of item rows read.
    """
    orders = query(conn, ORDERS_PAGE, (after_id, ORDERS_PER_PAGE))
    n = 0
    for i, (order_id, _customer, _status) in enumerate(orders):
        if i % 5 == 4:
            query(conn, "SELECT 1")
        if i % 7 == 6:
            with internal_span(provider, "format_order"):
                str(order_id).zfill(8)
        n += len(query(conn, ITEMS_BY_ORDER, (order_id,)))
    return n


def orders_n_plus_one(rec: Recorder, *, db_path: Path, requests: int = 12, seed: int = 7) -> None:
    """`orders` GET /orders: 1 query for 20 orders, then 20 `SELECT ... WHERE order_id = ?` (~5.5 ms each).

    Cause a human would name: N+1 queries (database), made expensive by a missing index.
    Use the unindexed database from `make_orders_db(path)`.
    """
    tp = rec.provider("orders")
    rng = random.Random(seed)
    conn = connect(db_path, tp)
    try:
        for _ in range(requests):
            after = rng.randrange(ORDERS - ORDERS_PER_PAGE)
            with entry_span(tp, "/orders", f"/orders?after={after}"):
                load_orders_one_by_one(conn, tp, after)
    finally:
        conn.close()


def orders_batched(rec: Recorder, *, db_path: Path, requests: int = 12, chunk: int = 5, seed: int = 7) -> None:
    """Near-miss of N+1: `orders` GET /orders loads the same 20 orders' items with `IN (...)` in chunks.

    `chunk=5` gives 4 identical statements per request (below any sane N+1 threshold);
    `chunk=20` gives one batched query. Cause a human would name: none worth an N+1 finding; the
    remaining cost is the missing index (each batched query still scans the table).
    """
    tp = rec.provider("orders")
    rng = random.Random(seed)
    conn = connect(db_path, tp)
    try:
        for _ in range(requests):
            after = rng.randrange(ORDERS - ORDERS_PER_PAGE)
            with entry_span(tp, "/orders", f"/orders?after={after}"):
                ids = [row[0] for row in query(conn, ORDERS_PAGE, (after, ORDERS_PER_PAGE))]
                for i in range(0, len(ids), chunk):
                    part = ids[i : i + chunk]
                    marks = ",".join("?" * len(part))
                    query(conn, f"SELECT order_id, sku, qty, price_cents FROM order_items WHERE order_id IN ({marks}) ORDER BY order_id, sku", part)
    finally:
        conn.close()


def slow_statement(rec: Recorder, *, db_path: Path, requests: int = 12, seed: int = 11, unstall: bool = False) -> None:
    """`orders` GET /customers/{id}/top-skus: a PK lookup, then one join over `order_items`.

    On the unindexed database the join scans 200k rows (~36 ms) and is nearly the whole request.
    Cause a human would name: one slow statement (database, missing index). On the database from
    `make_orders_db(path, indexed=True)` the same request is the near-miss (~0.5 ms query).
    With `unstall`, a request is done again until it ran without a scheduling stall (`unstalled`).
    """
    tp = rec.provider("orders")
    rng = random.Random(seed)
    conn = connect(db_path, tp)
    try:
        for _ in range(requests):
            customer = rng.randrange(CUSTOMERS)

            def request(clock: OffCpu, customer: int = customer) -> Span:
                with clock, entry_span(tp, "/customers/{id}/top-skus", f"/customers/{customer}/top-skus") as span:
                    query(conn, "SELECT id, status FROM orders WHERE id = ?", (customer,))
                    query(conn, TOP_SKUS_BY_CUSTOMER, (customer,))
                return span

            if unstall:
                unstalled(rec, request)
            else:
                request(OffCpu())
    finally:
        conn.close()


def slow_statement_indexed(rec: Recorder, *, db_path: Path, requests: int = 12, seed: int = 11) -> None:
    """Near-miss of `slow_statement`: the same requests against the indexed database (pass its path).

    Cause a human would name: none; the request is fast and no statement stands out.
    """
    # The join takes ~0.5 ms; PF-DB002's floor is 10 ms, under the stalls of a busy machine.
    slow_statement(rec, db_path=db_path, requests=requests, seed=seed, unstall=True)
