"""The demo's SQLite database: orders and their items, deliberately without the indexes they need."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

#: Without an index on `order_items.order_id` every item lookup scans all these rows: a few ms
#: per query, so an N+1 loop costs real time.
ORDER_ITEMS_ROWS = 200_000
ORDERS = 5_000
CUSTOMERS = 500
ORDERS_PER_PAGE = 20

ORDERS_PAGE = "SELECT id, customer_id, status FROM orders WHERE id > ? ORDER BY id LIMIT ?"
# The sqlite3 instrumentation times `Cursor.execute`, and SQLite steps a plain scan lazily
# inside `fetchall`, outside the span. ORDER BY on an unindexed column makes SQLite finish the
# scan (to sort) inside `execute`, so the CLIENT span holds the query's cost.
ITEMS_BY_ORDER = "SELECT sku, qty, price_cents FROM order_items WHERE order_id = ? ORDER BY sku"
CUSTOMER_TOTALS = (
    "SELECT count(*), sum(i.qty * i.price_cents) FROM order_items i JOIN orders o ON o.id = i.order_id "
    "WHERE o.customer_id = ?"
)


def make_db(path: Path, seed: int = 1) -> Path:
    """Create the database at `path` (a fresh temp dir): ~1 s, ~6 MB."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, status TEXT, created_at TEXT)")
        conn.execute("CREATE TABLE order_items (id INTEGER PRIMARY KEY, order_id INTEGER, sku TEXT, "
                     "qty INTEGER, price_cents INTEGER)")
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", (
            (i, rng.randrange(CUSTOMERS), rng.choice(("paid", "shipped", "open")), "2026-11-01")
            for i in range(ORDERS)))
        conn.executemany("INSERT INTO order_items (order_id, sku, qty, price_cents) VALUES (?, ?, ?, ?)", (
            (rng.randrange(ORDERS), f"SKU-{rng.randrange(10_000):05d}", rng.randrange(1, 5), rng.randrange(100, 10_000))
            for _ in range(ORDER_ITEMS_ROWS)))
        conn.commit()
    finally:
        conn.close()
    return path
