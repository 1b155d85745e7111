"""The HTML report, opened in real headless Chromium.

The report comes from real telemetry: the GC-heavy `feed` service exporting traces and runtime
metrics over OTLP/HTTP to profile-first's receiver for a few seconds (tests/workloads/
report_inputs.py), a service whose names, statements and code location carry markup and
`javascript:` URLs, and the recorded example traces (N+1 queries, a sequential call chain, a
cache that misses). The week-over-week section gets an earlier run of the examples alone.
Chromium (Debian's, over the DevTools protocol: tests/chromium.py) loads the file and reports
every console error, exception, CSP violation and request the page made.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import pytest

from analyzer.config import Config
from analyzer.pipeline import Inputs, analyze
from analyzer.renderers import charts
from analyzer.renderers.html import render_html
from analyzer.report_schema import validate_report
from collectors.otlp_metrics import signals_from_file
from collectors.otlp_traces import load_traces
from heuristics.registry import all_rules
from tests.chromium import Chromium, Page
from tests.workloads.recording import record, write_jsonl
from tests.workloads.report_inputs import (
    HOSTILE_FILE,
    HOSTILE_FUNCTION,
    HOSTILE_OPERATION,
    HOSTILE_SERVICE,
    HOSTILE_STATEMENT,
    hostile,
    record_feed,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [ROOT / "examples" / n for n in ("orders-n-plus-one.otlp.jsonl", "gateway-sequential.otlp.jsonl",
                                            "profile-cache-miss.otlp.jsonl")]
JAEGER = "http://127.0.0.1:16686/trace/{trace_id}"
FEED_SECONDS = 4.0
HOSTILE_CHANGE = "<img src=x onerror=\"document.title='pwned-history'\"> p99 up"


def _analyze(traces: list[Path], metrics: list[Path] = ()) -> dict:
    loaded = load_traces([str(p) for p in traces])
    signals = None
    for m in metrics:
        signals = signals_from_file(str(m), signals)
    report = analyze(Inputs(loaded.table, loaded.sources, loaded.repairs, signals), Config())
    validate_report(report)
    return report


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("html-inputs")
    feed = record_feed(work, FEED_SECONDS)
    assert feed.metrics_path is not None, "the feed service's runtime metrics did not arrive"
    assert feed.metric_requests >= 4, f"only {feed.metric_requests} metric collections arrived: too few to chart"
    hostile_path = write_jsonl(record(hostile), work / "hostile.otlp.jsonl")
    return _analyze([feed.traces_path, hostile_path, *EXAMPLES], [feed.metrics_path])


@pytest.fixture(scope="module")
def history() -> dict:
    earlier = _analyze(EXAMPLES[:2])
    earlier["generated_at"] = "2026-11-26T06:00:00.000Z"
    return {"runs": [{"id": "2026-W47", "report": earlier}],
            "changes": [{"kind": "regression", "service": HOSTILE_SERVICE, "operation": HOSTILE_OPERATION,
                         "message": HOSTILE_CHANGE}]}


@pytest.fixture(scope="module")
def html_file(report: dict, history: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(render_html(report, history=history, trace_url_template=JAEGER), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def page(html_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Page:
    with Chromium() as browser:
        page = browser.open(html_file)
        # Everything the tests ask of the DOM, read while the browser runs.
        page.facts = page.evaluate("""(() => {
          const q = s => document.querySelectorAll(s);
          const attrs = [...q('*')].flatMap(e => [...e.attributes].map(a => a.name));
          return {
            title: document.title,
            scripts: q('script').length,
            handlers: attrs.filter(n => n.startsWith('on')),
            hrefs: [...q('[href]')].map(e => e.getAttribute('href')),
            verdict_rows: q('#verdicts tbody tr').length,
            services: [...q('section.service h2')].map(e => e.firstChild.textContent.trim()),
            panels: Object.fromEntries([...q('section.service')].map(s => [
              s.querySelector('h2').firstChild.textContent.trim(),
              [...s.querySelectorAll('figure.timeseries svg')].map(f => f.querySelectorAll('g[id*="axes_"]').length)])),
            breakdowns: q('figure.breakdown svg').length,
            hotspots: q('article.hotspot').length,
            rule_docs: [...q('details.rule')].map(d => d.id),
            rule_text: [...q('details.rule pre')].map(e => e.textContent).join(''),
            trend: q('#week-over-week figure.trend svg').length,
            text: document.body.innerText,
            first_section: document.body.querySelector('section').id,
          };
        })()""")
        page.shot = tmp_path_factory.mktemp("screenshot") / "report.png"
        page.screenshot(page.shot)
    return page


def test_opens_without_errors_or_network_fetches(page: Page, html_file: Path) -> None:
    assert page.errors == []
    assert page.requests == [html_file.resolve().as_uri()]  # the file itself, nothing else


def test_verdicts_come_first_then_every_service_with_its_charts(page: Page, report: dict) -> None:
    f = page.facts
    assert f["first_section"] == "verdicts"
    assert f["verdict_rows"] == len(report["services"])
    assert f["services"] == [s["service"] for s in report["services"]]
    # A chart wherever the window holds two or more points of a series; feed exported GC and CPU
    # metrics, so its chart has the latency, GC and CPU panels.
    def points(ts: dict, key: str) -> int:
        return sum(v is not None for v in ts.get(key, ()))

    charted = {s["service"] for s in report["services"] if s.get("timeseries") and max(
        points(s["timeseries"], k) for k in ("p50_ms", "gc_seconds_per_second", "cpu_cores_used")) >= 2}
    assert {name for name, figs in f["panels"].items() if figs} == charted
    assert f["panels"]["feed"] == [3]
    n_hotspots = sum(len(s["hotspots"]) for s in report["services"])
    assert f["hotspots"] == f["breakdowns"] == n_hotspots
    assert f["trend"] >= 1


def test_every_rule_code_links_to_its_embedded_documentation(page: Page, report: dict) -> None:
    codes = {x["rule"] for s in report["services"] for h in s["hotspots"] for x in h["findings"]}
    assert {"PF-DB001", "PF-NET002", "PF-GC001"} <= codes  # N+1, sequential calls, GC time
    assert set(page.facts["rule_docs"]) == {f"rule-{c}" for c in codes}
    assert {f"#rule-{c}" for c in codes} <= set(page.facts["hrefs"])
    assert all_rules()["PF-DB001"].doc in page.facts["rule_text"]


def test_hostile_telemetry_shows_as_text_and_runs_nothing(page: Page) -> None:
    f = page.facts
    assert f["title"].startswith("profile-first report")  # no injected script renamed the page
    assert f["scripts"] == 0 and f["handlers"] == []
    for s in (HOSTILE_SERVICE, HOSTILE_OPERATION, HOSTILE_FILE, HOSTILE_FUNCTION, HOSTILE_CHANGE):
        assert s in f["text"], s
    assert '"</code><img src=x onerror=document.title=`pwned-sql`>"' in f["text"]  # the N+1's statement
    # Links: in-page anchors, and the trace UI's http URL with a well-formed trace id.
    others = [h for h in f["hrefs"] if not h.startswith("#")]
    assert others and all(re.fullmatch(r"http://127\.0\.0\.1:16686/trace/[0-9a-f]{32}", h) for h in others)


def test_screenshot_is_saved(page: Page) -> None:
    data = page.shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 1000 and height > 3000  # the whole page, beyond the first screen


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.hrefs += [v or "" for k, v in attrs if k in ("href", "src", "xlink:href")]


@pytest.mark.parametrize("template", ["javascript:alert(1)//{trace_id}", "data:text/html,{trace_id}",
                                      "ftp://jaeger.example/{trace_id}", "https://jaeger.example/trace/", "//jaeger.example/{trace_id}"])
def test_only_http_trace_templates_make_links(report: dict, template: str) -> None:
    """A template that is not http(s) with a host and {trace_id} links nothing and is named at the top."""
    parser = _Links()
    out = render_html(report, trace_url_template=template)
    parser.feed(out)
    assert [h for h in parser.hrefs if not h.startswith("#")] == []
    assert "was not used: only http(s) URLs" in out
    assert "script" not in parser.tags


def test_grafana_template_with_json_braces_is_substituted_literally(report: dict) -> None:
    grafana = 'https://grafana.example/explore?left={"datasource":"tempo","queries":[{"query":"{trace_id}"}]}'
    parser = _Links()
    parser.feed(render_html(report, trace_url_template=grafana))
    trace_links = [h for h in parser.hrefs if h.startswith("https://grafana.example/")]
    trace_id = report["services"][0]["hotspots"][0]["sample_traces"][0]["trace_id"]
    assert grafana.replace("{trace_id}", trace_id) in trace_links


def test_chart_labels_from_telemetry_are_escaped_svg_text() -> None:
    """matplotlib writes SVG text for labels (no mathtext: `$` stays a dollar); markup stays text."""
    label = "</text><script>x</script> & \"q\" $x$ --> ]]>"
    svg = charts.trend_chart(["W47", "W48"], [(label, [1.0, 2.0])], "p99 latency (ms)")
    root = ElementTree.fromstring(svg)  # well-formed XML: nothing broke out of an element
    ns = "{http://www.w3.org/2000/svg}"
    texts = ["".join(t.itertext()) for t in root.iter(f"{ns}text")]
    assert label in texts
    assert not [e for e in root.iter() if e.tag.rsplit("}", 1)[-1] in ("script", "foreignObject")]


def test_analyze_writes_html_by_extension_and_by_format(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    cmd = [sys.executable, "-m", "analyzer", "analyze", "--traces", str(EXAMPLES[0])]
    subprocess.run([*cmd, "--output", str(out)], check=True, cwd=ROOT, timeout=120)
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and "<svg" in text and "PF-DB001" in text
    res = subprocess.run([*cmd, "--format", "html"], check=True, cwd=ROOT, timeout=120, capture_output=True, text=True)
    assert res.stdout.startswith("<!doctype html>") and res.stdout.rstrip().endswith("</html>")


def test_analyze_links_traces_with_trace_url_and_refuses_a_script_url(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "analyzer", "analyze", "--traces", str(EXAMPLES[0]), "--output", str(tmp_path / "r.html")]
    bad = subprocess.run([*cmd, "--trace-url", "javascript:alert('{trace_id}')"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "--trace-url" in bad.stderr and not (tmp_path / "r.html").exists()
    subprocess.run([*cmd, "--trace-url", JAEGER], check=True, cwd=ROOT, timeout=120)
    parser = _Links()
    parser.feed((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert [h for h in parser.hrefs if h.startswith("http://127.0.0.1:16686/trace/")]


def test_what_the_report_could_not_answer_comes_before_the_verdicts(report: dict) -> None:
    """A scheduled run asked for `ordres` (a typo): the HTML says so above the verdicts."""
    from analyzer.completeness import assess

    incomplete = {**report}
    incomplete["completeness"] = assess(report, requested=["ordres"], known=[s["service"] for s in report["services"]],
                                        traces_given=True, spans_in_window=report["input"]["spans"], span_window=None,
                                        prometheus=None, signals=None)
    out = render_html(incomplete)
    notice = out.index("This report is incomplete")
    assert notice < out.index('id="verdicts"')
    assert "service &#x27;ordres&#x27; is in no trace or metric of the window (did you mean &#x27;orders&#x27;?)" in out
    assert "This report is incomplete" not in render_html(report)
