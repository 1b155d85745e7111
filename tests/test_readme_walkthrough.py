"""The README walk-through a new user follows (issue 11): what the demo starts is what the
README says, and the commands shown after the Quickstart run as written."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from analyzer.demo.run import DOWNSTREAMS, EXPECTED

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n## ", start + len(title))
    return README[start:end if end != -1 else None]


def test_the_quickstart_names_every_service_the_demo_starts():
    quickstart = " ".join(section("## Quickstart").split())
    for name in [*EXPECTED, *(d[0] for d in DOWNSTREAMS)]:
        assert f"`{name}`" in quickstart or f" {name} " in quickstart, name
    assert "five services" in quickstart and "three downstreams" in quickstart


def test_after_the_quickstart_how_to_run_profile_first_and_where_the_examples_are(tmp_path):
    after = section("### After the Quickstart")
    assert ". .venv/bin/activate" in after and "pipx install ." in after and "examples/" in after
    commands = [line.split("#")[0].strip() for line in after.splitlines() if line.startswith("profile-first ")]
    assert len(commands) >= 2
    for command in commands:
        args = shlex.split(command)[1:]
        args = [str(tmp_path / a) if a.endswith(".md") and "--output" in args[:args.index(a)] else a for a in args]
        p = subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True, text=True, cwd=ROOT,
                           timeout=120)
        assert p.returncode == 0, (command, p.stderr)
    assert re.search(r"^# profile-first report", (tmp_path / "report.md").read_text(), re.M)
