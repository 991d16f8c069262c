"""The import graph points down: entry points (stages, commands, benchmarks) -> the MLflow model
adapter (pipeline.mlflow_model) -> the QA library (pipeline.qa) -> runtime helpers
(pipeline.runtime). Read from the source with ast."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from pipeline.runtime.imports import function_level_imports, imported_modules
from pipeline.runtime.paths import PROJECT_ROOT, dvc_stages

STAGES = tuple(dvc_stages())  # dvc.yaml and open/dvc.yaml name the stages
COMMANDS = ("predict", "evaluate_model", "promote", "launch", "dvc_deps", "report")
# The pyfunc PythonModel over the library: the export stage logs it, MLflow loads it.
ADAPTERS = {"pipeline.mlflow_model"}
ENTRY_POINTS = {f"pipeline.{name}" for name in STAGES + COMMANDS}
SOURCES = sorted(str(p.relative_to(PROJECT_ROOT)) for p in (PROJECT_ROOT / "pipeline").rglob("*.py"))
BENCHMARKS = sorted(str(p.relative_to(PROJECT_ROOT)) for p in (PROJECT_ROOT / "benchmarks").glob("*.py"))


def layer(module: str) -> str:
    if module.startswith("pipeline.runtime"):
        return "runtime"
    if module.startswith("pipeline.qa"):
        return "qa"
    if module in ADAPTERS:
        return "adapter"
    return "entry" if module in ENTRY_POINTS else "package"


@pytest.mark.parametrize("path", SOURCES)
def test_imports_point_down(path):
    module = path[:-3].replace("/", ".").removesuffix(".__init__")
    allowed = {
        "runtime": {"runtime"},
        "qa": {"qa", "runtime"},
        "adapter": {"qa", "runtime"},
        "entry": {"adapter", "qa", "runtime"},
        "package": set(),
    }[layer(module)]
    wrong = [m for m in imported_modules(path) if m != "pipeline" and layer(m) not in allowed]
    assert not wrong, f"{path} ({layer(module)}) imports {wrong}"


@pytest.mark.parametrize("path", SOURCES + BENCHMARKS)
def test_no_project_import_inside_a_function(path):
    assert function_level_imports(path) == []


@pytest.mark.parametrize("path", BENCHMARKS)
def test_benchmarks_import_only_the_library_runtime_and_the_course_reference(path):
    source = (PROJECT_ROOT / path).read_text()
    assert "conftest" not in source
    wrong = [m for m in imported_modules(path) if layer(m) not in ("adapter", "qa", "runtime") and m != "pipeline"]
    assert not wrong, f"{path} imports {wrong}"


def imported_names(tree: ast.AST) -> set[str]:
    """Every module an import statement can bind, with each of its packages: `import a.b.c` and
    `from a.b import c` both give {a, a.b, a.b.c} (c may be a module or a name in a.b)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            dotted = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            dotted = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in dotted:
            parts = name.split(".")
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return names


def test_imported_names_see_every_spelling_of_an_import():
    for source in (
        "from pipeline.runtime import paths",
        "import pipeline.runtime.paths",
        "from pipeline.runtime.paths import PARAMS_FILE",
        "import mlflow.tracking",
        "from mlflow import log_metric",
    ):
        assert imported_names(ast.parse(source)) & {"pipeline.runtime.paths", "mlflow"}, source
    assert (
        imported_names(ast.parse("from pipeline.runtime import errors")) & {"pipeline.runtime.paths", "mlflow"} == set()
    )


def test_the_library_knows_nothing_of_argparse_mlflow_or_dvc_paths():
    for path in (p for p in SOURCES if p.startswith("pipeline/qa/")):
        tree = ast.parse((PROJECT_ROOT / path).read_text())
        assert not imported_names(tree) & {
            "argparse",
            "mlflow",
            "dvc",
            "pipeline.runtime.paths",
            "pipeline.runtime.tracking",
        }, path
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body and isinstance(n.body[0], ast.Expr)
        }
        literals = [
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
        ]
        for stage_path in ("data/raw", "data/tokenized", "models/trained", "models/export", "params.yaml"):
            assert not [s for s in literals if stage_path in s], f"{path} names {stage_path}"


def test_a_bare_pytest_collects_without_import_errors():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "slow or not slow"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "error" not in proc.stdout.lower().split("tests collected")[-1]
