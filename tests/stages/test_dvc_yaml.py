"""dvc.yaml declares exactly what each stage reads: its code (every project module it imports,
directly or not, read from the source with ast), and the paths named in pipeline.runtime.paths."""

from __future__ import annotations

import pytest
import yaml

from pipeline.runtime import paths
from pipeline.runtime.paths import PROJECT_ROOT, stage_code_deps
from tests.helpers.imports import closure

STAGES = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", list(STAGES))
def test_code_deps_are_exactly_the_modules_the_stage_imports(stage):
    declared = {d for d in STAGES[stage]["deps"] if d.startswith("pipeline/")}
    imported = closure(f"pipeline.{stage}")
    assert not imported - declared, f"{stage}: imports but does not declare {sorted(imported - declared)}"
    assert not declared - imported, f"{stage}: declares but does not import {sorted(declared - imported)}"


def test_every_stage_runs_its_own_module():
    assert {name: s["cmd"] for name, s in STAGES.items()} == {name: f"python -m pipeline.{name}" for name in STAGES}


def test_training_inputs_hash_reads_the_train_stages_code_deps_from_dvc_yaml():
    assert [str(p.relative_to(PROJECT_ROOT)) for p in stage_code_deps("train")] == [
        d for d in STAGES["train"]["deps"] if d.endswith(".py")
    ]


def test_data_and_output_paths_are_the_ones_pipeline_runtime_paths_names():
    def names(stage, kind):
        return {next(iter(e)) if isinstance(e, dict) else e for e in STAGES[stage].get(kind) or []}

    assert names("download", "outs") == {str(paths.RAW_DIR)}
    assert names("tokenize", "outs") == {str(paths.TOKENIZED_DIR)}
    assert names("train", "outs") == {str(paths.TRAINED_DIR)}
    assert names("train", "metrics") == {str(paths.TRAIN_METRICS_FILE)}
    assert names("train", "plots") == {str(paths.STEPS_PLOT_FILE), str(paths.EPOCHS_PLOT_FILE)}
    assert names("evaluate", "outs") == {str(paths.PREDICTIONS_DIR)}
    assert names("evaluate", "metrics") == {str(paths.EVAL_METRICS_FILE), str(paths.SLICES_METRICS_FILE)}
    assert names("evaluate", "plots") == {str(paths.SCORES_PLOT_FILE), str(paths.SLICES_PLOT_FILE),
                                          str(paths.RISK_COVERAGE_PLOT_FILE)}
    assert names("export", "outs") == {str(paths.EXPORT_DIR)}
    data_deps = {stage: {d for d in s["deps"] if not d.startswith("pipeline/")} for stage, s in STAGES.items()}
    assert data_deps == {
        "download": {"data/sample"},
        "tokenize": {str(paths.RAW_DIR)},
        "train": {str(paths.TOKENIZED_DIR)},
        "evaluate": {str(paths.RAW_DIR), str(paths.TOKENIZED_DIR), str(paths.TRAINED_DIR)},
        "export": {str(paths.TRAINED_DIR)},
    }
