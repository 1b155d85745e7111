"""Pieces every command shares: the user-error contract, time and duration parsing."""

from __future__ import annotations

import difflib
import re
from datetime import datetime, timezone

import click

EXIT_USAGE = 2
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class UserError(click.ClickException):
    """An error the user can fix; printed as one line, exit code 2."""

    exit_code = EXIT_USAGE

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.echo(f"profile-first: error: {self.message}", err=True)


def parse_time(value: str) -> float:
    """RFC 3339 (`2026-11-20T00:00:00Z`) or unix seconds -> unix seconds."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise UserError(f"time {value!r} is neither RFC 3339 (2026-11-20T00:00:00Z) nor unix seconds") from e
    if dt.tzinfo is None:
        raise UserError(f"time {value!r} has no time zone; add Z or an offset such as +02:00")
    return dt.timestamp()


def parse_duration(value: str) -> float:
    """`30s`, `10m`, `2h`, `7d`, `1w` -> seconds."""
    m = _DURATION.match(value.strip())
    if not m:
        raise UserError(f"duration {value!r} is not like 30s, 10m, 2h, 7d or 1w")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


_SIZE = re.compile(r"^(\d+)\s*(|b|kb|kib|mb|mib|gb|gib)$")
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "kib": 1 << 10, "mb": 10**6, "mib": 1 << 20, "gb": 10**9, "gib": 1 << 30}


def parse_size(value: str, option: str) -> int:
    """`64MiB`, `4MB`, `1048576` -> bytes (at least 1 KiB)."""
    m = _SIZE.match(value.strip().lower())
    size = int(m.group(1)) * _SIZE_UNITS[m.group(2)] if m else 0
    if size < 1024:
        raise UserError(f"{option} {value!r} is not a size of at least 1KiB like 64MiB, 4MB or 1048576")
    return size


def resolve_window(start: str | None, end: str | None, window: str | None) -> tuple[float | None, float | None]:
    if window and start:
        raise UserError("give either --start or --window (with an optional --end), not both")
    s = parse_time(start) if start else None
    e = parse_time(end) if end else None
    if window:
        e = e if e is not None else datetime.now(timezone.utc).timestamp()
        s = e - parse_duration(window)
    if s is not None and e is not None and s >= e:
        raise UserError("the window is empty: --start must be before --end")
    return s, e


def closest(name: str, known: list[str]) -> str | None:
    """The known name the user probably meant: the same but for case, else a near spelling."""
    same_case = [k for k in known if k.lower() == name.lower()]
    if same_case:
        return same_case[0]
    near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return near[0] if near else None
