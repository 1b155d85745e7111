"""The fuzz corpus (tests/corpus/) through the command line: every hostile file is a counted skip
or one clear line with exit 2, never a traceback, and stdout and stderr stay valid UTF-8.

Each file is a small real SDK capture (examples/profile-cache-miss.otlp.jsonl, one trace) with one
kind of damage; `manifest.json` says what the damage is and what it must become: the exit code,
the spans read (when the damage leaves a known number) and the counters under `input`. Large
hostile inputs are made at run time in tests/test_robust_input.py rather than kept here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

CORPUS = Path(__file__).parent / "corpus"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
ROOT = Path(__file__).resolve().parents[1]


def _run(name: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--traces", str(CORPUS / name),
                           "--format", "json"], capture_output=True, cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.CompletedProcess]:
    # One process per file, a few at a time: start-up is most of each run.
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(MANIFEST, pool.map(_run, MANIFEST)))


def test_the_corpus_is_small_and_described():
    files = {p.name for p in CORPUS.iterdir()} - {"manifest.json"}
    assert files == set(MANIFEST)
    assert sum(p.stat().st_size for p in CORPUS.iterdir()) < 300_000
    assert all(e["what"] for e in MANIFEST.values())


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_hostile_file_is_counted_or_refused_in_one_line(runs, name):
    want = MANIFEST[name]
    run = runs[name]
    out, err = run.stdout.decode("utf-8"), run.stderr.decode("utf-8")  # strict: valid UTF-8 or it fails
    assert "Traceback" not in err and "Aborted" not in err
    assert run.returncode == want["exit"], err
    if want["exit"] == 2:
        (line,) = err.strip().splitlines()
        assert line.startswith("profile-first: error: ")
        for counter in want["skipped"]:  # the refusal names what was skipped
            assert counter in line
        return
    assert err == ""
    got = json.loads(out)["input"]
    if want["spans"] is not None:
        assert got["spans"] == want["spans"]
    else:
        assert got["spans"] > 0  # what came before the damage was read
    assert got["skipped"] == want["skipped"]
    for counter, n in want["repaired"].items():
        assert got["repaired"][counter] == n
    (source,) = got["sources"]
    if want["skipped"]:
        assert source["errors"], "damage is explained, not only counted"


def test_lone_surrogates_reach_no_output_as_invalid_utf8(runs):
    out = runs["lone-surrogate.jsonl"].stdout.decode("utf-8")
    report = json.loads(out)
    services = [s["service"] for s in report["services"]]
    assert services == ["profile\ufffd"]
    text = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--traces", str(CORPUS / "lone-surrogate.jsonl")],
                          capture_output=True, cwd=ROOT, timeout=120)
    assert text.returncode == 0
    assert "profile\ufffd" in text.stdout.decode("utf-8")
