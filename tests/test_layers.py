"""The import rules of the layers (README, Layout): arrows point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "hwgen"
# hwgen.steps (the commands) sits on top; nothing below it imports it. hwgen.report reads build folders with
# hwgen.steps.build's readers (load_build, read_report) and imports no other step.
STEPS = "hwgen.steps"
OTHER_STEPS = {"hwgen.steps.cli", "hwgen.steps.flow", "hwgen.steps.search"}
FORBIDDEN = {
    "ir": {"torch", "amaranth", "hwgen.frontend", "hwgen.golden", "hwgen.hw", "hwgen.tasks", "hwgen.report", STEPS},
    # the op table: numpy and the IR's types only (golden functions are pure NumPy)
    "ops": {"torch", "amaranth", "pandas", "hwgen.frontend", "hwgen.golden", "hwgen.hw", "hwgen.estimate",
            "hwgen.tasks", "hwgen.report", STEPS},
    "golden": {"torch", "amaranth", "hwgen.frontend", "hwgen.hw", "hwgen.tasks", "hwgen.report", STEPS},
    "hw": {"torch", "hwgen.frontend", "hwgen.tasks", "hwgen.report", STEPS},
    "data": {"torch", "amaranth", "hwgen.frontend", "hwgen.hw", "hwgen.tasks", "hwgen.report", STEPS},
    "host": {"torch", "amaranth", "pandas", "hwgen.frontend", "hwgen.hw", "hwgen.tasks", "hwgen.report", STEPS},
    "estimate": {"torch", "hwgen.frontend", "hwgen.tasks", "hwgen.report", STEPS},
    "codegen": {"torch", "hwgen.frontend", "hwgen.tasks", "hwgen.report", STEPS},
    "sim": {"torch", "hwgen.frontend", "hwgen.tasks", "hwgen.report", STEPS},
    "frontend": {"amaranth", "hwgen.hw", "hwgen.report", STEPS},
    # tasks: below the front end (which asks them for the loss and the head) and the report
    "tasks": {"amaranth", "hwgen.frontend", "hwgen.hw", "hwgen.report", STEPS},
    "report": {"torch", "hwgen.frontend", *OTHER_STEPS},
    # the quantized layer library and graph capture: torch, ir, ops, golden (and the torch-free
    # hwgen.accelerator it returns); not the reference model's front end, the hardware or the steps
    "nn": {"amaranth", "pandas", "hwgen.frontend", "hwgen.hw", "hwgen.estimate", "hwgen.codegen", "hwgen.sim",
           "hwgen.data", "hwgen.tasks", "hwgen.report", STEPS},
}
# imports at module level only: what importing the package loads (function-level imports load when called)
FORBIDDEN_AT_IMPORT = {
    "tasks": {"torch", "pandas", "hwgen.data"},  # the loss imports torch, the loaders pandas, when used
}
# single modules of the Python API (hwgen/NAME.py): never (FORBIDDEN), and not at module level
API_MODULES = {
    # the accelerator hwgen.load returns: torch-free; the build steps it runs load when called
    "accelerator": ({"torch", "amaranth", "pandas", "hwgen.frontend", "hwgen.nn", "hwgen.tasks", "hwgen.report"},
                    {STEPS, "hwgen.hw", "hwgen.estimate", "hwgen.sim", "hwgen.codegen"}),
    # import hwgen: nothing at module level (convert, load, Accelerator resolve lazily)
    "__init__": (set(), {"torch", "amaranth", "numpy", "hwgen"}),
}


class _ModuleLevel(ast.NodeVisitor):
    """The imports that run when the module is imported: not those inside functions."""

    def __init__(self) -> None:
        self.nodes: list[ast.AST] = []

    def visit_FunctionDef(self, node):  # noqa: N802 (ast.NodeVisitor's naming)
        pass

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node):  # noqa: N802
        self.nodes.append(node)

    visit_ImportFrom = visit_Import


def _imports(path: Path, module_level: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    if module_level:
        visitor = _ModuleLevel()
        visitor.visit(tree)
        nodes = visitor.nodes
    else:
        nodes = list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "hwgen":  # from hwgen import steps, tasks, ...
                names.update(f"hwgen.{a.name}" for a in node.names)
    return names


def _violations(package: str, rules: dict[str, set[str]], module_level: bool = False) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path, module_level):
            for forbidden in rules[package]:
                if name == forbidden or name.startswith(forbidden + "."):
                    bad.append(f"{path.relative_to(ROOT.parent)} imports {name}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports(package):
    bad = _violations(package, FORBIDDEN)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", sorted(FORBIDDEN_AT_IMPORT))
def test_layer_imports_at_import_time(package):
    bad = _violations(package, FORBIDDEN_AT_IMPORT, module_level=True)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", sorted(API_MODULES))
def test_api_module_imports(name):
    never, not_at_import = API_MODULES[name]
    path = ROOT / f"{name}.py"
    bad = [f"{path.name} imports {n}" for n in _imports(path) for f in never if n == f or n.startswith(f + ".")]
    bad += [f"{path.name} imports {n} at module level" for n in _imports(path, module_level=True)
            for f in not_at_import if n == f or n.startswith(f + ".")]
    assert not bad, "\n".join(bad)


def test_shared_base_imports_no_other_layer():
    """errors.py and progress.py are the base every layer uses: they import no other hwgen module."""
    for name in ("errors.py", "progress.py"):
        deps = {n for n in _imports(ROOT / name) if n.startswith("hwgen")}
        assert deps <= {"hwgen.errors"}, (name, deps)


def test_every_package_has_a_rule():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert packages - {"steps"} == set(FORBIDDEN)


def test_ruff_finds_nothing():
    """The code lints clean (ruff, configured in pyproject.toml)."""
    import subprocess
    import sys

    ruff = Path(sys.executable).parent / "ruff"
    proc = subprocess.run([str(ruff), "check", "hwgen", "sim", "tests", "bench"], cwd=ROOT.parent,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]


# ---- no import cycles between the files of hwgen/ ------------------------------------------------------------
def _module_names() -> dict[str, Path]:
    """Every module of hwgen/ by dotted name (a package by its __init__.py)."""
    names = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the hwgen modules it imports, at module level or inside functions. ``from hwgen.pkg import
    name`` depends on hwgen.pkg.name when that is a module, else on hwgen/pkg/__init__.py."""
    modules = _module_names()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                for a in node.names:
                    if f"{base}.{a.name}" in modules:
                        deps.add(f"{base}.{a.name}")
                    elif base in modules:
                        deps.add(base)
        graph[name] = deps - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a list of modules, the first repeated at the end) per strongly connected component of
    more than one module (Tarjan's algorithm, then a shortest path back within the component)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for comp in components:
        members, start = set(comp), comp[0]
        paths, queue = {start: [start]}, [start]
        while queue:  # breadth-first from start, within the component, back to start
            v = queue.pop(0)
            for w in sorted(graph[v] & members):
                if w == start:
                    queue = []
                    cycles.append(paths[v] + [start])
                    break
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
    return sorted(cycles)


def test_find_cycles_names_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]


def test_import_graph_reads_function_level_and_submodule_imports():
    graph = import_graph()
    assert "hwgen.steps.flow" in graph["hwgen.steps.cli"]  # `from hwgen.steps import flow` inside a function
    assert "hwgen.progress" in graph["hwgen.steps.build"]  # `from hwgen import progress`: the submodule
    assert graph["hwgen.host.quantize"] == {"hwgen.ir.types"}  # `from hwgen.ir.types import IntType`


def test_no_import_cycles():
    """No two files of hwgen/ import each other, directly or around a circle (function-level imports count:
    they still make the two modules depend on each other)."""
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
