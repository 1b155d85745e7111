"""`profile-first report`: the scheduled run — config and flags, dated folders written all or nothing,
and exit codes that never let a run that answered nothing pass as success."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest

from analyzer.publish import publish
from analyzer.report_schema import validate_report
from analyzer.model.signals import Signal
from collectors.prometheus import PromConfig, collect

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", "report", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def this_week() -> str:
    y, w, _ = datetime.now(timezone.utc).isocalendar()
    return f"{y}-W{w:02d}"


def config(tmp_path: Path, text: str, name: str = "weekly.toml") -> str:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(p)


def test_a_team_run_writes_every_format_into_the_dated_folder(tmp_path, orders_n_plus_one_jsonl):
    cfg = config(tmp_path, f"""
        [sources]
        traces = ["{orders_n_plus_one_jsonl}"]
        [[team]]
        name = "checkout"
        services = ["orders"]
        [window]
        length = "1d"
        end = "now"
        [outputs]
        formats = ["json", "md", "text"]
    """)
    p = run("--config", cfg, "--no-history", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    folder = tmp_path / "reports" / this_week()
    assert sorted(f.name for f in folder.iterdir()) == ["checkout.json", "checkout.md", "checkout.txt"]
    assert [f.name for f in (tmp_path / "reports").iterdir()] == [this_week()]  # no temp folder left
    report = json.loads((folder / "checkout.json").read_text())
    validate_report(report)
    assert report["team"] == "checkout" and report["completeness"] == {"complete": True, "problems": []}
    (orders,) = report["services"]
    assert orders["service"] == "orders" and orders["verdict"]["cause"] == "database"
    assert "Incomplete" not in (folder / "checkout.md").read_text()


def test_flags_override_the_file(tmp_path, orders_n_plus_one_jsonl):
    cfg = config(tmp_path, f"""
        [sources]
        traces = ["{orders_n_plus_one_jsonl}"]
        [outputs]
        dir = "from-config"
        formats = ["json"]
    """)
    p = run("--config", cfg, "--no-history", "--format", "md", "--output-dir", "from-flag", "--end", "now",
            "--window", "1d", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "from-config").exists()
    assert [f.name for f in (tmp_path / "from-flag" / this_week()).iterdir()] == ["report.md"]


def test_a_service_filter_that_matches_nothing_is_said_first_and_exits_3(tmp_path, orders_n_plus_one_jsonl):
    p = run("--traces", str(orders_n_plus_one_jsonl), "--service", "order", "--end", "now", "--window", "1d",
            "--no-history", "--format", "md", "--format", "json", cwd=tmp_path)
    assert p.returncode == 3, p.stderr
    folder = tmp_path / "reports" / this_week()
    md = (folder / "report.md").read_text().splitlines()
    assert md[4].startswith("> **Incomplete report:**")
    assert "service 'order' is in no trace or metric of the window (did you mean 'orders'?)" in md[6]
    report = json.loads((folder / "report.json").read_text())
    validate_report(report)
    assert [p["kind"] for p in report["completeness"]["problems"]] == ["service_not_found"]
    assert "incomplete: service 'order'" in p.stderr


def test_a_window_without_spans_is_said_and_exits_3_and_fail_on_incomplete_exits_4(tmp_path,
                                                                                    orders_n_plus_one_jsonl):
    args = ("--traces", str(orders_n_plus_one_jsonl), "--end", "2020-01-06T00:00:00Z", "--no-history",
            "--format", "text")
    p = run(*args, cwd=tmp_path)
    assert p.returncode == 3, p.stderr
    text = (tmp_path / "reports" / "2020-W01" / "report.txt").read_text().splitlines()
    assert " ".join(" ".join(text[1:3]).split()).startswith("INCOMPLETE: no spans start in the window 2019-12-30T00:00:00.000Z → "
                              "2020-01-06T00:00:00.000Z (the traces read cover 20")
    gated = run(*args, "--fail-on", "incomplete", cwd=tmp_path)
    assert gated.returncode == 4
    assert run(*args, "--fail-on", "recommended", cwd=tmp_path).returncode == 3  # nothing recommended


def test_the_default_window_is_the_seven_full_days_before_today(tmp_path, orders_n_plus_one_jsonl):
    p = run("--traces", str(orders_n_plus_one_jsonl), "--no-history", "--format", "json", cwd=tmp_path)
    (folder,) = (tmp_path / "reports").iterdir()
    report = json.loads((folder / "report.json").read_text())
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert report["window"]["end"] == f"{today}T00:00:00.000Z"
    end = datetime.fromisoformat(report["window"]["end"])
    start = datetime.fromisoformat(report["window"]["start"])
    assert (end - start).days == 7
    y, w, _ = datetime.fromtimestamp(end.timestamp() - 1, timezone.utc).isocalendar()
    assert folder.name == f"{y}-W{w:02d}"
    # The recording was made today, after the window: a scheduled run says so.
    assert p.returncode == 3 and "no spans start in the window" in p.stderr


def test_bad_settings_fail_before_reading_and_leave_the_last_report_alone(tmp_path, orders_n_plus_one_jsonl):
    week = tmp_path / "reports" / "2020-W01"
    week.mkdir(parents=True)
    (week / "report.json").write_text("last week's report")
    cases = [
        ("--traces", str(tmp_path / "missing.jsonl"), "--end", "2020-01-08T00:00:00Z"),
        ("--config", config(tmp_path, "[outputs]\nformats = [\"pdf\"]\n", "pdf.toml"),
         "--traces", str(orders_n_plus_one_jsonl)),
        ("--config", config(tmp_path, '[credentials]\nprometheus_token = "NOT_SET_ANYWHERE"\n', "unset.toml"),
         "--traces", str(orders_n_plus_one_jsonl), "--prometheus", "http://127.0.0.1:9"),
        ("--end", "2020-01-08T00:00:00Z"),
    ]
    for args in cases:
        p = run(*args, cwd=tmp_path, env={"NOT_SET_ANYWHERE": ""})
        assert p.returncode == 2, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
        assert (week / "report.json").read_text() == "last week's report"
        assert [f.name for f in (tmp_path / "reports").iterdir()] == ["2020-W01"]


def test_publish_is_all_or_nothing(tmp_path):
    target = tmp_path / "reports" / "2026-W48"
    publish({"a.json": "1", "a.md": "one"}, target)
    assert {f.name: f.read_text() for f in target.iterdir()} == {"a.json": "1", "a.md": "one"}

    with pytest.raises(TypeError):
        publish({"a.json": "2", "a.md": 3}, target)  # type: ignore[dict-item]  # fails half-way through
    assert {f.name: f.read_text() for f in target.iterdir()} == {"a.json": "1", "a.md": "one"}
    assert [p.name for p in target.parent.iterdir()] == ["2026-W48"]
    publish({"b.json": "3"}, target)  # a successful rerun replaces the folder
    assert [f.name for f in target.iterdir()] == ["b.json"]
    assert [p.name for p in target.parent.iterdir()] == ["2026-W48"]


@pytest.mark.prometheus
def test_staging_is_excluded_unless_asked(prom_env):
    from analyzer.config import Config
    from analyzer.weekly import Plan, prometheus_settings

    server, window = prom_env
    span = (window.start + 600, window.end)

    def cores(environments: tuple[str, ...]) -> float:
        plan = Plan(config=Config(), traces=[], metrics=[], prometheus=server.url, listen=None, start=span[0],
                    end=span[1], teams=[], environments=environments, out_dir=Path("."), formats=("json",),
                    url=None, trace_url=None, metrics_textfile=None, push_metrics=None, history=None,
                    regression_pct=10, clickhouse=None, store=None)
        settings = prometheus_settings(plan)
        signals = collect(server.url, ["shop-env"], *span, PromConfig(extra_matchers=settings["extra_matchers"]))
        return signals.services["shop-env"].get(Signal.CPU_CORES_USED).mean()

    assert cores(("production",)) == pytest.approx(0.75, rel=1e-3)  # production + the unlabelled series
    assert cores(("production", "staging")) == pytest.approx(4.75, rel=1e-3)


@pytest.mark.prometheus
def test_no_series_from_prometheus_is_an_incomplete_report(tmp_path, prom_env, orders_n_plus_one_jsonl):
    server, _ = prom_env
    p = run("--traces", str(orders_n_plus_one_jsonl), "--prometheus", server.url, "--end", "now", "--window", "1d",
            "--no-history", "--format", "json", cwd=tmp_path)
    assert p.returncode == 3, p.stderr
    report = json.loads((tmp_path / "reports" / this_week() / "report.json").read_text())
    kinds = {(x["kind"], x.get("service")) for x in report["completeness"]["problems"]}
    assert ("no_series", "orders") in kinds
    assert f"Prometheus at {server.url} returned no series for 'orders'" in p.stderr


def test_the_evidence_pack_is_written_beside_the_report_and_a_missing_service_is_said(tmp_path,
                                                                                      orders_n_plus_one_jsonl):
    p = run("--traces", str(orders_n_plus_one_jsonl), "--end", "now", "--window", "1d", "--no-history",
            "--format", "json", "--evidence-pack", "orders", "--evidence-pack", "ordrs", cwd=tmp_path)
    assert p.returncode == 3, p.stderr
    folder = tmp_path / "reports" / this_week()
    assert sorted(f.name for f in folder.iterdir()) == ["evidence-orders.md", "report.json"]
    pack = (folder / "evidence-orders.md").read_text()
    assert pack.startswith("# Pre-rewrite evidence: orders")
    reproduce = pack[pack.index("## Reproduce"):]
    assert "profile-first report --traces" in reproduce and "--start" in reproduce  # the window pinned
    problems = json.loads((folder / "report.json").read_text())["completeness"]["problems"]
    assert [x["message"] for x in problems] == ["no evidence pack for 'ordrs': the service is in no report of this run"]


def test_a_clickhouse_store_named_in_the_config_is_read(tmp_path, orders_n_plus_one_jsonl):
    from tests.test_clickhouse import _fill

    store = _fill(tmp_path / "store", [orders_n_plus_one_jsonl])
    cfg = config(tmp_path, f"""
        [sources.clickhouse]
        url = "chdb:{store}"
        [outputs]
        formats = ["json"]
    """)
    p = run("--config", cfg, "--end", "now", "--window", "1d", "--no-history", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    report = json.loads((tmp_path / "reports" / this_week() / "report.json").read_text())
    (orders,) = report["services"]
    assert orders["verdict"]["cause"] == "database" and orders["hotspots"][0]["operation"] == "GET /orders"


def test_findings_as_metrics_are_written_per_team(tmp_path, orders_n_plus_one_jsonl, gateway_sequential_jsonl):
    from prometheus_client.parser import text_string_to_metric_families

    cfg = config(tmp_path, f"""
        [sources]
        traces = ["{orders_n_plus_one_jsonl}", "{gateway_sequential_jsonl}"]
        [[team]]
        name = "checkout"
        services = ["orders"]
        [[team]]
        name = "edge"
        services = ["gateway"]
        [outputs]
        formats = ["json"]
        metrics_textfile = "textfile/profile_first.prom"
    """)
    assert run("--config", cfg, "--end", "now", "--no-history", cwd=tmp_path).returncode == 2  # no such directory
    (tmp_path / "textfile").mkdir()
    p = run("--config", cfg, "--end", "now", "--window", "1d", "--no-history", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    for team, service, cause in (("checkout", "orders", "database"), ("edge", "gateway", "network")):
        text = (tmp_path / "textfile" / f"profile_first.{team}.prom").read_text()
        verdicts = {s.labels["service"] for f in text_string_to_metric_families(text)
                    if f.name == "profile_first_verdict_cause" for s in f.samples
                    if s.value == 1 and s.labels["cause"] == cause}
        assert verdicts == {service}


def test_a_tempo_store_named_in_the_config_is_read(tmp_path):
    """The trace-store stand-in (tests/store_standins.py) serving the Nezha online-boutique traces."""
    from tests import store_standins as standins
    from tests.test_trace_stores import OB_CART_DELAY, _window

    traces = standins.nezha_spans(OB_CART_DELAY)
    server = standins.tempo(traces)
    try:
        start, end = _window(traces)
        cfg = config(tmp_path, f"""
            [sources.tempo]
            url = "{server.url}"
            per_operation = 10
            [outputs]
            formats = ["json"]
        """)
        p = run("--config", cfg, "--start", str(start), "--end", str(end), "--no-history", cwd=tmp_path)
    finally:
        server.close()
    assert p.returncode in (0, 3), p.stderr  # the Nezha traces carry no runtime metrics: verdicts may be unmeasured
    (folder,) = (tmp_path / "reports").iterdir()
    report = json.loads((folder / "report.json").read_text())
    (source,) = report["input"]["sources"]
    assert source["format"] == "tempo-api"
    assert "frontend" in {s["service"] for s in report["services"]}


def test_the_example_config_makes_dated_team_reports_and_a_second_run_shows_week_over_week(
        tmp_path, orders_n_plus_one_jsonl, gateway_sequential_jsonl):
    """examples/weekly.toml as shipped, with local traces on the command line in place of its Mimir and
    trace directory (sources given as flags replace the file's), and no delivery."""
    example = ROOT / "examples" / "weekly.toml"
    args = ("--config", str(example), "--traces", str(orders_n_plus_one_jsonl), "--traces",
            str(gateway_sequential_jsonl), "--end", "now", "--window", "1d", "--no-delivery")
    first = run(*args, cwd=tmp_path)
    # The example's teams name services these recordings do not have (cart, profile, feed, ...).
    assert first.returncode == 3, first.stderr
    folder = tmp_path / "reports" / this_week()
    names = sorted(f.name for f in folder.iterdir())
    assert names == sorted(f"{team}.{ext}" for team in ("checkout", "content") for ext in ("json", "md", "txt", "html"))
    checkout = json.loads((folder / "checkout.json").read_text())
    validate_report(checkout)
    assert {s["service"] for s in checkout["services"]} == {"orders", "gateway"}
    assert "service 'cart' is in no trace or metric" in (folder / "checkout.md").read_text()
    second = run(*args, cwd=tmp_path)
    assert second.returncode == 3, second.stderr
    again = json.loads((folder / "checkout.json").read_text())
    assert again["week_over_week"]["previous"]["run"] == 1
    assert "## Since the previous run" in (folder / "checkout.md").read_text()
    assert 'id="week-over-week"' in (folder / "checkout.html").read_text()


def test_fail_on_recommended_and_the_order_of_exit_codes():
    """The gate and the documented order when several hold: 4 (a --fail-on condition), then 5 (a
    delivery failed), then 3 (incomplete)."""
    from analyzer.commands.report import exit_code

    def report(verdict: str = "not_recommended", complete: bool = True, regressions: int = 0) -> dict:
        return {"services": [{"verdict": {"rust_rewrite": verdict}}], "completeness": {"complete": complete},
                "week_over_week": {"regressions": [{}] * regressions}}

    assert exit_code({"t": report("recommended")}, (), delivery_failed=False) == 0
    assert exit_code({"t": report("recommended")}, ("recommended",), delivery_failed=False) == 4
    assert exit_code({"t": report(), "u": report("recommended")}, ("recommended",), delivery_failed=False) == 4
    assert exit_code({"t": report("insufficient_evidence")}, ("recommended",), delivery_failed=False) == 0
    assert exit_code({"t": report(regressions=1)}, ("regression",), delivery_failed=False) == 4
    assert exit_code({"t": report(complete=False)}, (), delivery_failed=False) == 3
    assert exit_code({"t": report(complete=False)}, (), delivery_failed=True) == 5
    assert exit_code({"t": report("recommended", complete=False)}, ("recommended",), delivery_failed=True) == 4


def test_the_readme_config_passes_config_check(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Weekly reports"):readme.index("### The HTML report")]
    (block,) = [b.split("\n", 1)[1] for b in section.split("```")[1::2] if b.startswith("toml")]
    (tmp_path / "weekly.toml").write_text(block, encoding="utf-8")
    p = subprocess.run([sys.executable, "-m", "analyzer", "config", "check", "weekly.toml"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stdout + p.stderr
    # The same file misspelled is refused with a did-you-mean, as the text above the block says.
    (tmp_path / "typo.toml").write_text(block.replace("[scope]", "[scoep]"), encoding="utf-8")
    p = subprocess.run([sys.executable, "-m", "analyzer", "config", "check", "typo.toml"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 2 and "did you mean" in p.stdout + p.stderr and "scope" in p.stdout + p.stderr
