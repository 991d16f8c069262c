"""Stage 4, evaluate: models/trained/ on the validation split -> metrics/eval.json, predictions/.

    python -m pipeline.evaluate [--params params.yaml]

Writes metrics/eval.json (exact_match, f1, examples, features; DVC metrics) and
predictions/predictions.json (id -> answer text, the official SQuAD layout), and logs
both to MLflow (see pipeline.tracking for which run).
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


def predict_answers(logits_fn, examples, features, cfg: EvaluateConfig, pad_token_id: int = 0,
                    progress: bool = True) -> dict[str, Any]:
    """Best span per example id for a raw split and its tokenized features."""
    from pipeline.batching import FeatureTable
    from pipeline.inference import predict_logits
    from pipeline.postprocess import best_spans

    table = FeatureTable.from_dataset(features, pad_token_id=pad_token_id)
    max_length = int(table.lengths.max())
    starts, ends = predict_logits(logits_fn, table, cfg.batch_size, max_length, progress=progress)
    return best_spans(
        examples["id"], examples["context"], features["example_id"], features["offset_mapping"],
        starts, ends, cfg.n_best, cfg.max_answer_length,
    )


def score(predictions: dict[str, str], examples) -> dict[str, float]:
    from pipeline.metrics import load_metric

    metric = load_metric("squad")
    return metric.compute(
        predictions=[{"id": i, "prediction_text": predictions[i]} for i in examples["id"]],
        references=[{"id": i, "answers": a} for i, a in zip(examples["id"], examples["answers"])],
    )


def log_to_mlflow(cfg: PipelineConfig, trained_dir: Path, metrics: dict, predictions_file: Path) -> str:
    """Log EM/F1 to the training run on its first evaluation, else to a new linked run."""
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
    client.log_artifact(run_id, str(predictions_file), "predictions")
    if run_id != training_run_id:
        client.set_terminated(run_id, status="FINISHED")
    return run_id


def evaluate(cfg: PipelineConfig, raw_dir: Path = RAW_DIR, tokenized_dir: Path = TOKENIZED_DIR,
             trained_dir: Path = TRAINED_DIR, metrics_file: Path = METRICS_FILE,
             predictions_dir: Path = PREDICTIONS_DIR) -> dict[str, Any]:
    from datasets import load_from_disk
    from transformers import AutoTokenizer, TFAutoModelForQuestionAnswering

    from pipeline.inference import keras_logits_fn
    from pipeline.postprocess import answer_texts

    for path in (raw_dir, tokenized_dir):
        if not (path / "dataset_dict.json").is_file():
            raise PipelineError(f"{path}: no saved dataset; run `dvc repro` to build it")
    if not (trained_dir / "config.json").is_file():
        raise PipelineError(f"{trained_dir}: no trained model; run the train stage first")
    examples = load_from_disk(str(raw_dir))["validation"]
    features = load_from_disk(str(tokenized_dir))["validation"]
    tokenizer = AutoTokenizer.from_pretrained(str(trained_dir))
    model = TFAutoModelForQuestionAnswering.from_pretrained(str(trained_dir))

    spans = predict_answers(keras_logits_fn(model), examples, features, cfg.evaluate, tokenizer.pad_token_id or 0)
    predictions = answer_texts(spans)
    metrics = {**score(predictions, examples), "examples": examples.num_rows, "features": features.num_rows}

    with atomic_output_dir(predictions_dir) as tmp:
        write_json(tmp / "predictions.json", predictions)
    write_json(metrics_file, metrics)
    metrics["mlflow_run_id"] = log_to_mlflow(cfg, trained_dir, metrics, predictions_dir / "predictions.json")
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
