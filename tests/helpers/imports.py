"""The project modules a module imports, directly or not, read from the source with ast.

Used by the layering tests (imports point down; dvc.yaml's code deps are exact). Importing a
submodule imports its packages' __init__.py too, so those count as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pipeline.qa import metrics
from pipeline.runtime.paths import PROJECT_ROOT

# Files a module loads without importing them: the metric scripts evaluate.load() reads.
LOADED_FILES = {
    "pipeline/qa/metrics/__init__.py": sorted(
        str(p.relative_to(PROJECT_ROOT)) for p in Path(metrics.__file__).parent.glob("*/*.py")
    ),
}


def module_file(module: str) -> str | None:
    """Repo-relative path of a pipeline module (or package __init__), None when not ours."""
    if module != "pipeline" and not module.startswith("pipeline."):
        return None
    base = PROJECT_ROOT / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return str(candidate.relative_to(PROJECT_ROOT))
    return None


def packages_of(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported_modules(path: str, top_level_only: bool = False) -> set[str]:
    """Project modules named in one file's import statements (with `from X import y`, y when
    it is a module). top_level_only: only imports at module level, not inside functions."""
    tree = ast.parse((PROJECT_ROOT / path).read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if module_file(name) is not None:
                found.add(name)
    return found


def function_level_imports(path: str) -> list[str]:
    """pipeline.* imports inside functions (the import graph should be visible at the top)."""
    return sorted(imported_modules(path) - imported_modules(path, top_level_only=True))


def closure(module: str) -> set[str]:
    """Repo-relative files of `module` and everything it imports, directly or not (plus the
    packages' __init__ files and the files LOADED_FILES adds)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        for candidate in [*packages_of(name), name]:
            path = module_file(candidate)
            if path is None or path in seen:
                continue
            seen.add(path)
            todo.extend(imported_modules(path))
    for path in list(seen):
        seen.update(LOADED_FILES.get(path, []))
    return seen
