"""Stage 5, export: models/trained/ -> models/export/ (SavedModel + HF model + inference settings).

    python -m pipeline.export [--params params.yaml]

The layout is pipeline.qa.serving's. The windows come from the trained model's own record
(qa_windows.json), checked against params.yaml; the SQuAD v2.0 null threshold is recorded, so
pipeline.predict answers "" by the same rule as the evaluate stage.

MLflow (a record, not a DVC output: nothing is written into the workspace): the export is
logged as a pyfunc model (pipeline.mlflow_model) on the training run, with the evaluate
stage's answer settings (n_best, max_answer_length, the null threshold) as its defaults, and
registered as a new version of mlflow.registered_model_name with the alias `candidate`,
tagged with the git commit, the DVC experiment name and the evaluation of its own answers:
the stage depends on predictions/ and on those params, so an evaluate-only change registers
a new version whose F1 is the F1 of what it serves (pipeline.runtime.registry).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline import mlflow_model
from pipeline.qa.modeling import load_qa_model, load_tokenizer, read_windows
from pipeline.qa.serving import save_export
from pipeline.runtime import registry, tracking
from pipeline.runtime.config import PipelineConfig, stage_config
from pipeline.runtime.errors import PipelineError, stage_entry_point
from pipeline.runtime.files import atomic_output_dir, read_json
from pipeline.runtime.lineage import (
    EVALUATION_FILE_NAME,
    answer_settings,
    check_built_with,
    check_content_inputs,
    check_model_windows,
    read_evaluation,
)
from pipeline.runtime.paths import EXPORT_DIR, PREDICTIONS_DIR, TRAINED_DIR

SERVED_PRECISION = "float32"  # the SavedModel holds the trained float32 weights


def export(
    cfg: PipelineConfig,
    trained_dir: Path = TRAINED_DIR,
    out_dir: Path = EXPORT_DIR,
    predictions_dir: Path = PREDICTIONS_DIR,
) -> dict[str, Any]:
    windows, evaluation, served = check_inputs(cfg, trained_dir, predictions_dir)
    tracking.check_server(tracking.tracking_uri())  # a down server stops us before any work
    settings = serving_settings(cfg, windows)
    with atomic_output_dir(out_dir) as tmp:
        save_export(load_qa_model(str(trained_dir)), load_tokenizer(str(trained_dir)), settings, tmp)
    run_file = trained_dir / tracking.RUN_FILE_NAME
    if run_file.is_file():
        log_export(cfg, read_json(run_file)["run_id"], out_dir, registry.evaluation_tags(evaluation, served))
    return settings


def check_inputs(cfg: PipelineConfig, trained_dir: Path, predictions_dir: Path) -> tuple[dict, dict, dict]:
    """The model was trained on these windows and scored (predictions/evaluation.json) with the
    settings the export serves. Returns (its windows, the evaluation, the served answer settings)."""
    if not (trained_dir / "config.json").is_file():
        raise PipelineError(f"{trained_dir}: no trained model; run the train stage first")
    windows = read_windows(trained_dir)
    if windows is None:
        raise PipelineError(
            f"{trained_dir}: no qa_windows.json (trained before windows were recorded); "
            "rerun training with `dvc repro -f train`"
        )
    check_model_windows(windows, cfg, trained_dir)
    evaluation = read_evaluation(predictions_dir)
    served = answer_settings(cfg, SERVED_PRECISION)
    # A concurrent change of params.yaml since the evaluate stage ran (its precision may differ:
    # registry.evaluation_tags then leaves the version without scores).
    check_built_with(
        {k: v for k, v in evaluation["answer_settings"].items() if k != "precision"},
        served,
        predictions_dir / EVALUATION_FILE_NAME,
    )
    check_content_inputs(evaluation, predictions_dir / EVALUATION_FILE_NAME, trained_dir)  # scored = exported
    return windows, evaluation, served


def serving_settings(cfg: PipelineConfig, windows: dict) -> dict[str, Any]:
    """inference.json: the windows the model was trained on and, for SQuAD v2.0 models (which may
    answer "no answer"), the null rule pipeline.predict applies as the evaluate stage does."""
    return {
        "max_length": windows["max_length"],
        "stride": windows["stride"],
        "checkpoint": windows["checkpoint"],
        "version_2_with_negative": windows["version_2_with_negative"],
        "null_score_diff_threshold": cfg.evaluate.null_score_diff_threshold,
    }


def log_export(cfg: PipelineConfig, run_id: str, export_dir: Path, evaluation_tags: dict[str, str]) -> str | None:
    """Log the export as a pyfunc model on the training run and register it; returns the
    registered version (None when the run is not in this store)."""
    import mlflow

    client, _ = tracking.client_for(cfg.mlflow.experiment_name)
    run = tracking.find_run(client, run_id)
    if run is None:
        print(f"note: MLflow run {run_id} is not in {tracking.tracking_uri()}; export not logged")
        return None
    ev = cfg.evaluate
    with tempfile.TemporaryDirectory() as scratch:
        kwargs = mlflow_model.model_kwargs(
            export_dir,
            Path(scratch),
            mlflow_model.pip_requirements(),
            ev.n_best,
            ev.max_answer_length,
            ev.batch_size,
            cfg.mlflow.max_context_chars,
        )
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(name="qa-model", **kwargs)
    client.set_tag(run_id, "exported", "true")
    tags = {k: v for k, v in tracking.git_tags().items() if k in ("git_commit", "git_dirty")}
    tags.update(
        {
            "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
            registry.TRAINING_RUN_TAG: run_id,
            "model_id": info.model_id,
            **evaluation_tags,
            **tracking.dvc_stage_tags(),
        }
    )
    # The run holding the evaluation, when it is in this store (a record, not an input).
    latest_eval = tracking.find_run(client, run.data.tags.get(tracking.LATEST_EVAL_TAG) or run_id)
    if latest_eval is not None and latest_eval.data.tags.get(tracking.EVAL_DATA_DIGEST_TAG) == evaluation_tags.get(
        registry.EVAL_DIGEST_TAG
    ):
        tags[registry.EVAL_RUN_TAG] = latest_eval.info.run_id
    version = registry.register(client, info.model_uri, cfg.mlflow.registered_model_name, tags)
    print(
        f"MLflow model {info.model_uri} logged on run {run_id}; registered as "
        f"{cfg.mlflow.registered_model_name} version {version.version} (alias {registry.CANDIDATE})"
    )
    return version.version


@stage_entry_point
def main() -> None:
    cfg, _ = stage_config(__doc__)
    export(cfg)
    print(f"exported SavedModel and HF model to {EXPORT_DIR}/")


if __name__ == "__main__":
    main()
