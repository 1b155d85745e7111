"""`analyze --clickhouse`: real `otel_traces` tables in chDB (ClickHouse's engine in process).

Tables are created with the OpenTelemetry Collector ClickHouse exporter's DDL and filled, as
the exporter maps them, from real SDK recordings (tests/workloads: N+1 on SQLite, a sequential
gateway on loopback HTTP, cache-aside on a real redis, CPU-bound rendering) and from the
generated benchmark fleet. Each is analyzed twice, from the store and from the same spans as
OTLP files, and the hot spots and verdicts are compared. `--clickhouse http://` runs end to end
through clickhouse-connect against tests/clickhouse_http.py (ClickHouse's HTTP interface in front
of the same engine); one more test runs against a real clickhouse-server when one is reachable on
loopback (see the README), and is skipped otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from chdb import session as chdb_session
from click.testing import CliRunner

from analyzer.cli import main
from analyzer.report_schema import validate_report
from benchmarks.gen_traces import generate_traces
from benchmarks.otel_traces_table import create_table, load_otlp_jsonl
from collectors.clickhouse_queries import Bounds
from collectors.clickhouse_schema import SchemaError, TableRef
from collectors.clickhouse_source import ChdbSource, ClickHouseError, format_param
from collectors.clickhouse_traces import Options, load_clickhouse


def _fill(path: Path, files: list[Path], *, old: bool = False, table: str = "otel.otel_traces") -> Path:
    s = chdb_session.Session(str(path))  # chDB holds one database directory per process at a time
    try:
        create_table(s, table, old=old)
        for f in files:
            load_otlp_jsonl(s, f, table, old=old)
    finally:
        s.close()
    return path


def _analyze_as(fmt: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["analyze", *args, "--format", fmt], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr if result.exit_code else ""


def _analyze(*args: str) -> tuple[int, dict | None, str]:
    code, out, err = _analyze_as("json", *args)
    return code, json.loads(out) if code == 0 else None, err


@pytest.fixture(scope="session")
def workloads(orders_n_plus_one_jsonl: Path, gateway_sequential_jsonl: Path, profile_cache_miss_jsonl: Path,
              cpu_render_jsonl: Path) -> list[Path]:
    """Database (N+1), network (sequential calls), caching (misses) and CPU-bound recordings."""
    return [orders_n_plus_one_jsonl, gateway_sequential_jsonl, profile_cache_miss_jsonl, cpu_render_jsonl]


@pytest.fixture(scope="session")
def workloads_store(tmp_path_factory: pytest.TempPathFactory, workloads: list[Path]) -> Path:
    return _fill(tmp_path_factory.mktemp("ch") / "workloads", workloads)


@pytest.fixture(scope="session")
def fleet_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The benchmark's simulated fleet (28 services, 5 languages), 40k spans as OTLP/JSON lines."""
    gen = generate_traces(40_000, seed=3)
    path = tmp_path_factory.mktemp("fleet") / "fleet.otlp.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for line in gen.json_lines():
            f.write(line + "\n")
    return path


@pytest.fixture(scope="session")
def fleet_store(tmp_path_factory: pytest.TempPathFactory, fleet_jsonl: Path) -> Path:
    return _fill(tmp_path_factory.mktemp("ch") / "fleet", [fleet_jsonl])


def _hotspots(report: dict) -> dict[tuple[str, str], dict]:
    return {(s["service"], h["operation"]): h for s in report["services"] for h in s["hotspots"]}


def _verdicts(report: dict) -> dict[str, tuple[str, str]]:
    return {s["service"]: (s["verdict"]["rust_rewrite"], s["verdict"]["cause"]) for s in report["services"]}


def test_real_workloads_give_the_same_report_as_their_otlp_files(workloads_store: Path, workloads: list[Path]) -> None:
    """Small windows are pulled whole (every trace, weight 1): hot spots, figures, findings and
    verdicts equal those read from the OTLP files; the store's own figures match exactly."""
    code, store, err = _analyze("--clickhouse", f"chdb:{workloads_store}")
    assert code == 0, err
    code, files, err = _analyze(*[a for f in workloads for a in ("--traces", str(f))])
    assert code == 0, err
    validate_report(store)
    assert _verdicts(store) == _verdicts(files)
    assert {v for v in _verdicts(store).values()} >= {("not_recommended", "database"), ("not_recommended", "network"),
                                                      ("not_recommended", "caching")}
    got, want = _hotspots(store), _hotspots(files)
    assert got.keys() == want.keys()
    for key, h in want.items():
        g = got[key]
        assert (g["category"], g["count"], g["p50_ms"], g["p99_ms"]) == (h["category"], h["count"], h["p50_ms"], h["p99_ms"])
        assert g["total_ms"] == pytest.approx(h["total_ms"], abs=0.002)
        assert [f["rule"] for f in g["findings"]] == [f["rule"] for f in h["findings"]]
        w = g["window_figures"]
        assert (w["count"], w["computed_in"], w["sample_total_error"]) == (h["count"], "chdb", 0)
        assert w["p99_ms"] == pytest.approx(h["p99_ms"], abs=0.002)
    src = store["input"]["sources"][0]
    assert src["format"] == "chdb" and src["pushdown"]["window_spans"] == files["input"]["spans"]
    assert src["sampling"]["pulled"] == src["pushdown"]["window_traces"] == files["input"]["traces"]


def test_n_plus_one_quotes_the_whole_window_repetitions(workloads_store: Path) -> None:
    """The N+1 finding carries the store's own count of traces repeating the statement: every
    one of the 12 requests of orders_n_plus_one loads its 20 orders' items one query at a time."""
    code, report, err = _analyze("--clickhouse", f"chdb:{workloads_store}", "--service", "orders")
    assert code == 0, err
    n1 = [f for f in _hotspots(report)[("orders", "GET /orders")]["findings"] if f["rule"] == "PF-DB001"]
    ev = {e["signal"]: e for e in n1[0]["evidence"]}
    assert ev["repeating_traces_in_window"]["value"] == 12
    assert ev["repetitions_per_repeating_trace_in_window"]["value"] == 20
    assert "order_id = ?" in ev["repeating_traces_in_window"]["source"]


def test_generated_fleet_within_the_sampling_error_it_reports(fleet_store: Path, fleet_jsonl: Path) -> None:
    """40k spans of the generated fleet, sampled (100 traces above p95 and 100 below per root
    operation): the store's figures equal the files' exactly; the sample's weighted totals are
    within the error the report states for each hot spot, and every verdict is the same."""
    code, store, err = _analyze("--clickhouse", f"chdb:{fleet_store}")
    assert code == 0, err
    code, files, err = _analyze("--traces", str(fleet_jsonl))
    assert code == 0, err
    validate_report(store)
    sampling = store["input"]["sources"][0]["sampling"]
    assert sampling["pulled"] < sampling["population"] / 2  # really a sample
    code, markdown, _ = _analyze_as("md", "--clickhouse", f"chdb:{fleet_store}")
    head = markdown.split("\n## ")[0]  # said before the first service
    assert code == 0 and f"a weighted sample of {sampling['pulled']:,} of" in head and "40,000 spans ranked" in head
    assert _verdicts(store) == _verdicts(files)
    got, want = _hotspots(store), _hotspots(files)
    for key, h in want.items():
        if key not in got:  # a downstream operation no sampled trace reached: rare ones only
            assert h["count"] < 40, key
            continue
        g = got[key]
        w = g["window_figures"]
        assert (w["count"], w["p50_ms"], w["p99_ms"]) == (h["count"], h["p50_ms"], h["p99_ms"])
        assert w["total_ms"] == pytest.approx(h["total_ms"], abs=0.002)
        assert g["total_ms"] == pytest.approx(w["total_ms"] * (1 + w["sample_total_error"]), rel=1e-3, abs=0.01)
    # Each service's top hot spots are the files' and in the same order (ranked by the store's totals).
    for s in files["services"]:
        top = [h["operation"] for h in s["hotspots"][:3]]
        mine = [h["operation"] for svc in store["services"] if svc["service"] == s["service"] for h in svc["hotspots"]]
        assert mine[:len(top)] == top
    # The weighted estimates are close for the heavy hot spots: sampling errors stay small.
    heavy = [g["window_figures"]["sample_total_error"] for g in got.values() if g["window_figures"]["count"] >= 200]
    assert heavy and max(abs(e) for e in heavy) < 0.25


def test_older_exporter_schema(tmp_path: Path, workloads: list[Path], workloads_store: Path) -> None:
    """Int64 Duration and pdata's enum spellings (`Server`, `Error`) read the same as the current schema."""
    old = _fill(tmp_path / "old", workloads, old=True)
    code, got, err = _analyze("--clickhouse", f"chdb:{old}")
    assert code == 0, err
    code, want, err = _analyze("--clickhouse", f"chdb:{workloads_store}")
    assert code == 0, err
    assert "Int64 Duration" in got["input"]["sources"][0]["pushdown"]["schema"]
    assert _verdicts(got) == _verdicts(want)
    assert {k: (h["count"], h["p99_ms"], h["category"]) for k, h in _hotspots(got).items()} == \
        {k: (h["count"], h["p99_ms"], h["category"]) for k, h in _hotspots(want).items()}


def test_a_table_missing_columns_names_them(tmp_path: Path) -> None:
    s = chdb_session.Session(str(tmp_path / "bad"))
    try:
        s.query("CREATE DATABASE otel")
        s.query("CREATE TABLE otel.otel_traces (Timestamp DateTime64(9), TraceId String, SpanId String, "
                "ParentSpanId String, SpanName String, SpanKind String, ServiceName String, Duration String, "
                "StatusCode String) ENGINE = MergeTree ORDER BY Timestamp")
    finally:
        s.close()
    code, _, err = _analyze("--clickhouse", f"chdb:{tmp_path / 'bad'}")
    assert code == 2
    assert "missing columns: SpanAttributes" in err and "Duration is String" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_missing_table_and_a_bad_table_name(workloads_store: Path) -> None:
    code, _, err = _analyze("--clickhouse", f"chdb:{workloads_store}", "--clickhouse-table", "otel.spans")
    assert code == 2 and "otel.spans not found" in err
    code, _, err = _analyze("--clickhouse", f"chdb:{workloads_store}", "--clickhouse-table", "otel.t`; DROP TABLE x")
    assert code == 2 and "DATABASE.TABLE" in err
    with pytest.raises(SchemaError):
        TableRef.parse("a.b.c")


def test_queries_are_bounded(workloads_store: Path) -> None:
    """A result larger than max_result_rows is refused by the engine, not cut silently."""
    opts = Options(bounds=Bounds(max_execution_time=30, max_result_rows=2))
    with pytest.raises(ClickHouseError, match="(?i)limit for result exceeded"):
        load_clickhouse(f"chdb:{workloads_store}", opts)


def test_values_are_bound_parameters_never_sql(tmp_path: Path) -> None:
    """Service and operation names full of quotes, backslashes and SQL reach the engine as
    parameters: the run works, the names come back intact, the table is still there."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from collectors.otlp_json import to_otlp_json_line

    service = "o'hara\\svc\t\"x"
    operation = "GET /x'); DROP TABLE otel.otel_traces; --"
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for _ in range(3):
        with tracer.start_as_current_span(operation, kind=SpanKind.SERVER):
            pass
    path = tmp_path / "evil.jsonl"
    path.write_text(to_otlp_json_line(encode_spans(exporter.get_finished_spans())) + "\n")
    store = _fill(tmp_path / "evil", [path])
    code, report, err = _analyze("--clickhouse", f"chdb:{store}", "--service", service)
    assert code == 0, err
    assert [(s["service"], [h["operation"] for h in s["hotspots"]]) for s in report["services"]] == [(service, [operation])]
    assert report["input"]["sources"][0]["pushdown"]["window_spans"] == 3


def test_parameter_text_round_trips_through_the_engine(tmp_path: Path) -> None:
    src = ChdbSource(str(tmp_path))
    try:
        values = ["plain", "quo'te", "back\\slash", "tab\there", "new\nline", "ünï"]
        rows = [r for b in src.batches("SELECT {v:String} AS v, {a:Array(String)} AS a",
                                       {"v": values[1] + values[2], "a": values}) for r in b.to_pylist()]
    finally:
        src.close()
    assert rows == [{"v": values[1] + values[2], "a": values}]
    assert format_param([("a'", 1)]) == "[('a\\'',1)]"


def test_unreachable_server_is_one_line_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.workloads.servers import free_port

    monkeypatch.setenv("PROFILE_FIRST_CLICKHOUSE_USER", "analyst")
    monkeypatch.setenv("PROFILE_FIRST_CLICKHOUSE_PASSWORD", "s3cr3t-pw")
    port = free_port()  # nothing listens there: the connection is refused for real
    code, _, err = _analyze("--clickhouse", f"http://127.0.0.1:{port}", "--clickhouse-timeout", "5")
    assert code == 2 and f"127.0.0.1:{port}" in err and "s3cr3t-pw" not in err
    code, _, err = _analyze("--clickhouse", f"http://analyst:s3cr3t-pw@127.0.0.1:{port}")
    assert code == 2 and "s3cr3t-pw" not in err and "PROFILE_FIRST_CLICKHOUSE_PASSWORD" in err


def _server_url() -> str | None:
    """A clickhouse-server's HTTP interface on loopback: $PROFILE_FIRST_TEST_CLICKHOUSE_URL, else :8123 if it answers."""
    import urllib.request

    url = os.environ.get("PROFILE_FIRST_TEST_CLICKHOUSE_URL", "http://127.0.0.1:8123")
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/ping", timeout=1) as r:
            return url if r.status == 200 else None
    except OSError:
        return None


@pytest.fixture
def server_url() -> Iterator[str]:
    url = _server_url()
    if url is None:
        pytest.skip("no clickhouse-server on loopback (optional; see the README's Development section)")
    yield url


@pytest.mark.clickhouse_server
def test_clickhouse_server_over_http(server_url: str, workloads_store: Path) -> None:
    """The same spans copied into a real server's table (exporter DDL) give the chDB report."""
    import clickhouse_connect

    from urllib.parse import urlsplit

    parts = urlsplit(server_url)
    client = clickhouse_connect.get_client(host=parts.hostname, port=parts.port or 8123,
                                           username=os.environ.get("PROFILE_FIRST_CLICKHOUSE_USER", "default"),
                                           password=os.environ.get("PROFILE_FIRST_CLICKHOUSE_PASSWORD", ""))
    table = "profile_first_test.otel_traces"
    client.command("DROP DATABASE IF EXISTS profile_first_test")
    try:
        create_table(type("S", (), {"query": staticmethod(client.command)}), table)
        src = ChdbSource(str(workloads_store))
        try:
            import pyarrow as pa

            for batch in src.batches("SELECT * FROM otel.otel_traces", {}):
                client.insert_arrow(table, pa.Table.from_batches([batch]))
        finally:
            src.close()
        code, got, err = _analyze("--clickhouse", server_url, "--clickhouse-table", table)
        assert code == 0, err
        _assert_same_as_chdb(got, workloads_store)
    finally:
        client.command("DROP DATABASE IF EXISTS profile_first_test")


def _assert_same_as_chdb(got: dict, store: Path) -> None:
    code, want, err = _analyze("--clickhouse", f"chdb:{store}")
    assert code == 0, err
    validate_report(got)
    src = got["input"]["sources"][0]
    assert src["format"] == "clickhouse" and src["pushdown"]["engine"] == "clickhouse"
    assert src["pushdown"]["window_spans"] == want["input"]["sources"][0]["pushdown"]["window_spans"]
    assert _verdicts(got) == _verdicts(want)
    assert {k: (h["count"], h["p99_ms"], h["category"], [f["rule"] for f in h["findings"]])
            for k, h in _hotspots(got).items()} == \
        {k: (h["count"], h["p99_ms"], h["category"], [f["rule"] for f in h["findings"]])
         for k, h in _hotspots(want).items()}


@dataclass
class StandIn:
    url: str
    password: str
    password_file: Path
    proc: subprocess.Popen
    https_url: str
    ca: Path


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory, workloads: list[Path]) -> Iterator[StandIn]:
    """tests/clickhouse_http.py serving the workloads' table (filled again: a chDB directory is
    open in one process at a time) as user `analyst` with a password, on a free loopback port."""
    from tests.prom import make_tls
    from tests.workloads.servers import free_port

    root = tmp_path_factory.mktemp("standin")
    _fill(root / "db", workloads)
    password = "s3cr3t-" + os.urandom(6).hex()
    (root / "pw").write_text(password + "\n")
    tls = make_tls(root)
    port, https_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.clickhouse_http", "--path", str(root / "db"), "--port",
                             str(port), "--user", "analyst", "--password-file", str(root / "pw"),
                             "--https-port", str(https_port), "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)],
                            cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield StandIn(f"http://127.0.0.1:{port}", password, root / "pw", proc, f"https://127.0.0.1:{https_port}", tls.ca)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=30)


def test_over_http_through_clickhouse_connect(standin: StandIn, workloads_store: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`--clickhouse http://...` end to end: clickhouse-connect's requests (settings as URL
    parameters, `param_*` in a multipart body, ArrowStream, compressed responses) to the HTTP
    interface, the password from $PROFILE_FIRST_CLICKHOUSE_PASSWORD_FILE: the chDB report."""
    monkeypatch.setenv("PROFILE_FIRST_CLICKHOUSE_USER", "analyst")
    monkeypatch.setenv("PROFILE_FIRST_CLICKHOUSE_PASSWORD_FILE", str(standin.password_file))
    code, got, err = _analyze("--clickhouse", standin.url)
    assert code == 0, err
    _assert_same_as_chdb(got, workloads_store)


def test_over_https_with_a_ca_bundle(standin: StandIn, workloads_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS as for Prometheus: a certificate from a CA the system does not trust is refused (one
    line, exit 2) until --clickhouse-ca-bundle names that CA; --clickhouse-insecure-skip-verify
    is the opt-in way around it."""
    monkeypatch.setenv("PROFILE_FIRST_CLICKHOUSE_USER", "analyst")
    monkeypatch.setenv("PROFILE_FIRST_CLICKHOUSE_PASSWORD", standin.password)
    code, _, err = _analyze("--clickhouse", standin.https_url, "--clickhouse-timeout", "20")
    assert code == 2 and "certificate" in err.lower() and len(err.strip().splitlines()) == 1, err
    code, got, err = _analyze("--clickhouse", standin.https_url, "--clickhouse-ca-bundle", str(standin.ca))
    assert code == 0, err
    _assert_same_as_chdb(got, workloads_store)
    code, _, err = _analyze("--clickhouse", standin.https_url, "--clickhouse-insecure-skip-verify", "--service", "orders")
    assert code == 0, err


def test_over_http_a_wrong_password_and_a_server_error(standin: StandIn, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's errors are one line, exit 2, with the server's code and message and never
    the password: authentication refused (516), and a result over the configured
    `max_result_rows` refused by the engine (396), not cut."""
    monkeypatch.setenv("PROFILE_FIRST_CLICKHOUSE_USER", "analyst")
    monkeypatch.setenv("PROFILE_FIRST_CLICKHOUSE_PASSWORD", "not-" + standin.password)
    code, _, err = _analyze("--clickhouse", standin.url)
    assert code == 2 and "516" in err and "Authentication failed" in err, err
    assert standin.password not in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("PROFILE_FIRST_CLICKHOUSE_PASSWORD", standin.password)
    cfg = tmp_path / "ch.toml"
    cfg.write_text("[sources.clickhouse]\nmax_result_rows = 2\n")
    code, _, err = _analyze("--clickhouse", standin.url, "--config", str(cfg))
    assert code == 2 and "Limit for result exceeded" in err and "Traceback" not in err, err
    assert standin.password not in err and len(err.strip().splitlines()) == 1


def test_over_http_a_stalled_server_times_out(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that accepts the connection and never answers (stopped with SIGSTOP, for real):
    the run ends after about --clickhouse-timeout with one line saying so, exit 2."""
    monkeypatch.setenv("PROFILE_FIRST_CLICKHOUSE_USER", "analyst")
    monkeypatch.setenv("PROFILE_FIRST_CLICKHOUSE_PASSWORD", standin.password)
    os.kill(standin.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        code, _, err = _analyze("--clickhouse", standin.url, "--clickhouse-timeout", "2")
        took = time.monotonic() - t0
    finally:
        os.kill(standin.proc.pid, signal.SIGCONT)
    assert code == 2 and "timed out" in err.lower() and standin.url.split("//")[1] in err, err
    assert took < 30 and len(err.strip().splitlines()) == 1


def test_damaged_rows_are_counted_and_skipped(tmp_path: Path, orders_n_plus_one_jsonl: Path) -> None:
    """A span whose trace id is not hex is skipped (bad_ids) and one whose parent id is of the
    wrong length kept as a root (bad_parent_id), as the OTLP readers do; the rest reads whole."""
    store = _fill(tmp_path / "damaged", [orders_n_plus_one_jsonl])
    s = chdb_session.Session(str(store))
    try:
        s.query("INSERT INTO otel.otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, "
                "Duration, StatusCode) SELECT Timestamp, 'zz' || substring(TraceId, 3), SpanId, ParentSpanId, SpanName, "
                "SpanKind, ServiceName, Duration, StatusCode FROM otel.otel_traces WHERE ParentSpanId = '' LIMIT 1")
        s.query("INSERT INTO otel.otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, "
                "Duration, StatusCode) SELECT Timestamp, TraceId, '00000000000000aa', 'abc', 'orphan work', "
                "'SPAN_KIND_INTERNAL', ServiceName, Duration, StatusCode FROM otel.otel_traces "
                "WHERE ParentSpanId = '' ORDER BY TraceId LIMIT 1")
    finally:
        s.close()
    code, report, err = _analyze("--clickhouse", f"chdb:{store}")
    assert code == 0, err
    src = report["input"]["sources"][0]
    assert src["skipped"] == {"bad_ids": 1} and src["repaired"] == {"bad_parent_id": 1}
    assert report["input"]["spans"] == 336 + 1


def test_the_scheduled_report_reads_sources_clickhouse(tmp_path: Path, workloads_store: Path) -> None:
    """`profile-first report` with `[sources.clickhouse] url = "chdb:PATH"`: the team's report comes
    from the store, complete, with the same database verdict as `analyze`."""
    from tests.test_report import config, run, this_week

    cfg = config(tmp_path, f"""
        [window]
        end = "now"
        length = "1d"
        [sources.clickhouse]
        url = "chdb:{workloads_store}"
        [[team]]
        services = ["orders"]
        name = "orders-team"
    """)
    p = run("--config", cfg, "--no-history", "--format", "json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    report = json.loads((tmp_path / "reports" / this_week() / "orders-team.json").read_text())
    validate_report(report)
    assert report["completeness"]["complete"] is True
    (orders,) = report["services"]
    assert orders["verdict"]["cause"] == "database"
    assert report["input"]["sources"][0]["pushdown"]["engine"] == "chdb"


def test_the_window_is_applied_in_the_store(workloads_store: Path) -> None:
    """A window before any span: nothing is pulled, and the run says so (exit 2) instead of an empty report."""
    code, _, err = _analyze("--clickhouse", f"chdb:{workloads_store}", "--start", "2001-01-01T00:00:00Z",
                            "--end", "2001-01-02T00:00:00Z")
    assert code == 2 and "no spans in the window" in err


def test_a_missing_driver_says_how_to_install_it(tmp_path: Path) -> None:
    """Without chDB (hidden from the interpreter: it cannot be uninstalled for one test) the
    run stops with one line naming the extra to install, exit 2."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['chdb'] = None; from analyzer.cli import main; "
            f"main(['analyze', '--clickhouse', 'chdb:{tmp_path}'])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 2 and "pip install 'profile-first[clickhouse]'" in p.stderr
    assert "Traceback" not in p.stderr


def test_each_sampled_span_keeps_its_own_environment(tmp_path: Path, orders_n_plus_one_jsonl: Path) -> None:
    """The same service in production and staging (the staging copy with its own trace ids): the
    sampled spans take the resource of their service's entry span in their own trace, so a
    report over both environments reads each span under the right one, none under the other."""
    store = _fill(tmp_path / "envs", [orders_n_plus_one_jsonl])
    new_id = " || ".join(f"leftPad(lower(hex(cityHash64(TraceId, {i}))), 16, '0')" for i in (1, 2))
    s = chdb_session.Session(str(store))
    try:
        s.query("ALTER TABLE otel.otel_traces UPDATE ResourceAttributes = mapUpdate(ResourceAttributes, "
                "map('deployment.environment.name', 'production')) WHERE 1 SETTINGS mutations_sync = 1")
        s.query(f"INSERT INTO otel.otel_traces SELECT * REPLACE ({new_id} AS TraceId, mapUpdate(ResourceAttributes, "
                f"map('deployment.environment.name', 'staging')) AS ResourceAttributes) FROM otel.otel_traces")
        spans = int(str(s.query("SELECT count() FROM otel.otel_traces", "CSV")).strip())
    finally:
        s.close()
    p = subprocess.run([sys.executable, "-m", "analyzer", "report", "--clickhouse", f"chdb:{store}", "--end", "now",
                        "--window", "1d", "--no-history", "--format", "json", "--output-dir", str(tmp_path / "out"),
                        "--environment", "production", "--environment", "staging"], capture_output=True, text=True,
                       timeout=300,
                       cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 0, p.stderr
    (folder,) = (tmp_path / "out").iterdir()
    report = json.loads((folder / "report.json").read_text())
    assert report["environment_filter"]["by_environment"] == {"production": spans // 2, "staging": spans // 2}
