"""Every directory and file the DVC pipeline reads or writes, named once.

Output paths are relative to the working directory, the repo root when DVC runs a stage
(the stage's wdir). dvc.yaml names the same paths; tests/stages checks that the
two agree, and `make deps` (pipeline.dvc_deps) writes each stage's code deps there.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.runtime.errors import PipelineError

PARAMS_FILE = Path("params.yaml")
# The checkout this code runs from (a DVC queue worker's temp copy runs its own copy).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DVC_FILE = PROJECT_ROOT / "dvc.yaml"
# The open-domain evaluation's own pipeline file (its wdir is the project root), left out of
# `dvc repro` / `dvc exp run`: `dvc repro open/dvc.yaml`.
OPEN_DVC_FILE = PROJECT_ROOT / "open" / "dvc.yaml"
DVC_FILES = (DVC_FILE, OPEN_DVC_FILE)

RAW_DIR = Path("data/raw")
TOKENIZED_DIR = Path("data/tokenized")
# Retrieved train passages without the answer, trained on as no-answer examples
# (retrieve.train_negatives; an empty list at 0).
NEGATIVES_FILE = Path("data/negatives.json")
TRAINED_DIR = Path("models/trained")
EXPORT_DIR = Path("models/export")
PREDICTIONS_DIR = Path("predictions")
# Retrieve, then read: the passage index, and the k and weight chosen on train questions.
INDEX_DIR = Path("models/index")
RETRIEVAL_FILE = Path("models/retrieval.json")
# The checkpoint stage's record of model.checkpoint's content (tokenize and train depend on it).
CHECKPOINT_FILE = Path("models/checkpoint.json")

TRAIN_METRICS_FILE = Path("metrics/train.json")
EVAL_METRICS_FILE = Path("metrics/eval.json")
SLICES_METRICS_FILE = Path("metrics/slices.json")
OPEN_METRICS_FILE = Path("metrics/open.json")
TRAIN_PLOTS_DIR = Path("plots/train")
STEPS_PLOT_FILE = TRAIN_PLOTS_DIR / "steps.csv"
EPOCHS_PLOT_FILE = TRAIN_PLOTS_DIR / "epochs.csv"
EVAL_PLOTS_DIR = Path("plots/eval")
SCORES_PLOT_FILE = EVAL_PLOTS_DIR / "scores.json"
SLICES_PLOT_FILE = EVAL_PLOTS_DIR / "slices.json"
RISK_COVERAGE_PLOT_FILE = EVAL_PLOTS_DIR / "risk_coverage.csv"
OPEN_PLOTS_DIR = Path("plots/open")
RECALL_PLOT_FILE = OPEN_PLOTS_DIR / "recall.csv"
OPEN_F1_PLOT_FILE = OPEN_PLOTS_DIR / "f1.csv"

# Resumable training backups (gitignored, outside every DVC output), one directory per set of
# training inputs, under the repo root: <repo>/.train_backup/<inputs hash>/.
TRAIN_BACKUP_DIR_NAME = ".train_backup"

# Written inside the data/raw and data/tokenized outputs: counts per split.
SUMMARY_FILE_NAME = "summary.json"
# In each model snapshot of `python -m pipeline.train --snapshots DIR`: step, epoch, training seconds so far.
SNAPSHOT_FILE_NAME = "snapshot.json"
# Written inside data/raw: validation contexts and questions that also occur in train.
OVERLAP_FILE_NAME = "overlap.json"


def dvc_stages(root: Path = PROJECT_ROOT) -> dict[str, dict]:
    """Every stage of the project's pipeline files (dvc.yaml, then open/dvc.yaml) by name."""
    stages: dict[str, dict] = {}
    for dvc_file in DVC_FILES:
        stages.update(yaml.safe_load((root / dvc_file.relative_to(PROJECT_ROOT)).read_text(encoding="utf-8"))["stages"])
    return stages


def stage_code_deps(stage: str, dvc_file: Path = DVC_FILE) -> list[Path]:
    """The Python files a stage declares as deps in dvc.yaml (its code, as DVC hashes it)."""
    try:
        stages = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))["stages"]
        deps = stages[stage]["deps"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as err:
        raise PipelineError(f"{dvc_file}: cannot read the deps of stage '{stage}' ({err})") from None
    return [dvc_file.parent / d for d in deps if str(d).endswith(".py")]


def require_output(path: Path, marker: str | None, what: str) -> None:
    """Another stage's output this stage reads is there (the file `path`, or with `marker` a
    directory holding that file), or one error line naming it and the `dvc repro` that makes it
    (the stage whose outs hold it in dvc.yaml)."""
    if (path if marker is None else path / marker).is_file():
        return

    def out_paths(stage: dict) -> list[str]:
        return [o if isinstance(o, str) else next(iter(o)) for o in stage.get("outs", [])]

    try:
        producers = [name for name, stage in dvc_stages().items() if str(path) in out_paths(stage)]
    except (OSError, KeyError, TypeError, AttributeError, yaml.YAMLError):  # no readable dvc.yaml: name no stage
        producers = []
    fix = f"`dvc repro {producers[0]}`" if producers else "`dvc repro`"
    raise PipelineError(f"{path}: no {what}; run {fix} to build it")
