"""The packages stand in layers, and each imports only from the layers below it.

    analyzer.model            the shared model: span table, signals, findings, profiles
    collectors, heuristics    fill the model / read it and emit findings
    analyzer (the rest)       pipeline, verdict, reports, CLI: imports everything

A collector never depends on how the report is made, and a rule reads only the analysis
products it needs. The check reads every module's imports (including ones inside functions,
which the lazy CLI uses), so a new import that crosses a layer fails here, naming the line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What each package may import from `analyzer` besides `analyzer.model`.
ALLOWED = {
    "analyzer/model": set(),
    # The atomic file writer (capture's output) and the config schema that store settings extend.
    "collectors": {"analyzer.output", "analyzer.config_schema"},
    # The analysis products rules read: the critical-path breakdown, hot spots, their
    # classification, profile views, and the run's config.
    "heuristics": {"analyzer.breakdown", "analyzer.hotspots", "analyzer.classify",
                   "analyzer.profile_summary", "analyzer.config"},
}
# Packages a layer must not import at all.
FORBIDDEN = {
    "analyzer/model": ("collectors", "heuristics"),
    "collectors": ("heuristics",),
    "heuristics": ("collectors",),
}


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, relative imports resolved to absolute names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            # `from analyzer import x` imports the module analyzer.x when x is one.
            if base == "analyzer":
                found += [(node.lineno, f"analyzer.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, base))
    return found


def crossings(layer: str, root: Path = ROOT) -> list[str]:
    bad = []
    for path in sorted((root / layer).rglob("*.py")):
        for line, module in imported_modules(path, root):
            top = module.split(".")[0]
            where = f"{path.relative_to(root)}:{line} imports {module}"
            if top in FORBIDDEN[layer]:
                bad.append(where)
            elif top == "analyzer" and module not in ("analyzer", "analyzer.__version__"):
                inside_model = module == "analyzer.model" or module.startswith("analyzer.model.")
                if not inside_model and module not in ALLOWED[layer]:
                    bad.append(where)
    return bad


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_from_below(layer: str) -> None:
    assert (ROOT / layer).is_dir()
    assert crossings(layer) == []


def test_the_check_sees_a_crossing(tmp_path: Path) -> None:
    """A model module that imports the pipeline is reported, with its line."""
    (tmp_path / "analyzer" / "model").mkdir(parents=True)
    (tmp_path / "analyzer" / "model" / "probe.py").write_text(
        "def f():\n    from analyzer.pipeline import analyze\n    from . import spans\n    from .. import verdict\n")
    assert crossings("analyzer/model", tmp_path) == ["analyzer/model/probe.py:2 imports analyzer.pipeline",
                                                     "analyzer/model/probe.py:4 imports analyzer.verdict"]
