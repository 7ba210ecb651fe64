"""No import cycles among convlens modules.

The graph is read from the source with ``ast`` (not by importing), so a cycle that happens
to work in today's import order still fails here. An edge ``a -> b`` means module ``a``
imports module ``b`` (``from b import name``, ``import b``; a ``from pkg import sub`` of a
submodule goes to the submodule; imports under ``if TYPE_CHECKING`` do not run and are left
out).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: the kernel: low modules that must not sit in a cycle even through imports made inside
#: functions (the ones the issue named, and the homes of the shared helpers)
KERNEL = (
    "convlens.errors",
    "convlens.hashing",
    "convlens.blur",
    "convlens.gram",
    "convlens.layer_names",
    "convlens.hooks",
    "convlens.layers",
    "convlens.models.zoo",
    "convlens.models.adapters",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = {_module_name(p): p for p in (SRC / "convlens").rglob("*.py")}


def _owner(name: str) -> str | None:
    """The module a dotted name lives in (``convlens.layers.resolve_layer`` -> ``convlens.layers``)."""
    while name and name not in FILES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, *, inside_functions: bool) -> set[str]:
    path = FILES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(
                    _owner(a.name) or "" for a in node.names if a.name.startswith("convlens")
                )
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base.startswith("convlens"):
                    for alias in node.names:
                        full = f"{base}.{alias.name}"
                        found.add(full if full in FILES else _owner(base) or "")
            elif inside_functions or not isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            ):
                # module-level if/try/with/class bodies run at import; function bodies do not
                visit(list(ast.iter_child_nodes(node)))

    visit(list(ast.parse(path.read_text(encoding="utf-8")).body))
    found.discard("")
    found.discard(module)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_the_cycle_finder_finds_a_known_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_cycle_among_imports_that_run_at_import_time() -> None:
    graph = {m: _imports(m, inside_functions=False) for m in FILES}
    assert _cycles(graph) == []


def test_kernel_modules_are_in_no_cycle_even_through_imports_inside_functions() -> None:
    # the facade `convlens` (imported lazily for its version) is left out: it imports everything
    graph = {m: _imports(m, inside_functions=True) - {"convlens"} for m in FILES}
    tangled = {m for cycle in _cycles(graph) for m in cycle}
    assert tangled.isdisjoint(KERNEL), sorted(tangled & set(KERNEL))
    assert "convlens.layers" not in graph["convlens.hooks"]
    assert "convlens.models.zoo" not in graph["convlens.models.adapters"]


@pytest.mark.parametrize(
    "module",
    ["convlens.hooks", "convlens.layers", "convlens.models.adapters", "convlens.models.zoo"],
)
def test_each_former_cycle_member_imports_first_in_a_fresh_interpreter(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
