"""Hostile telemetry through the real CLI (issue 10 §4): services, routes and a SQL table named
to clear the screen, retitle the terminal, plant hyperlinks and rich markup, inject HTML and forge
Markdown headings and table rows. The report shows every name, and none of them acts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options
from hypothesis import HealthCheck, given, settings

from analyzer.renderers import render
from analyzer.renderers.escape import for_terminal
from analyzer.renderers.json import to_json
from tests.test_escape import telemetry_text
from tests.workloads.hostile import ROUTES, SERVICES, TABLE, hostile_services
from tests.workloads.recording import record, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # all but the line feeds we print


@pytest.fixture(scope="module")
def hostile_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(record(hostile_services), tmp_path_factory.mktemp("hostile") / "hostile.otlp.jsonl")


def analyze(path: Path, *args: str) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--traces", str(path), *args],
                       capture_output=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p


def test_text_shows_every_name_and_no_control_sequence(hostile_jsonl):
    for color in ("never", "always"):
        p = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--traces", str(hostile_jsonl), "--format", "text"],
                           capture_output=True, cwd=ROOT, timeout=120,
                           env={"PATH": "/usr/bin:/bin", "COLUMNS": "400",
                                **({"FORCE_COLOR": "1", "TERM": "xterm"} if color == "always" else {})})
        assert p.returncode == 0, p.stderr
        out = p.stdout.decode("utf-8")
        # With colour on, rich's own SGR sequences (ESC [ … m) are the only escapes allowed.
        plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
        assert not RAW_CONTROL.search(plain), repr(RAW_CONTROL.search(plain))
        flat = re.sub(r"\s", "", plain)  # long lines wrap at spaces
        for name in SERVICES:
            assert re.sub(r"\s", "", for_terminal(name)) in flat  # shown, escapes visible, markup as written
        assert "[link=https://evil.example]rich[/link] a[/]b" in plain
        assert re.sub(r"\s", "", for_terminal(TABLE)) in flat  # the statement quoted in the N+1 finding


def test_markdown_forges_no_structure_and_carries_no_html(hostile_jsonl):
    md = analyze(hostile_jsonl, "--format", "md").stdout.decode("utf-8")
    assert not RAW_CONTROL.search(md)
    html = cmarkgfm.markdown_to_html_with_extensions(md, options=Options.CMARK_OPT_UNSAFE,
                                                     extensions=["table", "strikethrough", "autolink"])
    assert "<script" not in html and "<img" not in html and "javascript:" not in html.replace("javascript:alert", "")
    assert not re.search(r"<a href=\"(?!mailto:)", html)
    headings = re.findall(r"<h(\d)>(.*?)</h\1>", html)
    assert [level for level, _ in headings] == ["1"] + ["2"] * len(SERVICES)  # one per service, none forged
    assert not any("RUST REWRITE: RECOMMENDED" == text for _, text in headings)
    for table in re.findall(r"<table>.*?</table>", html, re.S):
        rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
        assert len(rows) == 2  # header and the one hot spot: no forged row
        assert {len(re.findall(r"<t[hd]", r)) for r in rows} == {12}
    assert "<strong>bold</strong>" not in html and "<code>tick</code>" not in html


def test_json_keeps_the_names_as_data(hostile_jsonl):
    report = json.loads(analyze(hostile_jsonl, "--format", "json").stdout.decode("utf-8"))
    assert sorted(s["service"] for s in report["services"]) == sorted(SERVICES)
    assert sorted(h["operation"] for s in report["services"] for h in s["hotspots"]) == sorted(f"GET {r}" for r in ROUTES)


def test_json_with_a_lone_surrogate_is_valid_utf8_and_reads_back():
    report = {"services": [{"service": "bad\ud800name", "path": "capture-\udcff.jsonl"}]}
    text = to_json(report)
    text.encode("utf-8")  # would raise on a raw surrogate
    assert json.loads(text) == report


@pytest.fixture(scope="module")
def real_report() -> dict:
    """The report of a real SDK capture (examples/mixed: orders with an N+1, pricing in-process)."""
    p = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--traces", str(ROOT / "examples" / "mixed.otlp.jsonl"),
                        "--format", "json"], capture_output=True, cwd=ROOT, timeout=120)
    return json.loads(p.stdout)


def with_names(report: dict, name: str) -> dict:
    """`report` with every telemetry-derived string replaced by (or ending in) `name`."""
    r = json.loads(json.dumps(report))
    for s in r["services"]:
        s["service"] = s["runtime"] = name
        s["verdict"]["reason"] += name
        for f in s.get("fix_first") or []:
            f["operation"], f["message"], f["remedy"] = name, f["message"] + name, name
        for h in s["hotspots"]:
            h["operation"] = name
            for f in h["findings"]:
                f["message"] += name
                f["remedy"] = name
                f["location"] = name
                for e in f["evidence"]:
                    e["source"] = name
    return r


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=telemetry_text)
def test_any_name_through_the_whole_renderers(real_report, name):
    """Property over the real renderers: no raw control character reaches the text report, the
    Markdown keeps one heading per service and 12 cells per table row, and no HTML tag survives."""
    r = with_names(real_report, name)
    text = render(r, "text", width=200)
    assert not RAW_CONTROL.search(text)
    html = cmarkgfm.markdown_to_html_with_extensions(render(r, "md"), options=Options.CMARK_OPT_UNSAFE,
                                                     extensions=["table", "strikethrough", "autolink"])
    assert len(re.findall(r"<h2>", html)) == len(r["services"]) and len(re.findall(r"<h1>", html)) == 1
    for row in re.findall(r"<tr>(.*?)</tr>", html, re.S):
        assert len(re.findall(r"<t[hd]", row)) == 12
    assert not re.search(r"<(?!/?(h[12]|p|code|strong|ol|ul|li|table|thead|tbody|tr|th|td|blockquote)\b)"
                         r"(?!a href=\"mailto:)(?!/a>)(?!td align=)(?!th align=)", html), html
