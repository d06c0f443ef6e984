"""The package's layers point one way: no import cycles (lazy imports inside functions
included), and the modules that ff-analyze / ff-plot load never import torch when imported.

The import graph is read from the source with ``ast`` (nothing is imported), so a cycle that
only closes when some function runs is caught as well.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "flops_fit"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The package module that ``name`` (a module, or a module's attribute) refers to."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its source (top level or in a function)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from a.b import c` imports a.b.c when c is a module, else reads an attribute of a.b
                targets.update(f"{base}.{a.name}" for a in node.names)
        graph[name] = {t for t in (_resolve(t, modules) for t in targets if t.split(".")[0] == PACKAGE)
                       if t is not None and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [m0, m1, ..., m0], or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == GREY:
                return stack[stack.index(nxt):] + [nxt]
            if colour[nxt] == WHITE and (found := visit(nxt)):
                return found
        stack.pop()
        colour[node] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    # flops_fit.stages imports the training sweep only inside train(): a lazy edge
    assert any(m.startswith("flops_fit.training") for m in graph["flops_fit.stages"])
    assert "flops_fit.errors" in graph["flops_fit.artifacts"]


def test_no_import_cycles():
    graph, cycles = import_graph(), []
    while (cycle := find_cycle(graph)) is not None:  # every cycle, not just the first
        cycles.append(" -> ".join(cycle))
        graph[cycle[-2]].discard(cycle[-1])
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


@pytest.mark.parametrize("module", ["flops_fit.flops", "flops_fit.analysis", "flops_fit.plotting",
                                    "flops_fit.report", "flops_fit.training.config"])
def test_modules_that_must_not_load_torch(module):
    """ff-analyze and ff-plot must start without torch: importing these loads no torch."""
    code = f"import sys, {module}; sys.exit(3 if 'torch' in sys.modules else 0)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(SRC), "PATH": ""})
    assert proc.returncode == 0, f"importing {module} loaded torch" if proc.returncode == 3 else proc.stderr
