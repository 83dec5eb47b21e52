"""The architecture, checked from the source: layers, import cycles and private names.

Layers, top to bottom: the app and CLI -> ``agent`` -> ``tools`` and ``evals`` -> ``core``. Every
``import`` counts, at module level or inside a function (a lazy import still ties two modules).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "tools", "evals", "agent")
# What each package may import from the project (besides itself).
ALLOWED = {"core": set(), "tools": {"core"}, "evals": {"core", "tools"},
           "agent": {"core", "tools", "evals"}}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """Return the project module that ``name`` refers to (a module or a name inside one)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """Return (imported module, imported name or None, line) for every project import."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name)
                if target:
                    found.append((target, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = _resolve(f"{base}.{alias.name}")
                if target == f"{base}.{alias.name}":  # a submodule
                    found.append((target, None, node.lineno))
                elif _resolve(base):
                    found.append((_resolve(base), alias.name, node.lineno))
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def test_the_scan_sees_the_project() -> None:
    # A scan that found nothing would pass every check below.
    assert {"core.lock", "tools.llm", "evals.pipeline", "agent.graph"} <= set(MODULES)
    assert sum(len(v) for v in GRAPH.values()) > 100


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_points_upward(package: str) -> None:
    wrong = [f"{m}:{line} imports {target}"
             for m, imports in GRAPH.items() if m.split(".")[0] == package
             for target, _, line in imports
             if target.split(".")[0] not in ALLOWED[package] | {package}]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    edges = {m: {t for t, _, _ in imports if t != m} for m, imports in GRAPH.items()}
    # A package's __init__ that re-exports a submodule is not a cycle with that submodule.
    for m in edges:
        edges[m] = {t for t in edges[m] if not (t.startswith(m + ".") and MODULES[m].name
                                                 == "__init__.py")}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_names_imported_from_another_module() -> None:
    wrong = [f"{m}:{line} imports {name} from {target}"
             for m, imports in GRAPH.items() for target, name, line in imports
             if name and name.startswith("_") and not name.startswith("__") and target != m]
    assert not wrong, "\n".join(wrong)


def test_no_code_after_return_or_raise() -> None:
    dead = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            body = getattr(node, "body", None)
            if isinstance(body, list):
                dead += [f"{module}:{stmt.lineno}" for stmt in body[:-1]
                         if isinstance(stmt, ast.Return | ast.Raise | ast.Continue | ast.Break)]
    assert not dead, dead
