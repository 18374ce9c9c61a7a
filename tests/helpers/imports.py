"""The import graph of `kshd` and `kshd_world`, read from the source: every import statement,
functions included, so nothing hides an edge (the DVC deps and the layout tests walk it)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = SRC / "kshd"


def module_file(name: str) -> Path | None:
    """The file of a `kshd` (or demo world) module or package, or None (a name inside a module,
    or another package)."""
    if name.split(".")[0] not in ("kshd", "kshd_world"):
        return None
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement anywhere in the file names (functions included)."""
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # a submodule, or a name defined in `base`
                sub = f"{base}.{alias.name}"
                found.add(sub if module_file(sub) else base)
    return found


def parent_packages(name: str) -> list[str]:
    """`kshd.a.b` runs `kshd/__init__.py` and `kshd/a/__init__.py` first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def has_code(init: Path) -> bool:
    """An `__init__.py` matters when it holds more than a docstring and literal constants."""
    for stmt in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(stmt, ast.Expr | ast.Assign) and isinstance(stmt.value, ast.Constant):
            continue
        return True
    return False


def reached_files(entry_points: list[Path]) -> set[Path]:
    """The `kshd` files the entry points import, transitively."""
    todo = [module_name(p) for p in entry_points]
    seen: set[str] = set()
    files: set[Path] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is None:
            continue
        files.add(path)
        todo.extend(imported_modules(path))
        for parent in parent_packages(name):  # implicit: counts only if it runs code
            init = module_file(parent)
            if init is not None and has_code(init):
                todo.append(parent)
    return files
