"""Stage 4, evaluate: models/trained/ on the validation split -> metrics/, plots/eval/, predictions/.

    python -m pipeline.evaluate [--params params.yaml]

Writes metrics/eval.json and metrics/slices.json (DVC metrics), plots/eval/ (DVC plots: EM
and F1, F1 per slice, the risk-coverage curve) and predictions/ in the layouts of
transformers' examples (utils_qa), which the official SQuAD evaluation scripts read unchanged:

  predictions.json        id -> answer text ("" = no answer)
  nbest_predictions.json  id -> the n_best candidates: text, probability, start_logit, end_logit
  null_odds.json          id -> null score minus best span score (SQuAD v2.0 only)

and predictions/evaluation.json: EM, F1, the evaluation data's digest, the answer settings they
were scored with and the model's md5, which the export stage registers with the model.

SQuAD v1.1 (data.version_2_with_negative false): eval.json holds exact_match and f1 (the
local `squad` metric). SQuAD v2.0: the `squad_v2` metric's exact, f1, total, HasAns_*,
NoAns_*, best_exact(_thresh), best_f1(_thresh), plus exact_match (= exact) so every run has
exact_match and f1. Both add examples and features, the bootstrap 95% intervals of EM and F1
(evaluate.bootstrap_samples, evaluate.bootstrap_seed), the risk-coverage area and the
expected calibration error (pipeline.qa.analysis defines them). metrics/slices.json holds EM,
F1 and count per slice (question word, answer tokens, windows, answer position). All of it
is logged to MLflow (see pipeline.runtime.tracking for which run), with the slices as a table
and data/raw's train/validation overlap counts as overlap.* metrics.
"""

from __future__ import annotations

from typing import Any

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.qa.analysis import analyse, windows_per_example
from pipeline.qa.inference import keras_logits_fn, load_inference_model
from pipeline.qa.modeling import load_tokenizer, read_windows
from pipeline.qa.predictions import predict_split, score, write_prediction_files
from pipeline.runtime import tracking
from pipeline.runtime.config import PipelineConfig, stage_config
from pipeline.runtime.errors import stage_entry_point
from pipeline.runtime.files import atomic_output_dir, dvc_md5, read_json, write_csv, write_json
from pipeline.runtime.lineage import (
    EVALUATION_FILE_NAME,
    answer_settings,
    check_built_with,
    check_content_inputs,
    check_model_windows,
    content_inputs,
    read_built_with,
    tokenized_inputs,
)
from pipeline.runtime.paths import (
    EVAL_METRICS_FILE,
    OVERLAP_FILE_NAME,
    PREDICTIONS_DIR,
    RAW_DIR,
    RISK_COVERAGE_PLOT_FILE,
    SCORES_PLOT_FILE,
    SLICES_METRICS_FILE,
    SLICES_PLOT_FILE,
    TOKENIZED_DIR,
    TRAINED_DIR,
    require_output,
)


def evaluate(cfg: PipelineConfig) -> dict[str, Any]:
    read = check_inputs(cfg)
    tracking.check_server(tracking.tracking_uri())  # a down server stops us before any work
    examples, features, predictions, model_policy = predict(cfg)
    analysis, metrics = score_predictions(cfg, examples, features, predictions)
    write_metrics_and_plots(metrics, analysis)
    # The DVC-style md5 of the validation questions: F1s are comparable when it is equal
    # (pipeline.promote compares it).
    eval_digest = dvc_md5(RAW_DIR / "validation")
    write_predictions(cfg, predictions, metrics, eval_digest, model_policy, read)
    overlap_file = RAW_DIR / OVERLAP_FILE_NAME
    run_id = tracking.log_evaluation(
        cfg,
        TRAINED_DIR / tracking.RUN_FILE_NAME,
        metrics,
        read_json(overlap_file) if overlap_file.is_file() else {},
        tables={"evaluation/slices.json": analysis.slice_table()},
        documents={
            "evaluation/risk_coverage.json": analysis.curve_rows(),
            "evaluation/calibration.json": analysis.reliability,
        },
        predictions_dir=PREDICTIONS_DIR,
        questions_dir=RAW_DIR / "validation",
        features_dir=TOKENIZED_DIR / "validation",
        eval_digest=eval_digest,
        tags=read,
    )
    return {**metrics, "mlflow_run_id": run_id}


def check_inputs(cfg: PipelineConfig) -> dict[str, str]:
    """The questions, features and model exist and were built from each other with these params;
    returns the content md5s of what the model was built from (recorded with the evaluation)."""
    for path in (RAW_DIR, TOKENIZED_DIR):
        require_output(path, "dataset_dict.json", "saved dataset")
    require_output(TRAINED_DIR, "config.json", "trained model")
    windows = read_windows(TRAINED_DIR) or {}
    # data/tokenized and the model must come from the same checkpoint (a concurrent run may
    # have rebuilt one of them): compare the content md5 each recorded.
    expected = tokenized_inputs(cfg, windows.get("checkpoint_md5"))
    tokenized_record = read_built_with(TOKENIZED_DIR)
    check_built_with(tokenized_record, {k: v for k, v in expected.items() if v is not None}, TOKENIZED_DIR)
    check_model_windows(windows, cfg, TRAINED_DIR)
    # ... and the features, the model and the questions must be the ones each was built from.
    check_content_inputs(tokenized_record, TOKENIZED_DIR, RAW_DIR)
    check_content_inputs(read_built_with(TRAINED_DIR), TRAINED_DIR, TOKENIZED_DIR)
    return content_inputs(TRAINED_DIR)


def predict(cfg: PipelineConfig):
    """The model's answers to the validation questions. Returns (examples, features, predictions,
    the dtype policy it predicted in)."""
    from datasets import load_from_disk

    examples = load_from_disk(str(RAW_DIR))["validation"]
    features = load_from_disk(str(TOKENIZED_DIR))["validation"]
    tokenizer = load_tokenizer(str(TRAINED_DIR))
    model = load_inference_model(str(TRAINED_DIR), cfg.evaluate.precision)
    predictions = predict_split(
        keras_logits_fn(model),
        examples,
        features,
        cfg.evaluate,
        cfg.data.version_2_with_negative,
        tokenizer.pad_token_id or 0,
    )
    return examples, features, predictions, model.dtype_policy.name


def score_predictions(cfg: PipelineConfig, examples, features, predictions):
    """The metrics (scores, intervals, risk-coverage, calibration, counts) and the analysis behind them."""
    version_2 = cfg.data.version_2_with_negative
    columns = {name: examples[name] for name in ("id", "question", "context", "answers")}
    analysis = analyse(
        predictions,
        columns,
        windows_per_example(features["example_id"]),
        version_2,
        cfg.evaluate.bootstrap_samples,
        cfg.evaluate.bootstrap_seed,
    )
    metrics = {
        **score(predictions, examples, version_2, cfg.evaluate.null_score_diff_threshold),
        **analysis.summary,
        "examples": examples.num_rows,
        "features": features.num_rows,
    }
    return analysis, metrics


def write_metrics_and_plots(metrics: dict, analysis) -> None:
    write_json(EVAL_METRICS_FILE, metrics)
    write_json(SLICES_METRICS_FILE, analysis.slices)
    # The scores as lists of rows, the shape `dvc plots` needs to compare experiments.
    write_json(SCORES_PLOT_FILE, [{"metric": k, "score": metrics[k]} for k in ("exact_match", "f1")])
    write_json(SLICES_PLOT_FILE, analysis.slice_rows())
    write_csv(RISK_COVERAGE_PLOT_FILE, analysis.curve_rows())


def write_predictions(
    cfg: PipelineConfig, predictions, metrics: dict, eval_digest: str, model_policy: str, read: dict[str, str]
) -> None:
    """predictions/ (atomically): the prediction files and evaluation.json, what the export stage
    registers with the model: the scores of these answers and the settings that gave them
    (pipeline.runtime.registry.evaluation_tags). No run id: the file is an input of the export,
    which must not rerun when only a record changed."""
    with atomic_output_dir(PREDICTIONS_DIR) as tmp:
        write_prediction_files(tmp, predictions)
        write_json(
            tmp / EVALUATION_FILE_NAME,
            {
                "exact_match": metrics["exact_match"],
                "f1": metrics["f1"],
                "eval_data_digest": eval_digest,
                "answer_settings": answer_settings(cfg, model_policy),
                **read,
            },
        )


@stage_entry_point
def main() -> None:
    cfg, _ = stage_config(__doc__)
    metrics = evaluate(cfg)
    print(
        f"exact_match {metrics['exact_match']:.2f} [{metrics['exact_match_ci95_low']:.2f}, "
        f"{metrics['exact_match_ci95_high']:.2f}]  f1 {metrics['f1']:.2f} [{metrics['f1_ci95_low']:.2f}, "
        f"{metrics['f1_ci95_high']:.2f}]  on {metrics['examples']} questions (95% bootstrap intervals; "
        f"MLflow run {metrics['mlflow_run_id']})"
    )


if __name__ == "__main__":
    main()
