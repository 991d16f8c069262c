"""Stage 4, evaluate: models/trained/ on the validation split -> metrics/eval.json, predictions/.

    python -m pipeline.evaluate [--params params.yaml]

Writes metrics/eval.json (DVC metrics) and predictions/ in the layouts of transformers'
examples (utils_qa), which the official SQuAD evaluation scripts read unchanged:

  predictions.json        id -> answer text ("" = no answer)
  nbest_predictions.json  id -> the n_best candidates: text, probability, start_logit, end_logit
  null_odds.json          id -> null score minus best span score (SQuAD v2.0 only)

SQuAD v1.1 (data.version_2_with_negative false): eval.json holds exact_match and f1 (the
local `squad` metric). SQuAD v2.0: the `squad_v2` metric's exact, f1, total, HasAns_*,
NoAns_*, best_exact(_thresh), best_f1(_thresh), plus exact_match (= exact) so every run has
exact_match and f1. Both add examples and features. All of it is logged to MLflow (see
pipeline.tracking for which run).

The functions before `evaluate` are shared with pipeline.evaluate_model.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.config import EvaluateConfig, PipelineConfig, flatten, load_config
from pipeline.errors import PipelineError, stage_entry_point
from pipeline.io import atomic_output_dir, read_json, write_json

RAW_DIR = Path("data/raw")
TOKENIZED_DIR = Path("data/tokenized")
TRAINED_DIR = Path("models/trained")
METRICS_FILE = Path("metrics/eval.json")
PREDICTIONS_DIR = Path("predictions")
SCORES_PLOT_FILE = Path("plots/eval/scores.json")

PREDICTIONS_FILE = "predictions.json"
NBEST_FILE = "nbest_predictions.json"
NULL_ODDS_FILE = "null_odds.json"


def predict_split(logits_fn, examples, features, cfg: EvaluateConfig, version_2_with_negative: bool = False,
                  pad_token_id: int = 0, progress: bool = True):
    """Post-processed predictions (pipeline.postprocess.QAPredictions) for a split and its features.

    `examples` needs id and context columns, `features` (a datasets.Dataset) the model
    inputs, example_id and offset_mapping.
    """
    from pipeline.batching import FeatureTable
    from pipeline.inference import predict_logits
    from pipeline.vectorized_postprocess import ContextOffsets, postprocess_predictions_vectorized

    table = FeatureTable.from_dataset(features, pad_token_id=pad_token_id)
    max_length = int(table.lengths.max())
    starts, ends = predict_logits(logits_fn, table, cfg.batch_size, max_length, progress=progress)
    # Vectorized, with results identical to pipeline.postprocess.postprocess_predictions
    # (the course's loop; tests/test_vectorized_postprocess.py checks it).
    return postprocess_predictions_vectorized(
        examples["id"], examples["context"], features["example_id"], ContextOffsets.from_dataset(features),
        starts, ends, cfg.n_best, cfg.max_answer_length, version_2_with_negative, cfg.null_score_diff_threshold,
    )


def score(predictions, examples, version_2_with_negative: bool = False,
          null_score_diff_threshold: float = 0.0) -> dict[str, float]:
    """SQuAD v1.1 or v2.0 metrics of QAPredictions against the examples' answers.

    For v2.0 the null odds go to the metric as no-answer probabilities, with the
    post-processing threshold as its no-answer threshold: the metric then scores exactly
    the answers post-processing chose, and its best_*_thresh are null-odds thresholds that
    can be set as evaluate.null_score_diff_threshold.
    """
    from pipeline.metrics import load_metric

    ids = list(examples["id"])
    references = [{"id": i, "answers": a} for i, a in zip(ids, examples["answers"])]
    if not version_2_with_negative:
        return load_metric("squad").compute(
            predictions=[{"id": i, "prediction_text": predictions.answers[i]} for i in ids], references=references
        )
    result = load_metric("squad_v2").compute(
        predictions=[
            {"id": i, "prediction_text": predictions.answers[i], "no_answer_probability": predictions.null_odds[i]}
            for i in ids
        ],
        references=references,
        no_answer_threshold=null_score_diff_threshold,
    )
    # One name for downstream tooling (DVC metrics diff, MLflow charts) in v1.1 and v2.0.
    return {"exact_match": result["exact"], **result}


def write_prediction_files(out_dir: Path, predictions) -> list[Path]:
    """predictions.json, nbest_predictions.json and (v2.0) null_odds.json in out_dir."""
    files = {PREDICTIONS_FILE: predictions.answers, NBEST_FILE: predictions.nbest}
    if predictions.null_odds is not None:
        files[NULL_ODDS_FILE] = predictions.null_odds
    for name, content in files.items():
        write_json(out_dir / name, content)
    return [out_dir / name for name in files]


def log_to_mlflow(cfg: PipelineConfig, trained_dir: Path, metrics: dict, predictions_dir: Path) -> str:
    """Log the metrics to the training run on its first evaluation, else to a new linked run."""
    from pipeline import tracking

    client, _ = tracking.client_for(cfg.mlflow.experiment_name)
    run_file = trained_dir / tracking.RUN_FILE_NAME
    training_run_id = read_json(run_file)["run_id"] if run_file.is_file() else None
    training_run = tracking.find_run(client, training_run_id) if training_run_id else None
    if training_run is not None and "f1" not in training_run.data.metrics:
        run_id = training_run_id
    else:
        # Training was reused from DVC's cache (or recorded in another store): say so and
        # link to the run that trained the model, instead of claiming this run trained.
        tags = {"stage": "evaluate", "training_reused": "true"}
        if training_run_id:
            tags["training_run_id"] = training_run_id
        if training_run is None and training_run_id:
            tags["training_run_store"] = read_json(run_file).get("tracking_uri", "unknown")
        _, run_id = tracking.start_run(cfg.mlflow.experiment_name, "evaluate", flatten(cfg), tags)
    tracking.log_metrics(client, run_id, metrics)
    client.log_artifacts(run_id, str(predictions_dir), "predictions")
    if run_id != training_run_id:
        client.set_terminated(run_id, status="FINISHED")
    return run_id


def evaluate(cfg: PipelineConfig, raw_dir: Path = RAW_DIR, tokenized_dir: Path = TOKENIZED_DIR,
             trained_dir: Path = TRAINED_DIR, metrics_file: Path = METRICS_FILE,
             predictions_dir: Path = PREDICTIONS_DIR, scores_plot_file: Path = SCORES_PLOT_FILE) -> dict[str, Any]:
    from datasets import load_from_disk
    from transformers import AutoTokenizer, TFAutoModelForQuestionAnswering

    from pipeline.inference import keras_logits_fn

    for path in (raw_dir, tokenized_dir):
        if not (path / "dataset_dict.json").is_file():
            raise PipelineError(f"{path}: no saved dataset; run `dvc repro` to build it")
    if not (trained_dir / "config.json").is_file():
        raise PipelineError(f"{trained_dir}: no trained model; run the train stage first")
    from pipeline import tracking

    tracking.check_server(tracking.tracking_uri())  # a down server stops us before any work
    examples = load_from_disk(str(raw_dir))["validation"]
    features = load_from_disk(str(tokenized_dir))["validation"]
    tokenizer = AutoTokenizer.from_pretrained(str(trained_dir))
    model = TFAutoModelForQuestionAnswering.from_pretrained(str(trained_dir))

    version_2 = cfg.data.version_2_with_negative
    predictions = predict_split(keras_logits_fn(model), examples, features, cfg.evaluate, version_2,
                                tokenizer.pad_token_id or 0)
    metrics = {
        **score(predictions, examples, version_2, cfg.evaluate.null_score_diff_threshold),
        "examples": examples.num_rows,
        "features": features.num_rows,
    }

    with atomic_output_dir(predictions_dir) as tmp:
        write_prediction_files(tmp, predictions)
    write_json(metrics_file, metrics)
    # The same two scores as a list, the shape `dvc plots` needs to compare experiments.
    write_json(scores_plot_file, [{"metric": k, "score": metrics[k]} for k in ("exact_match", "f1")])
    metrics["mlflow_run_id"] = log_to_mlflow(cfg, trained_dir, metrics, predictions_dir)
    return metrics


@stage_entry_point
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    cfg = load_config(args.params)
    metrics = evaluate(cfg)
    print(
        f"exact_match {metrics['exact_match']:.2f}  f1 {metrics['f1']:.2f}  on {metrics['examples']} questions "
        f"(MLflow run {metrics['mlflow_run_id']})"
    )


if __name__ == "__main__":
    main()
