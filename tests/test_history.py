"""Run history: week-over-week changes between real runs, the history commands, migrations, and a
history file that concurrent and killed runs never corrupt."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from analyzer.compare import week_over_week
from analyzer.history import MIGRATIONS, History
from analyzer.report_schema import validate_report

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=180, env=ENV)


def only_folder(tmp_path: Path) -> Path:
    (folder,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir()]
    return folder


def test_a_second_run_over_worse_data_reports_the_regression_by_operation_and_percentile(
        tmp_path, orders_batched_jsonl, orders_n_plus_one_jsonl):
    # Week 1: orders loads its items in 4 IN (...) queries. Week 2: someone shipped the N+1 loop.
    first = cli("report", "--traces", str(orders_batched_jsonl), "--end", "now", "--window", "1d", "--format", "json",
                cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = json.loads((only_folder(tmp_path) / "report.json").read_text())
    assert "week_over_week" not in before  # nothing to compare with yet
    second = cli("report", "--traces", str(orders_n_plus_one_jsonl), "--end", "now", "--window", "1d",
                 "--format", "json", "--format", "md", "--format", "text", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    folder = only_folder(tmp_path)
    report = json.loads((folder / "report.json").read_text())
    validate_report(report)
    wow = report["week_over_week"]
    assert wow["previous"]["run"] == 1 and wow["regression_pct"] == 10
    p99 = [r for r in wow["regressions"] if r["metric"] == "p99_ms"]
    assert [(r["service"], r["operation"]) for r in p99] == [("orders", "GET /orders")]
    assert p99[0]["after"] > p99[0]["before"] * 1.1 and p99[0]["change_pct"] > 10
    md = (folder / "report.md").read_text()
    section = md[md.index("## Since the previous run"):]
    assert "orders GET /orders: slower, p99 " in section.replace("\\", "")
    assert "orders GET /orders: slower, p99 " in (folder / "report.txt").read_text()
    # The gate: a regression trips --fail-on regression.
    gated = cli("report", "--traces", str(orders_n_plus_one_jsonl), "--end", "now", "--window", "1d",
                "--format", "json", "--history", str(tmp_path / "gate.sqlite"), "--fail-on", "regression", cwd=tmp_path)
    assert gated.returncode == 0  # a fresh history: nothing to regress from


def test_history_commands_list_show_and_diff(tmp_path, orders_batched_jsonl, orders_n_plus_one_jsonl):
    for traces in (orders_batched_jsonl, orders_n_plus_one_jsonl):
        assert cli("report", "--traces", str(traces), "--end", "now", "--window", "1d", "--format", "json",
                   cwd=tmp_path).returncode == 0
    listed = cli("history", "list", "--format", "json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert [r["id"] for r in runs] == [1, 2] and runs[0]["verdicts"] == {"orders": "not_recommended"}
    assert runs[0]["scope"] == "*" and runs[0]["complete"] is True
    shown = cli("history", "show", "2", "--format", "json", cwd=tmp_path)
    assert json.loads(shown.stdout) == json.loads((only_folder(tmp_path) / "report.json").read_text())
    diff = cli("history", "diff", "1", "2", "--format", "json", cwd=tmp_path)
    changes = json.loads(diff.stdout)
    assert changes["from"] == 1 and changes["to"] == 2
    assert ("orders", "GET /orders", "p99_ms") in {(r["service"], r["operation"], r["metric"])
                                                   for r in changes["regressions"]}
    text = cli("history", "diff", "1", "2", cwd=tmp_path).stdout
    assert "orders GET /orders: slower, p99 " in text
    missing = cli("history", "show", "9", cwd=tmp_path)
    assert missing.returncode == 2 and "no run 9" in missing.stderr
    nofile = cli("history", "list", "--history", str(tmp_path / "none.sqlite"), cwd=tmp_path)
    assert nofile.returncode == 2 and "no history file" in nofile.stderr


def _report(service: str, op: str, p99: float, total: float, verdict: str = "not_recommended",
            cause: str = "database") -> dict:
    return {"window": {"start": "a", "end": "b"}, "generated_at": "g",
            "services": [{"service": service, "verdict": {"rust_rewrite": verdict, "cause": cause},
                          "hotspots": [{"operation": op, "category": cause, "p99_ms": p99, "total_ms": total}]}]}


@pytest.mark.parametrize("p99_after,expected", [(111.0, "regressions"), (109.0, None), (89.0, "improvements")])
def test_the_regression_threshold_is_a_percentage_of_the_previous_figure(p99_after, expected):
    wow = week_over_week(_report("s", "GET /x", p99_after, 1000), _report("s", "GET /x", 100.0, 1000), 7, 10.0)
    got = {k: [c["metric"] for c in wow[k]] for k in ("regressions", "improvements")}
    assert got == {k: (["p99_ms"] if k == expected else []) for k in got}


def test_verdict_changes_and_new_and_resolved_hot_spots():
    before = _report("feed", "GET /feed", 100, 1000, "not_recommended", "database")
    after = _report("feed", "GET /timeline", 100, 1000, "recommended", "gc_pause")
    wow = week_over_week(after, before, 1, 10.0)
    assert wow["verdict_changes"] == [{"service": "feed", "before": "not_recommended", "after": "recommended",
                                       "cause_before": "database", "cause_after": "gc_pause"}]
    assert [h["operation"] for h in wow["new_hotspots"]] == ["GET /timeline"]
    assert [h["operation"] for h in wow["resolved_hotspots"]] == ["GET /feed"]
    # A service that left the scope is not "resolved": completeness speaks about it.
    gone = week_over_week(_report("other", "GET /x", 1, 1), before, 1, 10.0)
    assert gone["resolved_hotspots"] == [] and gone["new_hotspots"] == []


def test_a_newer_schema_is_refused_and_an_old_file_is_migrated(tmp_path):
    path = tmp_path / "h.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 0")  # an empty file from before the first migration
    with History(path) as h:
        assert h.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert h.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    p = cli("history", "list", "--history", str(path), cwd=tmp_path)
    assert p.returncode == 2 and "newer than this profile-first knows" in p.stderr
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    p = cli("history", "list", "--history", str(tmp_path / "junk.sqlite"), cwd=tmp_path)
    assert p.returncode == 2 and "not a usable history file" in p.stderr and "Traceback" not in p.stderr


V1_FILE = ROOT / "tests" / "data" / "history-v1.sqlite"  # two runs recorded by the schema-1 code (see README there)


def test_a_v1_file_written_by_the_old_code_is_migrated_and_compared_with(tmp_path):
    path = tmp_path / "history.sqlite"
    path.write_bytes(V1_FILE.read_bytes())
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        old_rows = db.execute("SELECT id, run, report FROM runs ORDER BY id").fetchall()
    assert len(old_rows) == 2
    p = cli("report", "--traces", str(ROOT / "examples" / "orders-n-plus-one.otlp.jsonl"), "--end",
            "2026-11-30T00:00:00Z", "--window", "7d", "--history", str(path), "--format", "json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    report = json.loads((only_folder(tmp_path) / "report.json").read_text())
    # The v1 runs said nothing about environments: they stay comparable, the latest is the previous run.
    assert report["week_over_week"]["previous"]["run"] == 2
    with History(path) as h:
        assert h.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == 2
        entries = h.entries()
        assert [(e.id, e.environments) for e in entries] == [(1, None), (2, None), (3, '["production"]')]
        # What v1 stored is untouched.
        assert [(i, run, json.loads(r)) for i, run, r in old_rows] == [
            (e.id, e.run, h.get(e.id)[1]) for e in entries[:2]]
    listed = json.loads(cli("history", "list", "--history", str(path), "--format", "json", cwd=tmp_path).stdout)
    assert [r["environments"] for r in listed] == [None, None, ["production"]]


def test_a_run_is_compared_with_runs_over_the_same_environments(tmp_path):
    def filtered(envs: list[str], end: str) -> dict:
        return {**_report("s", "GET /x", 100.0, 1000), "window": {"start": "a", "end": end},
                "environment_filter": {"environments": envs, "spans_read": 1, "spans_kept": 1, "by_environment": {}}}

    with History(tmp_path / "h.sqlite") as h:
        (prod,) = h.record("r1", {"report": (filtered(["production"], "2026-11-01"), None)})
        h.record("r2", {"report": (filtered(["staging"], "2026-11-02"), None)})
        h.record("r3", {"report": (_report("s", "GET /x", 1, 1), None)})  # no filter: its own scope
        entry, _ = h.previous("report", None, "2026-11-09", ("production",))
        assert entry.id == prod
        assert [e.id for e, _ in h.trend("report", None, environments=("production",))] == [prod]


def test_a_newer_schema_is_refused_before_anything_is_written(tmp_path, orders_n_plus_one_jsonl):
    path = tmp_path / "h.sqlite"
    History(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    p = cli("report", "--traces", str(orders_n_plus_one_jsonl), "--end", "now", "--window", "1d", "--history",
            str(path), cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert (f"history schema version {len(MIGRATIONS) + 1} is newer than this profile-first knows "
            f"({len(MIGRATIONS)}); upgrade profile-first") in p.stderr
    assert not (tmp_path / "reports").exists()
    with sqlite3.connect(path) as db:  # neither migrated nor written to
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 0


WRITER = textwrap.dedent("""
    import sys
    from analyzer.history import History
    path, who = sys.argv[1], sys.argv[2]
    big = {"window": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-08T00:00:00Z"}, "services": [],
           "padding": "x" * 200_000}
    with History(path) as h:
        print("ready", flush=True)
        for i in range(10_000):
            h.record(f"{who}-{i}", {"a": (big, ["s1"]), "b": (big, None)})
""")


def test_concurrent_and_killed_writers_never_corrupt_the_history(tmp_path):
    path = tmp_path / "h.sqlite"
    rng = random.Random(14)
    deadline = time.monotonic() + 30
    rounds = 0
    while rounds < 8 and time.monotonic() < deadline:
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{rounds}.{k}"], env=ENV,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for k in range(3)]
        for proc in procs:  # each has opened the history and is writing (a loaded machine starts slowly)
            assert proc.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.05, 1.0))
        for proc in procs:  # killed at a random point of a write, or between writes
            os.kill(proc.pid, signal.SIGKILL)
            time.sleep(rng.uniform(0, 0.05))
        for proc in procs:
            proc.wait(timeout=30)
            assert b"Traceback" not in proc.stderr.read()
        rounds += 1
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    per_run = db.execute("SELECT run, COUNT(*), SUM(length(report)) FROM runs GROUP BY run").fetchall()
    assert per_run, "no run was ever recorded"
    assert all(count == 2 for _, count, _ in per_run), "a killed run left part of itself"
    for (report,) in db.execute("SELECT report FROM runs"):
        assert json.loads(report)["padding"] == "x" * 200_000


def test_a_report_run_killed_at_any_point_leaves_the_folder_and_history_whole(tmp_path, orders_n_plus_one_jsonl):
    args = [sys.executable, "-m", "analyzer", "report", "--traces", str(orders_n_plus_one_jsonl), "--end", "now",
            "--window", "1d", "--format", "json", "--format", "md"]
    assert subprocess.run(args, cwd=tmp_path, env=ENV, capture_output=True, timeout=120).returncode == 0
    folder = only_folder(tmp_path)
    rng = random.Random(48)
    for _ in range(5):
        proc = subprocess.Popen(args, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 4.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert sorted(f.name for f in folder.iterdir()) == ["report.json", "report.md"]
        validate_report(json.loads((folder / "report.json").read_text()))
        with History(tmp_path / "reports" / "history.sqlite") as h:
            assert h.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            for e in h.entries():
                validate_report(h.get(e.id)[1])
