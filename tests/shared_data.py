"""Where ../shared/data is: beside the checkout (CI's clone, /work/main), or beside the folder of
git worktrees (/work/wt/NAME)."""

from __future__ import annotations

from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]

SHARED_DATA = next((p / "shared" / "data" for p in _ROOT.parents if (p / "shared" / "data").is_dir()),
                   _ROOT.parent / "shared" / "data")
