"""The import rules of ARCHITECTURE.md: arrows point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "hwgen"
FORBIDDEN = {
    "ir": {"torch", "amaranth", "hwgen.frontend", "hwgen.hw", "hwgen.steps"},
    "golden": {"torch", "amaranth", "hwgen.frontend", "hwgen.hw", "hwgen.steps"},
    "hw": {"torch", "hwgen.frontend", "hwgen.steps"},
    "data": {"torch", "amaranth", "hwgen.frontend", "hwgen.hw", "hwgen.steps"},
    "frontend": {"amaranth", "hwgen.hw", "hwgen.steps"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            for forbidden in FORBIDDEN[package]:
                if name == forbidden or name.startswith(forbidden + "."):
                    bad.append(f"{path.relative_to(ROOT.parent)} imports {name}")
    assert not bad, "\n".join(bad)


def test_ir_has_no_synthetic_dependency_on_golden_outside_synthetic():
    # synthetic.py calibrates with the golden ops by design; nothing else in ir may.
    offenders = [p.name for p in (ROOT / "ir").glob("*.py") if p.name != "synthetic.py"
                 and any(n.startswith("hwgen.golden") for n in _imports(p))]
    assert offenders == []


def test_ruff_finds_nothing():
    """The code lints clean (ruff, configured in pyproject.toml)."""
    import subprocess
    import sys

    ruff = Path(sys.executable).parent / "ruff"
    proc = subprocess.run([str(ruff), "check", "hwgen", "sim", "tests", "bench"], cwd=ROOT.parent,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
