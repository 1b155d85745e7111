"""The config file: strict validation against one schema, its generated reference, and its examples."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import analyzer.config
from analyzer.config import ConfigError, load_config, read_config
from analyzer.config_docs import EXAMPLE, PAGE, page
from analyzer.config_schema import ROOT, Number, Table, TableArray, Text, validate, walk
from heuristics.registry import all_rules

ROOT_DIR = Path(__file__).resolve().parents[1]
RULES = {code: r.defaults for code, r in all_rules().items()}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True, text=True, cwd=ROOT_DIR,
                          timeout=120)


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "c.toml"
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return str(p)


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        read_config(write(tmp_path, text))
    return err.value.problems


def test_the_docstring_example_parses_and_sets_what_it_says(tmp_path):
    doc = inspect.getdoc(analyzer.config) or ""
    block = "\n".join(line[4:] for line in doc.splitlines() if line.startswith("    "))
    config = load_config(write(tmp_path, block))
    assert config.ignore == {"PF-NET003"}  # a top-level key, not part of [classify]
    assert config.classify.min_share == 0.30 and config.classify.margin == 0.10
    assert config.thresholds("PF-DB001", RULES["PF-DB001"], "x", "y")["min_repetitions"] == 5
    assert not config.enabled("PF-DB002", "reports", "GET /report/yearly")
    assert config.sections["prometheus"]["headers"] == {"X-Scope-OrgID": "tenant-1"}


def test_the_complete_example_loads_and_uses_every_table():
    config = load_config(str(EXAMPLE))
    used = set(config.sections) | {"classify", "ignore", "rules", "override"}
    assert used == set(ROOT.keys), f"examples/weekly.toml does not show {set(ROOT.keys) - used}"
    assert config.ignores_operation("GET /readyz") and not config.ignores_operation("GET /orders")


def test_the_reference_is_current_and_documents_every_key():
    assert PAGE.read_text(encoding="utf-8") == page(), "docs/config.md is stale: run `make docs`"
    text = PAGE.read_text(encoding="utf-8")
    for path, key in walk():
        name = path.rsplit(".", 1)[-1]
        assert f"`{name}`" in text or f"[{path}]" in text, f"{path} is not documented"
    for code, defaults in RULES.items():
        for name in defaults:
            assert f"| [{code}](rules/{code}.md) | `{name}` |" in text


# The bad values issue 10 found accepted silently, each with the key and the value it must name.
BAD_VALUES = [
    ("[classify]\nmin_share = nan", "classify.min_share = nan", "from 0 to 1"),
    ("[classify]\nmin_share = inf", "classify.min_share = inf", "from 0 to 1"),
    ("[classify]\nmargin = -0.1", "classify.margin = -0.1", "from 0 to 1"),
    ("[classify]\nmin_share = true", "classify.min_share = true", "number"),
    ('ignore = "PF-NET003"', 'ignore = "PF-NET003"', 'write ["PF-NET003"]'),
    ("[rewrite]\ncpu_speedup = 0", "rewrite.cpu_speedup = 0", "from 1"),
    ("[rewrite]\ncpu_speedup = -2.0", "rewrite.cpu_speedup = -2.0", "from 1"),
    ("[prometheus]\nstep = -5", "prometheus.step = -5", "above 0"),
    ('[prometheus]\nretries = "3"', 'prometheus.retries = "3"', "an integer"),
    ("[prometheus]\ntimeout = 0", "prometheus.timeout = 0", "above 0"),
    ('[rules."PF-DB001"]\nmin_repetitions = nan', "rules.PF-DB001.min_repetitions = nan", "at least 0"),
    ('[rules."PF-DB002"]\nmin_share = 1.5', "rules.PF-DB002.min_share = 1.5", "from 0 to 1"),
    ('[rules."PF-DB002"]\nmin_share = false', "rules.PF-DB002.min_share = false", "from 0 to 1"),
    ('[credentials]\nwebhook_url = "https://hooks.slack.com/services/T0/B0/x"', "credentials.webhook_url",
     "NAME of an environment variable"),
    ('[window]\nlength = "a week"', 'window.length = "a week"', "duration"),
    ('[outputs]\nformats = ["pdf"]', 'outputs.formats[0] = "pdf"', '"text", "json", "md", "html"'),
    ("[history]\nregression_pct = -10", "history.regression_pct = -10", "above 0"),
    ('[[team]]\nname = "a/b"\nservices = ["x"]', 'team[0].name = "a/b"', "letters, digits"),
]


@pytest.mark.parametrize("text,names,allowed", BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_bad_values_name_the_key_the_value_and_what_is_allowed(tmp_path, text, names, allowed):
    (problem,) = problems_of(tmp_path, text)
    assert problem.startswith(names) and allowed in problem, problem


def test_a_secret_written_where_its_variable_name_belongs_is_not_echoed(tmp_path):
    """Error lines end up in cron mail and CI logs: the mistaken secret must not travel with them."""
    (problem,) = problems_of(tmp_path, '[credentials]\nsmtp_password = "hunter2 s3cret!"')
    assert problem.startswith("credentials.smtp_password") and "NAME of an environment variable" in problem
    assert "hunter2" not in problem and "s3cret" not in problem


UNKNOWN_NAMES = [
    ("[clasify]\nmin_share = 0.3", "clasify: unknown key; did you mean 'classify'?"),
    ("[classify]\nmin_shares = 0.3", "classify.min_shares: unknown key; did you mean 'min_share'?"),
    ('[rules."PF-DB01"]\nmin_repetitions = 5', "rules.PF-DB01: unknown rule code; did you mean 'PF-DB001'?"),
    ('[rules."PF-DB001"]\nmin_repetition = 5',
     "rules.PF-DB001.min_repetition: unknown threshold of PF-DB001; did you mean 'min_repetitions'?"),
    ('ignore = ["PF-NET03"]', "ignore[0] = \"PF-NET03\": unknown rule code; did you mean 'PF-NET003'?"),
    ('[[override]]\nservice = "a"\n[override.rules."pf-db001"]\nmin_repetitions = 3',
     "override[0].rules.pf-db001: unknown rule code; did you mean 'PF-DB001'?"),
    ("[prometheus]\ntimout = 5", "prometheus.timout: unknown key; did you mean 'timeout'?"),
]


@pytest.mark.parametrize("text,expected", UNKNOWN_NAMES, ids=[u[1].split(":")[0] for u in UNKNOWN_NAMES])
def test_unknown_names_are_errors_with_a_did_you_mean(tmp_path, text, expected):
    problems = problems_of(tmp_path, text)
    assert problems[0].startswith(expected), problems


MALFORMED = {
    "not_utf8": b'[classify]\nmin_share = 0.3 # caf\xe9\n',
    "deep_array": b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "deep_inline_table": b"x = " + b"{a = " * 3000 + b"1" + b"}" * 3000 + b"\n",
    "table_is_a_number": b"classify = 5\n",
    "rules_is_an_array": b"rules = [1, 2]\n",
    "override_is_a_table": b"[override]\nservice = 'a'\n",
    "rule_thresholds_are_a_string": b'rules = { "PF-DB001" = "many" }\n',
    "selectors_is_a_list": b"[prometheus]\nselectors = ['a']\n",
    "not_toml": b"min_share: 0.3\n",
    "empty_key_table": b'[""]\n',
    "binary": bytes(range(256)),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
@pytest.mark.parametrize("command", [["config", "check"], ["analyze", "--traces", "examples/mixed.otlp.jsonl",
                                                           "--config"]])
def test_malformed_files_give_one_line_and_exit_2_from_every_command(tmp_path, name, command):
    path = tmp_path / "bad.toml"
    path.write_bytes(MALFORMED[name])
    p = run(*command, str(path))
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert lines and all(str(path) in line for line in lines), p.stderr
    if command[0] == "analyze":
        assert len(lines) == 1


def test_config_check_lists_every_problem_and_passes_a_good_file(tmp_path):
    bad = write(tmp_path, """
        [classify]
        min_share = nan
        margn = 0.1
        [prometheus]
        step = -5
    """)
    p = run("config", "check", bad)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 3
    good = run("config", "check", str(EXAMPLE))
    assert good.returncode == 0 and "ok" in good.stdout


def test_analyze_points_at_config_check_when_there_are_several_problems(tmp_path):
    bad = write(tmp_path, "[classify]\nmin_share = nan\nmargin = 2\n")
    p = run("analyze", "--traces", "examples/mixed.otlp.jsonl", "--config", bad)
    assert p.returncode == 2
    assert f"(and 1 more: `profile-first config check {bad}` lists them)" in p.stderr


def test_ignored_operations_leave_the_report_and_are_listed(tmp_path, orders_n_plus_one_jsonl):
    cfg = write(tmp_path, '[scope]\nignore_operations = ["GET /ord*"]\n')
    p = run("analyze", "--traces", str(orders_n_plus_one_jsonl), "--config", cfg, "--format", "json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    ops = [h["operation"] for s in report["services"] for h in s["hotspots"]]
    assert not [o for o in ops if o.startswith("GET /ord")]
    ignored = report["input"]["ignored_operations"]
    assert [i["operation"] for i in ignored if i["service"] == "orders"] == ["GET /orders"]
    assert ignored[0]["count"] > 0


# --- property-based: the validator against the schema ---------------------------------------------

def _number_keys() -> list[tuple[str, str, Number]]:
    out = []
    for path, key in walk():
        # tables with required keys (email, team, override) would add "missing" problems
        if isinstance(key.type, Number) and not path.startswith(("override", "team", "delivery.email")):
            table, name = path.rsplit(".", 1)
            out.append((table, name, key.type))
    return out


NUMBER_KEYS = _number_keys()
ANY_SCALAR = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                       st.text(max_size=8), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                                st.integers(), max_size=2))


@settings(max_examples=400, deadline=None)
@given(key=st.sampled_from(NUMBER_KEYS), value=ANY_SCALAR)
def test_a_number_key_accepts_exactly_finite_numbers_in_its_range(key, value):
    table, name, kind = key
    data: dict = {}
    node = data
    for part in table.split("."):
        node = node.setdefault(part, {})
    node[name] = value
    problems = validate(data, RULES)
    ok = (not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
          and (isinstance(value, int) or not kind.integer)
          and (kind.minimum is None or value > kind.minimum or (value == kind.minimum and not kind.above))
          and (kind.maximum is None or value <= kind.maximum))
    assert (problems == []) == ok, (data, problems)
    if problems:
        (problem,) = problems
        assert problem.startswith(f"{table}.{name} = ") and kind.allowed() in problem


@settings(max_examples=300, deadline=None)
@given(code=st.sampled_from(sorted(RULES)), name=st.text(min_size=1, max_size=20), value=ANY_SCALAR)
def test_rule_thresholds_accept_only_registered_names(code, name, value):
    problems = validate({"rules": {code: {name: value}}}, RULES)
    if name not in RULES[code]:
        assert len(problems) == 1 and "unknown threshold" in problems[0]
    elif problems:
        assert problems[0].startswith(f"rules.{code}.{name} = ")


TOML_VALUES = st.recursive(
    st.one_of(st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=12), inner, max_size=3)),
    max_leaves=12)
TABLE_NAMES = st.sampled_from([*ROOT.keys, "clasify", "rule", "PF-DB001"])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(TABLE_NAMES | st.text(max_size=8), TOML_VALUES, max_size=4))
def test_any_document_gives_problems_or_a_config_never_an_exception(data):
    problems = validate(data, RULES)
    assert all(isinstance(p, str) and "\n" not in p and len(p) < 400 for p in problems)
    if not problems:
        from analyzer.config import build

        build("x.toml", data)  # a document the schema accepts always builds


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_any_bytes_are_a_config_or_a_config_error(tmp_path, blob):
    path = tmp_path / "fuzz.toml"
    path.write_bytes(blob)
    try:
        read_config(str(path))
    except ConfigError as err:
        assert err.problems and all("\n" not in p for p in err.problems)


def test_every_table_and_choice_in_the_schema_is_reachable():
    tables = {path for path, key in walk() if isinstance(key.type, Table | TableArray)}
    assert {"classify", "prometheus", "sources", "scope", "window", "outputs", "history", "delivery.webhook",
            "delivery.email", "team", "override"} <= tables
    fmt = next(k for p, k in walk() if p == "outputs.formats")
    assert isinstance(fmt.type.item, Text) and set(fmt.type.item.choices) >= {"json", "md", "text"}


def test_the_prometheus_table_declares_exactly_the_collector_settings():
    from dataclasses import fields

    from collectors.prometheus import PromConfig

    assert set(ROOT.keys["prometheus"].type.keys) == {f.name for f in fields(PromConfig)}
