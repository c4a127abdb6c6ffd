"""Import graph of the convjax package: cycles and function-level imports.

    python tests/import_graph.py [-v]

Prints the number of import cycles among convjax modules (strongly connected groups of more
than one module, counting every ``import`` statement, also those inside functions) and the
number of function-level ``import`` statements (all of them, and those of convjax modules).
"""

from __future__ import annotations

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def modules(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
    """``{dotted module name: file}`` of every module of the convjax package."""
    out = {}
    for path in (root / "convjax").rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def graph(root: pathlib.Path = ROOT) -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """(edges between convjax modules, function-level imports as (module, line, text))."""
    mods = modules(root)

    def target(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    local: list[tuple[str, int, str]] = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        inner = {
            id(sub)
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for sub in ast.walk(node)
            if isinstance(sub, (ast.Import, ast.ImportFrom))
        }
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if id(node) in inner:
                local.append((mod, node.lineno, ast.unparse(node)))
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                names = []
            for name in names:
                if name.startswith("convjax"):
                    t = target(name)
                    if t and t != mod:
                        edges[mod].add(t)
    return edges, local


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def main() -> None:
    edges, local = graph()
    found = cycles(edges)
    print(f"import cycles among convjax modules: {len(found)}")
    for group in found:
        print("  " + " <-> ".join(group))
    own = [x for x in local if "convjax" in x[2]]
    print(f"function-level import statements: {len(local)} ({len(own)} of convjax modules)")
    if "-v" in sys.argv:
        for mod, line, text in local:
            print(f"  {mod}:{line}: {text}")


if __name__ == "__main__":
    main()
