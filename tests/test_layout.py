"""The layout and import direction of DESIGN.md: training → feed ← serving."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "feed": {"training", "serving", "fastapi", "mlflow", "uvicorn", "starlette"},
    "training": {"serving", "fastapi", "uvicorn"},
    "serving": {"training"},
}


def imported_roots(path: Path) -> set[str]:
    """Top-level module names a file imports."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package):
    offenders = {str(p.relative_to(REPO)): sorted(imported_roots(p) & FORBIDDEN[package])
                 for p in (REPO / package).rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_import_feed_is_light():
    code = ("import sys, feed, feed.errors, feed.schema; "
            "heavy = {'torch', 'faiss', 'mlflow', 'implicit', 'fastapi'} & set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_required_top_level_layout():
    for name in ("feed", "training", "serving", "data", "notebooks", "tests", "pyproject.toml", "README.md"):
        assert (REPO / name).exists(), name
    assert (REPO / "data" / "README.md").is_file() and any((REPO / "data" / "sample").iterdir())
