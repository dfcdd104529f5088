"""Dependencies point inward only: no two modules of virtainer/ import each other, directly or
round a longer loop. Every import counts, the ones inside functions and under TYPE_CHECKING too
(a lazy import hides a loop, it does not remove it). A package's __init__ stands for the package:
a module importing `virtainer.spec` depends on every module spec/__init__ re-exports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "virtainer"


def module_files() -> dict[str, Path]:
    files = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def import_graph() -> dict[str, set[str]]:
    files = module_files()

    def known(name: str) -> str:
        while name not in files:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {known(alias.name) for alias in node.names if alias.name.startswith("virtainer.")}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("virtainer"):
                base = str(node.module)
                imported |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else known(base)
                             for alias in node.names}  # fmt: skip
        graph[module] = imported - {module, "virtainer"}
    return graph


def loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph.get(module, ())):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = [stack.pop()]
            while component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_import_loops() -> None:
    assert loops(import_graph()) == []


def test_the_loop_finder_finds_a_loop() -> None:
    assert loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_graph_sees_lazy_imports() -> None:
    graph = import_graph()
    assert "virtainer.api.server" in graph["virtainer.api.commands"]  # imported inside cmd_serve
    assert "virtainer.hypervisor" in graph["virtainer.readiness"]
