"""Statement shapes: `normalize_sql`, and the shape keys that let the protobuf reader normalize
each shape once instead of once per statement."""

from __future__ import annotations

import random

import numpy as np

from analyzer.model.statement import normalize_sql, shape_keys
from collectors.protowire import padded


def _keys(statements: list[str]) -> list[int]:
    raw = [s.encode() for s in statements]
    buf, starts = padded(raw)
    return shape_keys(buf, starts, np.array([len(r) for r in raw], dtype=np.int64)).tolist()


def test_an_n_plus_one_loop_shares_one_key():
    loop = [f"SELECT id, total FROM orders WHERE customer_id = {i} AND status = 'open{i % 3}'" for i in range(1, 500)]
    assert len(set(_keys(loop))) == 3  # ids of 1, 2 and 3 digits; the quoted literal's digit is ignored
    assert {normalize_sql(s) for s in loop} == {"SELECT id, total FROM orders WHERE customer_id = ? AND status = ?"}


def test_numbers_that_are_not_literals_keep_statements_apart():
    # Each pair normalizes to two different shapes, so their keys must differ.
    pairs = [("SELECT * FROM t1", "SELECT * FROM t2"), ("SELECT a.1 FROM x", "SELECT a.2 FROM x"),
             ("SELECT * FROM café1", "SELECT * FROM café2"), ("SELECT 1abc", "SELECT 2abc")]
    for a, b in pairs:
        assert normalize_sql(a) != normalize_sql(b)
        ka, kb = _keys([a, b])
        assert ka != kb, (a, b)


def test_statements_with_equal_keys_normalize_equally():
    # Random statements from tokens where digits appear in every position the literal pattern
    # treats differently: identifiers, quoted strings, placeholders, hex, floats, signs, casts.
    tokens = ["SELECT", "*", "FROM", "t1", "WHERE", "id", "=", "42", "7", "-", "-5", "x-1", "1.5", "2.5e3", "1e5",
              "'a1'", "'b22'", "$1", ":n1", "%s", "%(p1)s", "0x1F", "é1", "(", ")", ",", "IN", "(1, 2)", "a.1",
              "x$1", "::int", "::12", "99abc", "n_3", "\t", "café", "3", "v.5", "@7", "#8", "\x00", "0"]
    rng = random.Random(7)
    statements = sorted({rng.choice([" ", "", "  "]).join(rng.choice(tokens) for _ in range(rng.randint(1, 7)))
                         for _ in range(30_000)})
    groups: dict[int, set[str]] = {}
    for s, k in zip(statements, _keys(statements)):
        groups.setdefault(k, set()).add(normalize_sql(s))
    assert len(groups) < len(statements)  # some statements were grouped
    assert all(len(shapes) == 1 for shapes in groups.values())
