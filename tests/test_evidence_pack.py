"""The pre-rewrite evidence pack (analyzer/evidence.py), from reports of real SDK traces.

`orders` runs N+1 queries against an unindexed SQLite table (examples/orders-n-plus-one): the
pack must say database, quote the statement, give the fix-first saving beside the rewrite
ceiling, say that runtime metrics were not measured (no metrics given) and how to get them, and
carry a command that reproduces the same figures when run again. A service whose telemetry is
full of markup (tests/workloads/report_inputs.py) must come out as text in GitHub's Markdown.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options

from analyzer.evidence import evidence_pack, pinned_command
from tests.workloads.recording import record, write_jsonl
from tests.workloads.report_inputs import HOSTILE_OPERATION, HOSTILE_SERVICE, HOSTILE_STATEMENT, hostile

ROOT = Path(__file__).resolve().parents[1]
ORDERS = ROOT / "examples" / "orders-n-plus-one.otlp.jsonl"


def _analyze(argv: list[str]) -> dict:
    res = subprocess.run([sys.executable, "-m", "analyzer", *argv[1:], "--format", "json"], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=120)
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict]:
    hostile_path = write_jsonl(record(hostile), tmp_path_factory.mktemp("evidence") / "hostile.otlp.jsonl")
    # --window relative to now: the pack must pin it, or tomorrow's re-run would cover other requests.
    argv = ["profile-first", "analyze", "--traces", str(ORDERS), "--traces", str(hostile_path), "--window", "3650d"]
    return argv, _analyze(argv)


def test_orders_pack_names_the_measured_cause_the_ceiling_and_the_fix(run: tuple[list[str], dict]) -> None:
    argv, report = run
    pack = evidence_pack(report, "orders", argv)
    svc = next(s for s in report["services"] if s["service"] == "orders")
    assert pack.startswith("# Pre-rewrite evidence: orders\n")
    assert "**Rust rewrite: not recommended** (runtime `python`, cause `database`)" in pack
    statement = "SELECT sku, qty, price_cents FROM order_items WHERE order_id = ? ORDER BY sku"
    assert f"from `{statement}`" in pack  # the evidence's source, as a code span
    assert "**PF-DB001**" in pack
    c = svc["rewrite_ceiling"]
    assert f"Fixing the top cause first saves {c['fix_first_ms']:.1f} ms" in pack
    assert f"a rewrite could save at most {c['mean_ms']:.1f} ms" in pack
    assert f"| 1 | PF-DB001 | `GET /orders` | {svc['fix_first'][0]['saving_ms_per_request']:.1f} |" in pack


def test_what_was_not_measured_says_how_to_measure_it(run: tuple[list[str], dict]) -> None:
    argv, report = run
    section = evidence_pack(report, "orders", argv).split("## What was not measured", 1)[1].split("\n## ", 1)[0]
    assert "process_cpu_seconds_total" in section.replace("\\", "")  # what to enable for Python (escaped or not)
    assert "`--prometheus URL` or `--metrics FILE`" in section
    assert "**This is an upper bound, not a measurement:**" in evidence_pack(report, "orders", argv)


def test_the_command_in_the_pack_reproduces_the_figures(run: tuple[list[str], dict]) -> None:
    argv, report = run
    pack = evidence_pack(report, "orders", argv)
    block = re.search(r"```sh\n(.*?)\n```", pack, re.S)
    assert block is not None
    again_argv = shlex.split(block.group(1))
    assert "--window" not in again_argv
    assert again_argv[again_argv.index("--start") + 1] == report["window"]["start"]
    again = _analyze(again_argv)
    a = next(s for s in report["services"] if s["service"] == "orders")
    b = next(s for s in again["services"] if s["service"] == "orders")
    assert b["verdict"] == a["verdict"]
    assert [(h["operation"], h["count"], h["p99_ms"]) for h in b["hotspots"]] == \
        [(h["operation"], h["count"], h["p99_ms"]) for h in a["hotspots"]]


def test_pinned_command_replaces_every_window_form() -> None:
    w = {"start": "2026-11-23T00:00:00Z", "end": "2026-11-30T00:00:00Z"}
    assert pinned_command(["pf", "analyze", "--window=7d", "--end", "2026-12-01T00:00:00Z", "--traces", "x"], w) == \
        ["pf", "analyze", "--traces", "x", "--start", w["start"], "--end", w["end"]]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs |= {k for k, _ in attrs}


def test_hostile_telemetry_is_text_in_github_markdown(run: tuple[list[str], dict]) -> None:
    argv, report = run
    pack = evidence_pack(report, HOSTILE_SERVICE, argv)
    # UNSAFE lets raw HTML through: only escaping stands between the telemetry and the reader.
    html = cmarkgfm.github_flavored_markdown_to_html(pack, options=Options.CMARK_OPT_UNSAFE)
    parser = _Tags()
    parser.feed(html)
    assert parser.tags <= {"h1", "h2", "h3", "p", "strong", "em", "code", "ul", "li", "table", "thead", "tbody",
                           "tr", "th", "td", "pre"}, parser.tags
    assert not {a for a in parser.attrs if a.startswith("on")}
    text = unescape(re.sub(r"<[^>]+>", "", html))
    assert HOSTILE_SERVICE in text and HOSTILE_OPERATION in text
    assert HOSTILE_STATEMENT.replace("1", "?") in text


def test_unknown_service_is_a_clear_error(run: tuple[list[str], dict]) -> None:
    _, report = run
    with pytest.raises(ValueError, match=r"no service 'billing' in the report \(services: .*orders"):
        evidence_pack(report, "billing", ["profile-first"])
