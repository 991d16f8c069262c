"""Stage 5, export: models/trained/ -> models/export/ (SavedModel + HF model + inference settings).

    python -m pipeline.export [--params params.yaml]

The layout is pipeline.qa.serving's. The windows come from the trained model's own record
(qa_windows.json), checked against params.yaml; the SQuAD v2.0 null threshold is recorded, so
pipeline.predict answers "" by the same rule as the evaluate stage.

export.engine=int8 (the int8 extra) adds models/export/int8/: the SavedModel quantized by
pipeline.qa.int8, calibrated on the first export.calibration_samples train features, and its
answers to the validation questions scored by the evaluate stage's code (evaluation.json,
predictions.json). The export then serves int8, and the registered version carries the int8
answers' scores (and the float32 ones beside them).

The export carries the passage index (models/index/ into models/export/index/) with the k and
weight the tune_retrieval stage chose (models/retrieval.json): pipeline.predict and the MLflow
model answer a question without a context from it.

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
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline import mlflow_model
from pipeline.qa.answers import same_answer_share
from pipeline.qa.batching import FeatureTable
from pipeline.qa.int8 import INT8, calibration_inputs, int8_logits_fn, quantize, require_int8_extra
from pipeline.qa.modeling import load_qa_model, load_tokenizer, read_windows
from pipeline.qa.predictions import PREDICTIONS_FILE, predict_split, score, write_prediction_files
from pipeline.qa.squad import load_saved
from pipeline.qa.retrieval import CHOICE_FILE, META_FILE, PassageIndex
from pipeline.qa.serving import INDEX_DIR as SERVING_INDEX_DIR
from pipeline.qa.serving import INT8_DIR, SAVED_MODEL_DIR, SIGNATURE_INPUTS, save_export
from pipeline.runtime import registry, tracking
from pipeline.runtime.config import PipelineConfig, stage_config
from pipeline.runtime.errors import PipelineError, stage_entry_point
from pipeline.runtime.files import atomic_output_dir, dvc_md5, read_json, write_json
from pipeline.runtime.lineage import (
    EVALUATION_FILE_NAME,
    answer_settings,
    check_built_with,
    check_content_inputs,
    check_model_windows,
    read_built_with,
    read_evaluation,
)
from pipeline.runtime.paths import (
    EXPORT_DIR,
    INDEX_DIR,
    PREDICTIONS_DIR,
    RAW_DIR,
    RETRIEVAL_FILE,
    TOKENIZED_DIR,
    TRAINED_DIR,
    require_output,
)


def export(
    cfg: PipelineConfig,
    trained_dir: Path = TRAINED_DIR,
    out_dir: Path = EXPORT_DIR,
    predictions_dir: Path = PREDICTIONS_DIR,
    index_dir: Path = INDEX_DIR,
    retrieval_file: Path = RETRIEVAL_FILE,
) -> dict[str, Any]:
    windows, evaluation, served = check_inputs(cfg, trained_dir, predictions_dir)
    tokenizer = load_tokenizer(str(trained_dir))
    check_index(index_dir, retrieval_file, tokenizer, cfg)
    if cfg.export.engine == INT8:
        require_int8_extra()
    tracking.check_server(tracking.tracking_uri())  # a down server stops us before any work
    settings = serving_settings(cfg, windows)
    with atomic_output_dir(out_dir) as tmp:
        save_export(load_qa_model(str(trained_dir)), tokenizer, settings, tmp)
        if cfg.export.engine == INT8:
            evaluation = save_int8(cfg, tmp, tokenizer.pad_token_id or 0, evaluation, trained_dir, predictions_dir)
        copy_index(index_dir, retrieval_file, tmp / SERVING_INDEX_DIR)
    run_file = trained_dir / tracking.RUN_FILE_NAME
    if run_file.is_file():
        log_export(cfg, read_json(run_file)["run_id"], out_dir, registry.evaluation_tags(evaluation, served))
    return settings


def save_int8(
    cfg: PipelineConfig,
    export_dir: Path,
    pad_token_id: int,
    float_evaluation: dict,
    trained_dir: Path,
    predictions_dir: Path,
) -> dict[str, Any]:
    """Quantize the export's SavedModel into export_dir/int8/ and score its answers to the
    validation questions as the evaluate stage scores the float model's. Returns the int8
    evaluation (predictions/evaluation.json's layout, plus the evaluate stage's scores under
    `float` and the share of questions both answer alike)."""
    from datasets import load_from_disk

    for path in (RAW_DIR, TOKENIZED_DIR):
        require_output(path, "dataset_dict.json", "saved dataset")
    # Calibrated on the features the model was trained on, scored on the questions it was evaluated on.
    check_content_inputs(read_built_with(trained_dir), trained_dir, TOKENIZED_DIR)
    eval_digest = dvc_md5(RAW_DIR / "validation")
    check_built_with(
        {"eval_data_digest": float_evaluation["eval_data_digest"]},
        {"eval_data_digest": eval_digest},
        predictions_dir / EVALUATION_FILE_NAME,
    )
    features = load_from_disk(str(TOKENIZED_DIR))
    calibration = calibration_inputs(
        FeatureTable.from_dataset(features["train"], pad_token_id), cfg.export.calibration_samples, SIGNATURE_INPUTS
    )
    model_xml = quantize(export_dir / SAVED_MODEL_DIR, calibration, export_dir / INT8_DIR)
    examples = load_saved(RAW_DIR)["validation"]
    version_2 = cfg.data.version_2_with_negative
    predictions = predict_split(
        int8_logits_fn(model_xml),
        examples,
        features["validation"],
        cfg.evaluate,
        version_2,
        pad_token_id,
        progress_label="Scoring int8",
    )
    metrics = score(predictions, examples, version_2, cfg.evaluate.null_score_diff_threshold)
    float_answers = read_json(predictions_dir / PREDICTIONS_FILE)
    agreement = same_answer_share(predictions.answers, float_answers)
    evaluation = {
        **float_evaluation,
        "exact_match": metrics["exact_match"],
        "f1": metrics["f1"],
        "answer_settings": answer_settings(cfg, INT8),
        "float": {k: float_evaluation[k] for k in ("exact_match", "f1", "answer_settings")},
        "agreement_with_float": agreement,
        "calibration_features": len(calibration),
    }
    write_prediction_files(export_dir / INT8_DIR, predictions)
    write_json(export_dir / INT8_DIR / EVALUATION_FILE_NAME, evaluation)
    print(
        f"int8: exact_match {metrics['exact_match']:.2f} f1 {metrics['f1']:.2f} on {examples.num_rows} questions "
        f"(evaluate stage: {float_evaluation['exact_match']:.2f} / {float_evaluation['f1']:.2f}); the same "
        f"answer as the evaluate stage's for {agreement:.1%} of them; calibrated on {len(calibration)} train features"
    )
    return evaluation


def check_index(index_dir: Path, retrieval_file: Path, tokenizer: Any, cfg: PipelineConfig) -> None:
    """The index the export carries splits text as the model reads it, and its k and weight were
    chosen (tune_retrieval) with the index's BM25 settings."""
    require_output(index_dir, META_FILE, "passage index")
    require_output(retrieval_file, None, "choice of k and weight")
    index = PassageIndex.load(index_dir)
    index.check_reader(tokenizer, cfg.tokenize, str(index_dir))
    chosen = read_json(retrieval_file).get("bm25")
    if chosen != index.meta["bm25"]:
        raise PipelineError(
            f"{retrieval_file}: k and weight were chosen with BM25 settings {chosen} but {index_dir} has "
            f"{index.meta['bm25']}; run `dvc repro index tune_retrieval`"
        )


def copy_index(index_dir: Path, retrieval_file: Path, out_dir: Path) -> None:
    """The passage index, with the k and weight chosen for it, into the export."""
    shutil.copytree(index_dir, out_dir)
    chosen = read_json(retrieval_file)
    write_json(out_dir / CHOICE_FILE, {"k": chosen["k"], "weight": chosen["weight"]})


def check_inputs(cfg: PipelineConfig, trained_dir: Path, predictions_dir: Path) -> tuple[dict, dict, dict]:
    """The model was trained on these windows and scored (predictions/evaluation.json) with the
    settings the export serves. Returns (its windows, the evaluation, the served answer settings)."""
    require_output(trained_dir, "config.json", "trained model")
    windows = read_windows(trained_dir)
    if windows is None:
        raise PipelineError(
            f"{trained_dir}: no qa_windows.json (trained before windows were recorded); "
            "rerun training with `dvc repro -f train`"
        )
    check_model_windows(windows, cfg, trained_dir)
    evaluation = read_evaluation(predictions_dir)
    served = answer_settings(cfg, cfg.export.engine)
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
        "engine": cfg.export.engine,
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
            mlflow_model.pip_requirements(engine=cfg.export.engine),
            ev.n_best,
            ev.max_answer_length,
            ev.batch_size,
            cfg.mlflow.max_context_chars,
        )
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(name="qa-model", **kwargs)
    client.set_tag(run_id, "exported", "true")
    if registry.FLOAT_F1_TAG in evaluation_tags:  # an int8 export: its own scores beside the float model's
        tracking.log_metrics(
            client,
            run_id,
            {
                "int8.exact_match": float(evaluation_tags[registry.EM_TAG]),
                "int8.f1": float(evaluation_tags[registry.F1_TAG]),
                "int8.agreement_with_float": float(evaluation_tags[registry.AGREEMENT_TAG]),
            },
        )
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
