"""The house has no import circle: lit_ssl's modules import each other in one direction only.

The graph is read from the source with ``ast``: every ``import`` and ``from ... import``
anywhere in a file (inside functions too: a local import is still an arrow), except those
under ``if TYPE_CHECKING:`` (annotations only, never run). ``from lit_ssl.x import Name``
is an arrow to ``lit_ssl.x.Name`` when that is a module, else to ``lit_ssl.x``; a package is
its ``__init__.py``, and its re-exports are arrows to its submodules, so importing a class
through a package face that imports the importer back closes a circle too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lit_ssl"
# Sub-packages whose own circles are being untied elsewhere; empty this when they are.
EXCLUDED: tuple[str, ...] = ()


def _module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, a package standing for its ``__init__.py``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree`` except the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]))
            continue
        yield from _imports(node)


def _base(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    """The absolute module a ``from`` import reads from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    parts = name.split(".")
    keep = len(parts) - node.level + (1 if is_package else 0)
    return ".".join(parts[:keep] + ([node.module] if node.module else []))


def _targets(node: ast.Import | ast.ImportFrom, name: str, path: Path, known: set[str]):
    """The lit_ssl modules one import statement of module ``name`` points at."""
    if isinstance(node, ast.Import):
        candidates = [alias.name for alias in node.names]
    else:
        base = _base(node, name, path.name == "__init__.py")
        candidates = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
            for alias in node.names
        ]
    return {c for c in candidates if c in known and c != name}


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the lit_ssl modules it imports."""
    modules = _module_names(root)
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        graph[name] = set().union(*(_targets(n, name, path, known) for n in _imports(tree)))
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def _excluded(name: str) -> bool:
    return any(name == e or name.startswith(f"{e}.") for e in EXCLUDED)


def _describe(component: list[str], graph: dict[str, set[str]]) -> str:
    arrows = [f"  {a} -> {b}" for a in component for b in sorted(graph[a]) if b in component]
    return f"{len(component)} modules:\n" + "\n".join(arrows)


def test_no_import_circle():
    graph = import_graph()
    kept = {k: {v for v in vs if not _excluded(v)} for k, vs in graph.items() if not _excluded(k)}
    found = circles(kept)
    assert not found, "import circles in lit_ssl:\n" + "\n".join(_describe(c, kept) for c in found)


def test_the_reader_sees_circles(tmp_path):
    """The checker itself: local, relative and package-face imports are arrows; imports
    under ``if TYPE_CHECKING:`` are not."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from pkg.sub.b import B\n")
    (package / "a.py").write_text("def f():\n    from pkg.sub import B\n")
    (package / "sub" / "b.py").write_text("from ..a import f\nB = 1\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
    )
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.sub"}
    assert graph["pkg.sub"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.a"}
    assert graph["pkg.c"] == set()
    assert circles(graph) == [["pkg.a", "pkg.sub", "pkg.sub.b"]]


if __name__ == "__main__":  # print today's circles with their arrows
    GRAPH = import_graph()
    for component in circles(GRAPH):
        print(_describe(component, GRAPH))
