"""Evaluate a trained or exported model on any SQuAD-format file, without retraining.

    python -m pipeline.evaluate_model --model models/export --data dev-v1.1.json --out eval/dev-v1.1.json
    python -m pipeline.evaluate_model --model models/trained --data dev-v2.0.json.gz --out eval/dev-v2.0.json \\
        --version-2-with-negative --predictions-dir eval/dev-v2.0-predictions --max-length 384 --stride 128

--model is a save_pretrained directory (models/trained) or a model export (models/export:
its hf/ model, with its inference.json max_length/stride as the defaults, so the windows
match the ones the model was trained on). The file (.json or .json.gz, SQuAD v1.1 or v2.0
layout) is validated like the download stage's input, and every question is scored: a bad
record stops the run. Prediction is batched and sorted by length (pipeline.inference), so
memory follows the batch size, not the file size.

Writes --out (the metrics, as metrics/eval.json, plus the examples, features and settings)
and, with --predictions-dir, predictions.json, nbest_predictions.json and (v2.0)
null_odds.json into that directory (other files there are left alone). It never writes
the DVC pipeline's outputs (it refuses paths inside them) and logs nothing to MLflow.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.config import EvaluateConfig, TokenizeConfig
from pipeline.errors import PipelineError, stage_entry_point
from pipeline.io import read_json, write_json

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXPORT_SETTINGS_FILE = "inference.json"  # pipeline.export.INFERENCE_FILE, without importing TensorFlow


@dataclass(frozen=True)
class ModelSource:
    """Where the save_pretrained files are, and the windows an export was made for."""

    model_dir: Path
    max_length: Optional[int] = None
    stride: Optional[int] = None


def resolve_model_dir(path: Path) -> ModelSource:
    if not path.is_dir():
        raise PipelineError(f"--model {path}: directory not found")
    settings_file = path / EXPORT_SETTINGS_FILE
    if settings_file.is_file():
        hf_dir = path / "hf"
        if not (hf_dir / "config.json").is_file():
            raise PipelineError(f"--model {path}: an export without hf/config.json; rerun `dvc repro export`")
        settings = read_json(settings_file)
        return ModelSource(hf_dir, settings.get("max_length"), settings.get("stride"))
    if (path / "config.json").is_file():
        return ModelSource(path)
    raise PipelineError(
        f"--model {path}: neither a saved model (config.json) nor a model export ({EXPORT_SETTINGS_FILE} and hf/); "
        "use models/trained or models/export"
    )


def load_examples(path: Path, version_2_with_negative: bool, max_samples: Optional[int] = None) -> dict[str, list]:
    """id/question/context/answers columns of a SQuAD-format file, validated; the first max_samples."""
    from pipeline.download import read_squad_json, validate_records

    records = read_squad_json(path)
    unanswerable = [r for r in records if r["is_impossible"]]
    if unanswerable and not version_2_with_negative:
        raise PipelineError(
            f"{path}: {len(unanswerable)} unanswerable (is_impossible) questions, e.g. id={unanswerable[0]['id']!r}; "
            "add --version-2-with-negative to evaluate SQuAD v2.0"
        )
    # "drop" only to count the bad records for the message: any bad record stops the run,
    # since a metric over a silently smaller set would not be the file's score.
    report = validate_records(records, str(path), "drop", allow_impossible=version_2_with_negative)
    if report.problems:
        raise PipelineError(
            f"{report.problems[0]} ({len(report.problems)} bad record(s) in the file; every question is scored, "
            "so fix or remove them)"
        )
    kept = report.kept[:max_samples] if max_samples else report.kept
    if not kept:
        raise PipelineError(f"{path}: no questions to evaluate")
    return {column: [r[column] for r in kept] for column in ("id", "question", "context", "answers")}


def tokenize_examples(examples: dict[str, list], tokenizer: Any, cfg: TokenizeConfig) -> Any:
    """Validation features (a datasets.Dataset in memory: no cache files anywhere)."""
    from datasets import Dataset

    from pipeline.tokenize import prepare_validation_features

    raw = Dataset.from_dict({c: examples[c] for c in ("id", "question", "context")})
    return raw.map(
        prepare_validation_features, batched=True, fn_kwargs={"tokenizer": tokenizer, "cfg": cfg},
        remove_columns=raw.column_names, keep_in_memory=True, load_from_cache_file=False, desc="Tokenizing",
    )


def evaluate_file(source: ModelSource, data_file: Path, tokenize_cfg: TokenizeConfig, evaluate_cfg: EvaluateConfig,
                  version_2_with_negative: bool = False, max_samples: Optional[int] = None,
                  progress: bool = True) -> tuple[dict[str, Any], Any]:
    """(metrics, QAPredictions) of the model on the file."""
    from pipeline.evaluate import predict_split, score
    from pipeline.inference import keras_logits_fn
    from pipeline.modeling import load_qa_model, load_tokenizer

    examples = load_examples(data_file, version_2_with_negative, max_samples)
    tokenizer = load_tokenizer(str(source.model_dir))
    features = tokenize_examples(examples, tokenizer, tokenize_cfg)
    model = load_qa_model(str(source.model_dir))
    predictions = predict_split(keras_logits_fn(model), examples, features, evaluate_cfg, version_2_with_negative,
                                tokenizer.pad_token_id or 0, progress)
    metrics = {
        **score(predictions, examples, version_2_with_negative, evaluate_cfg.null_score_diff_threshold),
        "examples": len(examples["id"]),
        "features": features.num_rows,
    }
    return metrics, predictions


def pipeline_outputs(dvc_file: Path) -> Iterator[Path]:
    """Every path the DVC pipeline in dvc_file writes (outs, metrics, plots), resolved."""
    import yaml

    stages = (yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}).get("stages", {})
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                name = entry if isinstance(entry, str) else next(iter(entry))
                yield (dvc_file.parent / name).resolve()


def refuse_pipeline_outputs(paths: dict[str, Path], dvc_files: list[Path]) -> None:
    """Stop if a path we would write is a DVC pipeline output, inside one or above one."""
    outputs = {out for dvc_file in dvc_files if dvc_file.is_file() for out in pipeline_outputs(dvc_file)}
    for flag, path in paths.items():
        resolved = path.resolve()
        for out in sorted(outputs):
            if resolved == out or out in resolved.parents or resolved in out.parents:
                raise PipelineError(
                    f"{flag} {path}: overlaps the DVC pipeline output {out}; write somewhere else "
                    "(the pipeline's outputs are managed by `dvc repro`)"
                )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.evaluate_model", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True, help="models/trained or models/export (or any such directory)")
    parser.add_argument("--data", type=Path, required=True, help="SQuAD-format .json or .json.gz")
    parser.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--predictions-dir", type=Path, help="also write predictions.json, nbest_predictions.json, null_odds.json")
    default_windows = TokenizeConfig()
    parser.add_argument("--max-length", type=int,
                        help=f"window length in tokens (default: the export's, else {default_windows.max_length})")
    parser.add_argument("--stride", type=int, help=f"window overlap (default: the export's, else {default_windows.stride})")
    defaults = EvaluateConfig()
    parser.add_argument("--n-best", type=int, default=defaults.n_best)
    parser.add_argument("--max-answer-length", type=int, default=defaults.max_answer_length)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-samples", type=int, help="evaluate the first N questions only")
    parser.add_argument("--version-2-with-negative", action="store_true", help="SQuAD v2.0: questions may be unanswerable")
    parser.add_argument("--null-score-diff-threshold", type=float,
                        help=f"v2.0: answer \"\" when null score - best span score is above it (default {defaults.null_score_diff_threshold})")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace, source: ModelSource) -> tuple[TokenizeConfig, EvaluateConfig]:
    """Checked tokenize and post-processing settings: flags, else the export's, else the defaults."""
    if args.null_score_diff_threshold is not None and not args.version_2_with_negative:
        raise PipelineError("--null-score-diff-threshold applies to SQuAD v2.0 only; add --version-2-with-negative")
    default_windows = TokenizeConfig()
    max_length = args.max_length or source.max_length or default_windows.max_length
    stride = args.stride if args.stride is not None else source.stride if source.stride is not None else default_windows.stride
    if max_length < 32:
        raise PipelineError(f"--max-length={max_length} is invalid: use at least 32 tokens")
    if not 0 <= stride < max_length:
        raise PipelineError(f"--stride={stride} is invalid: use >= 0 and less than --max-length ({max_length})")
    for flag, value in (("--n-best", args.n_best), ("--max-answer-length", args.max_answer_length),
                        ("--batch-size", args.batch_size), ("--max-samples", args.max_samples)):
        if value is not None and value < 1:
            raise PipelineError(f"{flag}={value} is invalid: use at least 1")
    threshold = args.null_score_diff_threshold if args.null_score_diff_threshold is not None else 0.0
    return (
        TokenizeConfig(max_length=max_length, stride=stride),
        EvaluateConfig(n_best=args.n_best, max_answer_length=args.max_answer_length, batch_size=args.batch_size,
                       null_score_diff_threshold=threshold),
    )


def run(argv: list[str], progress: bool = True) -> dict[str, Any]:
    """The command line, minus the error formatting: returns the metrics written to --out."""
    from pipeline.evaluate import write_prediction_files

    args = parse_args(argv)
    source = resolve_model_dir(args.model)
    tokenize_cfg, evaluate_cfg = settings_from_args(args, source)
    if not args.data.is_file():
        raise PipelineError(f"--data {args.data}: file not found")
    targets = {"--out": args.out, **({"--predictions-dir": args.predictions_dir} if args.predictions_dir else {})}
    refuse_pipeline_outputs(targets, [Path.cwd() / "dvc.yaml", PROJECT_ROOT / "dvc.yaml"])

    metrics, predictions = evaluate_file(source, args.data, tokenize_cfg, evaluate_cfg, args.version_2_with_negative,
                                         args.max_samples, progress)
    metrics["settings"] = {
        "model": str(args.model),
        "data": str(args.data),
        "max_samples": args.max_samples,
        "version_2_with_negative": args.version_2_with_negative,
        **asdict(tokenize_cfg),
        **asdict(evaluate_cfg),
    }
    if args.predictions_dir:
        args.predictions_dir.mkdir(parents=True, exist_ok=True)
        write_prediction_files(args.predictions_dir, predictions)
    write_json(args.out, metrics)
    return metrics


@stage_entry_point
def main() -> None:
    metrics = run(sys.argv[1:])
    print(f"exact_match {metrics['exact_match']:.2f}  f1 {metrics['f1']:.2f}  on {metrics['examples']} questions "
          f"({metrics['features']} features)")


if __name__ == "__main__":
    main()
