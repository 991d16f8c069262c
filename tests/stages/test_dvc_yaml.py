"""dvc.yaml declares exactly what each stage reads: its code (every project module it imports,
directly or not, read from the source with ast and written by `make deps`), and the paths named
in pipeline.runtime.paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.runtime import paths
from pipeline.runtime.imports import closure
from pipeline.runtime.paths import DVC_FILE, OPEN_DVC_FILE, PROJECT_ROOT, dvc_stages, stage_code_deps

STAGES = dvc_stages()  # dvc.yaml's and open/dvc.yaml's


def dvc_deps(*args: str) -> subprocess.CompletedProcess:
    """`python -m pipeline.dvc_deps` as `make deps` runs it (a fresh process: no TensorFlow, ~0.3 s)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.dvc_deps", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_code_deps_are_the_modules_each_stage_imports_as_make_deps_writes_them():
    proc = dvc_deps("--check")
    assert proc.returncode == 0, proc.stderr.strip()  # its error line names the stages and `make deps`


def fresh_copy(tmp_path: Path) -> Path:
    """dvc.yaml with its code deps regenerated (the same file when it is fresh), in tmp_path."""
    copy = tmp_path / "dvc.yaml"
    copy.write_bytes(DVC_FILE.read_bytes())
    assert dvc_deps("--dvc-yaml", str(copy)).returncode == 0
    return copy


def test_make_deps_puts_back_a_deleted_dep_and_leaves_every_other_byte(tmp_path):
    copy = fresh_copy(tmp_path)
    fresh = copy.read_bytes()
    lines = fresh.decode().splitlines(keepends=True)
    gone = lines.index("      - pipeline/runtime/errors.py\n", lines.index("  tokenize:\n"))
    copy.write_text("".join(lines[:gone] + lines[gone + 1 :]))

    check = dvc_deps("--check", "--dvc-yaml", str(copy))
    assert check.returncode == 1
    assert check.stderr.splitlines() == [
        f"error: {copy}: the code deps of tokenize are not the modules it imports; "
        "run `make deps` (python -m pipeline.dvc_deps) to rewrite them"
    ]
    proc = dvc_deps("--dvc-yaml", str(copy))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{copy}: rewrote the code deps of tokenize\n"
    assert copy.read_bytes() == fresh


def test_make_deps_rewrites_only_code_deps_and_keeps_other_deps_and_comments_in_order(tmp_path):
    copy = fresh_copy(tmp_path)
    fresh = copy.read_text()
    deps = yaml.safe_load(fresh)["stages"]["download"]["deps"]
    block = "".join(f"      - {d}\n" for d in deps if d.startswith("pipeline/"))
    assert block in fresh
    scrambled = (
        "      - pipeline/predict.py\n"  # not imported by download
        "      - ${data.train_file}\n"  # a templated dep
        "      # why the next dep is here\n"
        "      - pipeline/runtime/config.py  # a comment on a code dep\n"
    )
    copy.write_text(fresh.replace(block, scrambled, 1))

    assert dvc_deps("--dvc-yaml", str(copy)).returncode == 0
    kept = block.replace("config.py\n", "config.py  # a comment on a code dep\n")
    assert copy.read_text() == fresh.replace(
        block, kept + "      - ${data.train_file}\n      # why the next dep is here\n", 1
    )


def test_the_generator_is_a_dev_command_that_no_stage_runs_or_imports():
    assert "dvc_deps" not in STAGES
    for stage in STAGES:
        assert not {"pipeline/dvc_deps.py", "pipeline/runtime/imports.py"} & closure(f"pipeline.{stage}"), stage


def test_every_stage_runs_its_own_module():
    assert {name: s["cmd"] for name, s in STAGES.items()} == {name: f"python -m pipeline.{name}" for name in STAGES}


def test_training_inputs_hash_reads_the_train_stages_code_deps_from_dvc_yaml():
    assert [str(p.relative_to(PROJECT_ROOT)) for p in stage_code_deps("train")] == [
        d for d in STAGES["train"]["deps"] if d.endswith(".py")
    ]


def test_data_and_output_paths_are_the_ones_pipeline_runtime_paths_names():
    def names(stage, kind):
        return {next(iter(e)) if isinstance(e, dict) else e for e in STAGES[stage].get(kind) or []}

    assert names("checkpoint", "outs") == {str(paths.CHECKPOINT_FILE)}
    assert names("download", "outs") == {str(paths.RAW_DIR)}
    assert names("negatives", "outs") == {str(paths.NEGATIVES_FILE)}
    assert names("tokenize", "outs") == {str(paths.TOKENIZED_DIR)}
    assert names("train", "outs") == {str(paths.TRAINED_DIR)}
    assert names("train", "metrics") == {str(paths.TRAIN_METRICS_FILE)}
    assert names("train", "plots") == {str(paths.STEPS_PLOT_FILE), str(paths.EPOCHS_PLOT_FILE)}
    assert names("evaluate", "outs") == {str(paths.PREDICTIONS_DIR)}
    assert names("evaluate", "metrics") == {str(paths.EVAL_METRICS_FILE), str(paths.SLICES_METRICS_FILE)}
    assert names("evaluate", "plots") == {
        str(paths.SCORES_PLOT_FILE),
        str(paths.SLICES_PLOT_FILE),
        str(paths.RISK_COVERAGE_PLOT_FILE),
    }
    assert names("export", "outs") == {str(paths.EXPORT_DIR)}
    assert names("index", "outs") == {str(paths.INDEX_DIR)}
    assert names("tune_retrieval", "outs") == {str(paths.RETRIEVAL_FILE)}
    assert names("evaluate_open", "metrics") == {str(paths.OPEN_METRICS_FILE)}
    assert names("evaluate_open", "plots") == {str(paths.RECALL_PLOT_FILE), str(paths.OPEN_F1_PLOT_FILE)}
    assert not names("evaluate_open", "outs")
    data_deps = {stage: {d for d in s["deps"] if not d.startswith("pipeline/")} for stage, s in STAGES.items()}
    assert data_deps == {
        "checkpoint": set(),  # model.checkpoint is a param; the stage records its content
        "download": {"${data.train_file}", "${data.validation_file}"},  # the data files by content
        # train paragraphs and questions, split with the checkpoint's tokenizer
        "negatives": {str(paths.RAW_DIR), str(paths.CHECKPOINT_FILE)},
        "tokenize": {str(paths.RAW_DIR), str(paths.NEGATIVES_FILE), str(paths.CHECKPOINT_FILE)},
        "train": {str(paths.TOKENIZED_DIR), str(paths.CHECKPOINT_FILE)},
        "evaluate": {str(paths.RAW_DIR), str(paths.TOKENIZED_DIR), str(paths.TRAINED_DIR)},
        # serves what evaluate scored; export.engine=int8 calibrates on train features and scores validation
        # and carries the passage index with the k and weight chosen for it
        "export": {
            str(paths.TRAINED_DIR),
            str(paths.PREDICTIONS_DIR),
            str(paths.RAW_DIR),
            str(paths.TOKENIZED_DIR),
            str(paths.INDEX_DIR),
            str(paths.RETRIEVAL_FILE),
        },
        "index": {"${retrieve.corpus}", str(paths.CHECKPOINT_FILE)},  # the corpus by content; the tokenizer
        "tune_retrieval": {str(paths.RAW_DIR), str(paths.TRAINED_DIR)},  # train questions and paragraphs
        "evaluate_open": {
            str(paths.RAW_DIR),
            str(paths.INDEX_DIR),
            str(paths.TRAINED_DIR),
            str(paths.RETRIEVAL_FILE),
            str(paths.PREDICTIONS_DIR),
        },
    }


def test_the_open_pipeline_runs_from_the_project_root_and_only_when_asked():
    """open/dvc.yaml's paths read like dvc.yaml's (wdir ..), and dvc.yaml does not depend on its outputs
    (else `dvc repro` would run it)."""
    open_stages = yaml.safe_load(OPEN_DVC_FILE.read_text())["stages"]
    assert {name: s.get("wdir") for name, s in open_stages.items()} == {"evaluate_open": ".."}
    main = yaml.safe_load(DVC_FILE.read_text())["stages"]
    open_outs = {
        next(iter(e)) if isinstance(e, dict) else e
        for s in open_stages.values()
        for kind in ("outs", "metrics", "plots")
        for e in s.get(kind) or []
    }
    assert not open_outs & {d for s in main.values() for d in s.get("deps") or []}
