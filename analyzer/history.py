"""The run history: every `report` run's reports in one SQLite file (standard library only).

The file is in WAL mode, so readers never block the writer, and each run's reports are
recorded in one `BEGIN IMMEDIATE` transaction: concurrent runs wait for each other (up to
`BUSY_SECONDS`), and a run killed at any point leaves the file as it was before the run or
with the whole run in it, never part of one. The schema version is SQLite's `user_version`;
opening a file applies the migrations it lacks, in one transaction, and refuses a file made
by a newer version.

A run's scope is its team, the services it asked for (`*` for all) and the environments it kept
(`*` for no filter; unknown for runs recorded before schema 2): a report is compared with the
latest earlier run of the same scope.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

BUSY_SECONDS = 60.0
MIGRATIONS = (
    # 1: one row per report (a run with teams records one per team)
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run TEXT NOT NULL,              -- one id shared by the reports of one `report` run
        recorded_at TEXT NOT NULL,      -- RFC 3339, UTC
        team TEXT NOT NULL,
        scope TEXT NOT NULL,            -- JSON: the services asked for, sorted, or "*"
        window_start TEXT NOT NULL,
        window_end TEXT NOT NULL,
        complete INTEGER NOT NULL,
        report TEXT NOT NULL            -- the report, JSON
    );
    CREATE INDEX runs_by_scope ON runs (team, scope, window_end);
    """,
    # 2: the deployment.environment values a run kept, part of its scope, so that a production run
    # is compared with production runs only. NULL for runs recorded before: they did not say, and
    # match a run of any environments.
    """
    ALTER TABLE runs ADD COLUMN environments TEXT;
    DROP INDEX runs_by_scope;
    CREATE INDEX runs_by_scope ON runs (team, scope, environments, window_end);
    """,
)


class HistoryError(Exception):
    """The history file cannot be used. One line naming the file."""


@dataclass(frozen=True)
class Entry:
    id: int
    run: str
    recorded_at: str
    team: str
    scope: str
    window_start: str
    window_end: str
    complete: bool
    environments: str | None = None  # JSON like scope; None: recorded before schema 2

    def to_dict(self) -> dict:
        return {"id": self.id, "run": self.run, "recorded_at": self.recorded_at, "team": self.team,
                "scope": json.loads(self.scope), "window_start": self.window_start, "window_end": self.window_end,
                "complete": self.complete,
                "environments": None if self.environments is None else json.loads(self.environments)}


_COLUMNS = "id, run, recorded_at, team, scope, window_start, window_end, complete, environments"


def _entry(row: tuple) -> Entry:
    return Entry(*row[:7], bool(row[7]), row[8])


def scope_key(services: list[str] | tuple[str, ...] | None) -> str:
    return json.dumps(sorted(set(services)) if services else "*")


def environments_of(report: dict) -> tuple[str, ...]:
    """The environments a report was filtered to (its `environment_filter`); () when not filtered."""
    return tuple((report.get("environment_filter") or {}).get("environments") or ())


class History:
    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise HistoryError(f"{self.path}: no history file (a `report` run creates it)")
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise HistoryError(f"{self.path}: not a usable history file: {e}") from e
        except OSError as e:
            raise HistoryError(f"{self.path}: cannot open the history file: {e.strerror or e}") from e

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise HistoryError(f"{self.path}: history schema version {version} is newer than this "
                                   f"profile-first knows ({len(MIGRATIONS)}); upgrade profile-first")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    def record(self, run: str, reports: dict[str, tuple[dict, list[str] | None]]) -> list[int]:
        """Store every report of one run (team -> (report, services asked for)) in one transaction."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        ids = []
        with self._write() as db:
            for team, (report, services) in reports.items():
                cur = db.execute(
                    "INSERT INTO runs (run, recorded_at, team, scope, window_start, window_end, complete, report, "
                    "environments) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run, now, team, scope_key(services), report["window"]["start"], report["window"]["end"],
                     int((report.get("completeness") or {}).get("complete", True)), json.dumps(report),
                     scope_key(environments_of(report))))
                ids.append(int(cur.lastrowid))
        return ids

    def previous(self, team: str, services: list[str] | None, before_end: str,
                 environments: tuple[str, ...] = ()) -> tuple[Entry, dict] | None:
        """The latest report of the same scope whose window ended before `before_end`."""
        row = self.db.execute(
            f"SELECT {_COLUMNS}, report FROM runs WHERE team = ? AND scope = ? AND {_SAME_ENVIRONMENTS} "
            "AND window_end < ? ORDER BY window_end DESC, id DESC LIMIT 1",
            (team, scope_key(services), scope_key(environments), before_end)).fetchone()
        return None if row is None else (_entry(row), json.loads(row[9]))

    def trend(self, team: str, services: list[str] | None, limit: int = 12,
              environments: tuple[str, ...] = ()) -> list[tuple[Entry, dict]]:
        """The last `limit` reports of a scope, oldest first."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS}, report FROM runs WHERE team = ? AND scope = ? AND {_SAME_ENVIRONMENTS} "
            "ORDER BY window_end DESC, id DESC LIMIT ?",
            (team, scope_key(services), scope_key(environments), limit)).fetchall()
        return [(_entry(r), json.loads(r[9])) for r in reversed(rows)]

    def entries(self) -> list[Entry]:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM runs ORDER BY id").fetchall()
        return [_entry(r) for r in rows]

    def get(self, entry_id: int) -> tuple[Entry, dict]:
        row = self.db.execute(f"SELECT {_COLUMNS}, report FROM runs WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise HistoryError(f"{self.path}: no run {entry_id}; `profile-first history list` shows them")
        return _entry(row), json.loads(row[9])


_SAME_ENVIRONMENTS = "(environments = ? OR environments IS NULL)"  # NULL: a run from before schema 2
