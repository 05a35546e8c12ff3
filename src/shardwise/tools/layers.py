"""Check the package's import graph against its declared layers.

Every top-level name under shardwise (a module file or a subpackage) sits in one layer of LAYERS,
lowest first. A module may import from its own layer or a lower one, never a higher one; in a layer
listed in INDEPENDENT (the strategy families) two different packages may not import each other.
Every import counts, deferred ones inside functions included, except those under `if TYPE_CHECKING:`.
The module graph must also be free of cycles. A module whose top-level name is in no layer fails too,
so a new package has to be placed.

Run as `python -m shardwise.tools.layers`; sources are parsed with `ast`, nothing is imported.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

Graph = dict[str, set[str]]

# Lowest first. "__init__" and "__main__" stand for the package root's own modules.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "checks", "paths", "vocab", "flat"),        # L0 foundation
    ("runtime", "comm", "models", "data"),                 # L1
    ("strategy", "compress"),                              # L2 strategy base, gradient compressors
    ("ddp", "zero", "ps", "localsgd", "pipeline", "tensor_parallel"),  # L3 strategy families
    ("mesh", "api", "checkpoint", "plan", "convex", "testing"),  # L4 (mesh composes L3 families)
    ("train", "bench", "federated"),                       # L5
    ("cli", "tools", "__init__", "__main__"),              # L6
)
INDEPENDENT: frozenset[int] = frozenset({3})  # layers whose packages may not import one another


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package at `root` (named root.name)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
            or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """All import statements under `node`, at any depth, skipping `if TYPE_CHECKING:` bodies."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [node]
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        children: list[ast.AST] = list(node.orelse)
    else:
        children = list(ast.iter_child_nodes(node))
    return [found for child in children for found in _imports(child)]


def resolve(stmt: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The modules one import statement in `module` depends on (any package, absolute names).

    `from X import a` depends on `X.a` when that is a module, else on `X` (a is an attribute of X).
    """
    if isinstance(stmt, ast.Import):
        return {alias.name for alias in stmt.names}
    if stmt.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base_parts = package[:len(package) - (stmt.level - 1)]
        base = ".".join(base_parts + ([stmt.module] if stmt.module else []))
    else:
        base = stmt.module or ""
    return {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in stmt.names}


def import_graph(root: Path) -> Graph:
    """Module -> the modules of the same package it imports (self-imports dropped)."""
    files = module_names(root)
    graph: Graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = set()
        for stmt in _imports(tree):
            targets |= resolve(stmt, module, path.name == "__init__.py", set(files))
        graph[module] = {t for t in targets if t.split(".")[0] == root.name and t != module}
    return graph


def top_name(module: str) -> str:
    """The top-level name a module belongs to: `pkg.ps.join` -> `ps`; `pkg` -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(module: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> int | None:
    name = top_name(module)
    return next((i for i, names in enumerate(layers) if name in names), None)


def layer_violations(graph: Graph, layers: tuple[tuple[str, ...], ...] = LAYERS,
                     independent: frozenset[int] = INDEPENDENT) -> list[str]:
    """Undeclared modules, upward imports and imports between independent packages of one layer."""
    found = [f"undeclared: {m} (top-level name {top_name(m)!r} is in no layer)"
             for m in sorted(graph) if layer_of(m, layers) is None]
    for source in sorted(graph):
        for target in sorted(graph[source]):
            low, high = layer_of(source, layers), layer_of(target, layers)
            if low is None or high is None or top_name(source) == top_name(target):
                continue
            where = f"{source} (L{low}) imports {target} (L{high})"
            if high > low:
                found.append(f"upward: {where}")
            elif high == low and low in independent:
                found.append(f"same layer: {where}; {', '.join(layers[low])} are independent")
    return found


def _components(graph: Graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while (top := stack.pop()) != node:
                component.append(top)
            component.append(node)
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _cycles_through(graph: Graph, start: str, allowed: set[str]) -> list[list[str]]:
    """Elementary cycles through `start` that visit only `allowed` modules, by depth-first search."""
    found: list[list[str]] = []
    path = [start]

    def walk(node: str) -> None:
        for nxt in sorted(graph[node] & allowed):
            if nxt == start:
                found.append([*path, start])
            elif nxt not in path:
                path.append(nxt)
                walk(nxt)
                path.pop()

    walk(start)
    return found


def cycles(graph: Graph) -> list[list[str]]:
    """Every elementary cycle once, as [a, b, ..., a], starting at its smallest module."""
    found: list[list[str]] = []
    for component in _components(graph):
        for start in component:  # each cycle is found from its smallest member only
            found += _cycles_through(graph, start, {m for m in component if m >= start})
    return found


def main() -> int:
    import shardwise

    graph = import_graph(Path(shardwise.__file__).parent)
    findings = layer_violations(graph) + [f"cycle: {' -> '.join(c)}" for c in cycles(graph)]
    for line in findings:
        print(line)
    if findings:
        return 1
    edges = sum(len(targets) for targets in graph.values())
    order = " < ".join(",".join(names) for names in LAYERS)
    print(f"ok: {len(graph)} modules, {edges} imports, layers {order}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
