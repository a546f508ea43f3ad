"""Layering of ``src/lookalike``, read from the source with ``ast`` (nothing is imported).

* No cycle between its packages (``lookalike.models``, ``lookalike.training``, ...; top-level modules
  such as ``lookalike.index`` count as packages of their own). Imports inside functions count too:
  a lazy import hides a cycle from the interpreter, not from whoever has to change the code.
* The library (everything but the faces ``cli/``, ``web/`` and ``__main__``) never imports a face:
  the faces call the library, never the other way round.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "lookalike"
FACES = ("lookalike.cli", "lookalike.web", "lookalike.__main__")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}
    assert len(found) > 20, f"no sources under {SRC / PACKAGE}?"
    return found


def imported(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """``(module, line)`` for every ``lookalike`` module that ``name`` imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .metrics import x / from .. import y
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{alias.name}"
                yield (sub if sub in known else target), node.lineno


def node_of(module: str) -> str:
    """The package-level node: ``lookalike.models.trained`` -> ``lookalike.models``."""
    return ".".join(module.split(".")[:2])


def import_edges() -> dict[str, dict[str, list[str]]]:
    """``{package: {imported package: ["module:line", ...]}}`` for imports between different packages."""
    mods = modules()
    edges: dict[str, dict[str, list[str]]] = {}
    for name, path in mods.items():
        for target, line in imported(name, path, set(mods)):
            if target != PACKAGE and not target.startswith(PACKAGE + "."):
                continue
            src, dst = node_of(name), node_of(target)
            where = edges.setdefault(src, {}).setdefault(dst, []) if src != dst else []
            if f"{name}:{line}" not in where:
                where.append(f"{name}:{line}")
    return edges


def cycles(edges: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The graph's cycles as strongly connected components of two or more packages (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, {})):
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

    for start in sorted(edges):
        if start not in index:
            visit(start)
    return sorted(found)


def test_the_checker_sees_real_edges_and_finds_a_planted_cycle() -> None:
    edges = import_edges()
    assert "lookalike.models" in edges["lookalike.training"]
    assert "lookalike.evaluation" in edges["lookalike.training"]  # training's Recall@1 is eval's
    mods = modules()
    retrieval = "lookalike.evaluation.retrieval"  # `from .metrics import ...` resolves to the module
    assert "lookalike.evaluation.metrics" in {m for m, _ in imported(retrieval, mods[retrieval], set(mods))}
    planted = {"a": {"b": ["a.x:1"]}, "b": {"c": ["b.y:2"], "d": ["b.y:3"]}, "c": {"a": ["c.z:3"]}, "d": {}}
    assert cycles(planted) == [["a", "b", "c"]]


def test_no_import_cycle_between_packages() -> None:
    edges = import_edges()
    found = cycles(edges)
    lines = [
        f"{a} -> {b} ({', '.join(edges[a][b][:3])})"
        for component in found
        for a in component
        for b in component
        if b in edges.get(a, {})
    ]
    assert not found, "import cycles between packages " + str(found) + ":\n  " + "\n  ".join(lines)


def test_models_never_import_training() -> None:
    """Trained packages are loaded by ``lookalike.models.trained``; training only writes them."""
    assert "lookalike.training" not in import_edges().get("lookalike.models", {})


def test_library_never_imports_the_faces() -> None:
    offenders = [
        f"{dst} from {', '.join(where)}"
        for src, targets in import_edges().items()
        if not src.startswith(FACES)
        for dst, where in targets.items()
        if dst.startswith(FACES)
    ]
    assert not offenders, "the library imports the CLI/web faces:\n  " + "\n  ".join(offenders)
