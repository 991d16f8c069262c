"""The project modules a module imports, directly or not, read from the source with ast.

One rule shared by `python -m pipeline.dvc_deps` (which writes each stage's code deps into
dvc.yaml) and the tests (dvc.yaml is fresh, imports point down). Importing a submodule imports
its packages' __init__.py too, so those count as well. Standard library only: the generator
must not pull in what it describes.
"""

from __future__ import annotations

import ast
from pathlib import Path

# The checkout these files belong to (pipeline.runtime.paths.PROJECT_ROOT, without its imports).
ROOT = Path(__file__).resolve().parents[2]
# A package that loads files without importing them (evaluate.load() reads the metric scripts
# beside pipeline/qa/metrics/__init__.py): those files are part of what it runs.
LOADING_PACKAGES = {"pipeline/qa/metrics/__init__.py": "*/*.py"}


def module_file(module: str) -> str | None:
    """Repo-relative path of a pipeline module (or package __init__), None when not ours."""
    if module != "pipeline" and not module.startswith("pipeline."):
        return None
    base = ROOT / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(ROOT).as_posix()
    return None


def packages_of(module: str) -> list[str]:
    """The packages Python imports before `module`: a.b.c -> [a, a.b]."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def loaded_files(path: str) -> list[str]:
    """Files the module at `path` loads without importing them (see LOADING_PACKAGES)."""
    pattern = LOADING_PACKAGES.get(path)
    if pattern is None:
        return []
    return sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / path).parent.glob(pattern))


def imported_modules(path: str, top_level_only: bool = False) -> set[str]:
    """Project modules named in one file's import statements (with `from X import y`, y when
    it is a module). top_level_only: only imports at module level, not inside functions."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
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
    packages' __init__ files and the files loaded_files adds)."""
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
        seen.update(loaded_files(path))
    return seen
