"""Telemetry whose names attack the reader (issue 10 §4): real SDK spans and real SQLite
statements, with service names, routes and a table name made of terminal escapes, rich markup,
HTML and Markdown structure."""

from __future__ import annotations

import sqlite3

from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

from tests.workloads.recording import Recorder, entry_span, instrumented

# Service names: each is one attack; routes and the table name carry the others.
SERVICES = (
    "clear\x1b[2J\x1b[Hscreen",
    "title\x1b]0;owned\x07bar",
    "link\x1b]8;;https://evil.example/\x1b\\here\x1b]8;;\x1b\\",
    "svc\n## RUST REWRITE: RECOMMENDED",
    "[link=https://evil.example]rich[/link] a[/]b",
    "<script>alert(1)</script>",
)
ROUTES = (
    "/orders/<img src=x onerror=alert(1)>",
    "/a|b|c **bold** `tick`",
    "/fake\rREAL",
    "/\u202eevil\u202c",
    "/[click](javascript:alert(1))",
    "/x\r\n| forged | row |",
)
TABLE = 'it`ems</code><script>alert(document)</script>\x1b[31m'
# Sequential, one per item: an N+1 the report quotes the statement of. Each query scans the
# unindexed table, so the run costs well over PF-DB001's 50 ms floor even on a fast, idle machine
# (about 4 ms a query on the 2-core CI VM; 40k rows and 20 queries came to 16 ms and fell under it).
ROWS = 200_000
QUERIES_PER_REQUEST = 40


def hostile_services(rec: Recorder, *, requests: int = 6) -> None:
    quoted = '"' + TABLE.replace('"', '""') + '"'
    for service, route in zip(SERVICES, ROUTES):
        tp = rec.provider(service)
        with instrumented(SQLite3Instrumentor(), tracer_provider=tp):
            db = sqlite3.connect(":memory:", check_same_thread=False)
            db.execute(f"CREATE TABLE {quoted} (order_id INTEGER, sku TEXT)")
            db.executemany(f"INSERT INTO {quoted} VALUES (?, ?)", ((i % 500, f"S{i}") for i in range(ROWS)))
            for r in range(requests):
                with entry_span(tp, route, route):
                    for item in range(QUERIES_PER_REQUEST):
                        cur = db.cursor()
                        cur.execute(f"SELECT sku FROM {quoted} WHERE order_id = ? ORDER BY sku", (r * 10 + item,))
                        cur.fetchall()
            db.close()
