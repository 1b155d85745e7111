"""What the report says, as a reader takes it (issue 11, issue 14 "Terminal and Markdown")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MIXED = ROOT / "examples" / "mixed.otlp.jsonl"  # orders (N+1) and pricing (in-process), no runtime metrics


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", "analyze", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_every_saving_names_its_base(orders_n_plus_one_jsonl):
    """The N+1 fix saves ms per GET /orders request (the hot spot's base); the ceiling's fix-first
    figure is per request to the service: two bases, each named, so they never read as a
    contradiction."""
    for fmt in ("md", "text"):
        out = re.sub(r"\s+", " ", analyze("--traces", str(orders_n_plus_one_jsonl), "--format", fmt).stdout)
        assert re.search(r"PF-DB001 on GET /orders saves [\d.]+ ms per GET /orders request", out)
        assert re.search(r"fixing the top cause first saves [\d.]+ ms \(\d+%\) per request to orders", out)
        assert re.search(r"saves [\d.]+ ms per GET /orders request", out.split("Fix first")[-1] if fmt == "md" else out)
        assert "ms/request" not in out
        assert not re.search(r"(?i)saves? (about )?[\d.]+ ms (less )?per request", out)  # nor do the rules' remedies
        assert re.search(r"Saves about [\d.]+ ms per GET /orders request", out)


@pytest.mark.parametrize("name,starts", [("r.markdown", "# profile-first report"), ("r.MD", "# profile-first report"),
                                         ("r.JSON", "{"), ("r.txt", "profile-first "), ("r.Text", "profile-first ")])
def test_output_extensions_are_understood_in_any_case(tmp_path, name, starts):
    p = analyze("--traces", str(MIXED), "--output", str(tmp_path / name))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / name).read_text().startswith(starts)


def test_an_unknown_output_extension_is_refused_not_written_as_text(tmp_path):
    p = analyze("--traces", str(MIXED), "--output", str(tmp_path / "r.pdf"))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "'.pdf'" in p.stderr and ".markdown (md)" in p.stderr and ".json (json)" in p.stderr and "--format" in p.stderr
    assert list(tmp_path.iterdir()) == []
    assert analyze("--traces", str(MIXED), "--output", str(tmp_path / "r.pdf"), "--format", "md").returncode == 0


def test_text_uses_the_terminal_width_and_states_units():
    """Under a terminal of 90 columns every line fits it; headers carry their units."""
    master, slave = os.openpty()
    p = subprocess.Popen([sys.executable, "-m", "analyzer", "analyze", "--traces", str(MIXED)], stdout=slave,
                         stderr=subprocess.PIPE, cwd=ROOT, env={**os.environ, "COLUMNS": "90", "NO_COLOR": "1"})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert p.wait(timeout=120) == 0
    os.close(master)
    out = re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode())
    lines = out.replace("\r\n", "\n").splitlines()
    assert max(len(line) for line in lines) <= 90
    assert max(len(line) for line in lines) > 80  # it used the width, not 80
    assert "p50 ms" in out and "requests" in out and "path, ms" in out
    assert "GET /orders/report" in " ".join(out.split())  # the operation is never cut with an ellipsis


def test_an_explanation_is_given_once_then_referred_to(tmp_path):
    """Both services of the mixed example lack runtime metrics: the ceiling's assumption is said
    for the first and referred to for the second; a fix-first finding is not described twice."""
    for fmt in ("md", "text"):
        out = " ".join(analyze("--traces", str(MIXED), "--format", fmt).stdout.split())
        assert out.count("so an upper bound") == 1
        assert "on the same basis as for orders above" in out
        assert out.count("runs 20× per request one after another") == 1  # in fix first, not again below
        assert "fix first #1 above" in out


def test_a_database_fix_for_a_caching_cause_says_why():
    """`profile` GET /profile/{id}: 80% of its time is cache misses falling through to a slow
    SELECT; the biggest saving is the slow statement (PF-DB002). The reason says why a database
    rule is the first fix of a caching cause."""
    from analyzer.classify import ClassifyConfig
    from analyzer.verdict import NOT_RECOMMENDED, HotspotResult, decide

    hot = HotspotResult("GET /profile/{id}", 5000.0, 0.1, "caching", {"caching": 0.8, "database": 0.1}, [])
    fix = [{"rule": "PF-DB002", "operation": "GET /profile/{id}", "saving_ms_per_request": 31.0}]
    v = decide("profile", "python", [hot], ClassifyConfig(), False, None, fix)
    assert (v.rust_rewrite, v.cause) == (NOT_RECOMMENDED, "caching")
    assert "PF-DB002 on GET /profile/{id} saves 31.0 ms per GET /profile/{id} request." in v.reason
    assert "the miss path is the database call" in v.reason
    cache_fix = [{"rule": "PF-CACHE001", "operation": "GET /profile/{id}", "saving_ms_per_request": 31.0}]
    assert "miss path" not in decide("profile", "python", [hot], ClassifyConfig(), False, None, cache_fix).reason
