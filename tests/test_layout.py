"""The house's shape: a short top level, no import cycle, and test and demo machinery kept out
of the product (the import graph read from the source, imports inside functions included)."""

from __future__ import annotations

import ast

import pytest

from .helpers.imports import PACKAGE, ROOT, SRC, imported_modules, module_file, module_name

MAX_TOP_MODULES = 10


def product_files():
    return sorted(PACKAGE.rglob("*.py"))


def graph() -> dict[str, set[str]]:
    """module -> the modules of kshd and kshd_world its import statements name."""
    files = product_files() + sorted((SRC / "kshd_world").rglob("*.py"))
    return {
        module_name(f): {m for m in imported_modules(f) if module_file(m) is not None}
        for f in files
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_at_most_ten_modules_at_the_top_of_the_package():
    """Code lives in folders by role; the top holds only what all of them share."""
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_TOP_MODULES, top


def test_no_import_cycle_between_modules():
    """No two modules import each other, directly or around a loop, not even from inside a
    function (an import moved into a function to dodge a cycle hides it, it does not end it)."""
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_loop_through_a_function_level_import():
    """The check itself: a loop of three, one edge of which would be a function's import."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_product_never_imports_the_demo_world():
    """The tiny and world models' builders, the samples and the demo are kshd_world's: only the
    `kshd` command (its tiny-models, samples, demo and --demo paths) may reach them."""
    reaching = sorted(
        name
        for name, targets in graph().items()
        if name.startswith("kshd.") and name != "kshd.cli"
        and any(t.split(".")[0] == "kshd_world" for t in targets)
    )  # fmt: skip
    assert reaching == []


@pytest.mark.parametrize("path", sorted((ROOT / "bench").glob("*.py")), ids=lambda p: p.name)
def test_benches_import_no_test_module(path):
    """A bench measures the product as a user runs it; shared helpers live in kshd_world."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not [n for n in names if n == "tests" or n.startswith("tests.")], names
