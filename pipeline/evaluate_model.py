"""Evaluate a trained or exported model on any SQuAD-format file, without retraining.

    python -m pipeline.evaluate_model --model models/export --data dev-v1.1.json --out eval/dev-v1.1.json
    python -m pipeline.evaluate_model --model models/trained --data dev-v2.0.json.gz --out eval/dev-v2.0.json \\
        --version-2-with-negative --predictions-dir eval/dev-v2.0-predictions --max-length 384 --stride 128

--model is a save_pretrained directory (models/trained) or a model export (models/export:
its hf/ model). The windows default to the ones the model was trained with (recorded in
models/trained/qa_windows.json and the export's inference.json); a model without that
record needs --max-length and --stride. The file (.json or .json.gz, SQuAD v1.1 or v2.0
layout) is validated like the download stage's input, and every question is scored: a bad
record stops the run. Prediction is batched and sorted by length (pipeline.qa.inference), so
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

import yaml

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.qa.modeling import read_windows
from pipeline.qa.predictions import COURSE_MAX_ANSWER_LENGTH, COURSE_N_BEST, evaluate_file, write_prediction_files
from pipeline.qa.serving import HF_DIR, INFERENCE_FILE, read_settings
from pipeline.runtime.config import EvaluateConfig, TokenizeConfig
from pipeline.runtime.errors import PipelineError, stage_entry_point
from pipeline.runtime.files import write_json

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BATCH_SIZE = 64  # conf/config.yaml's evaluate.batch_size


@dataclass(frozen=True)
class ModelSource:
    """Where the save_pretrained files are, and the windows an export was made for."""

    model_dir: Path
    max_length: Optional[int] = None
    stride: Optional[int] = None


def resolve_model_dir(path: Path) -> ModelSource:
    """The save_pretrained directory and its training windows: an export's inference.json,
    a trained model's qa_windows.json, or none (a model this pipeline did not train)."""
    if not path.is_dir():
        raise PipelineError(f"--model {path}: directory not found")
    settings = read_settings(path)
    if settings is not None:
        hf_dir = path / HF_DIR
        if not (hf_dir / "config.json").is_file():
            raise PipelineError(f"--model {path}: an export without {HF_DIR}/config.json; rerun `dvc repro export`")
        return ModelSource(hf_dir, settings.get("max_length"), settings.get("stride"))
    if (path / "config.json").is_file():
        windows = read_windows(path) or {}
        return ModelSource(path, windows.get("max_length"), windows.get("stride"))
    raise PipelineError(
        f"--model {path}: neither a saved model (config.json) nor a model export ({INFERENCE_FILE} and {HF_DIR}/); "
        "use models/trained or models/export"
    )


def pipeline_outputs(dvc_file: Path) -> Iterator[Path]:
    """Every path the DVC pipeline in dvc_file writes (outs, metrics, plots), resolved."""
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
    parser.add_argument("--max-length", type=int,
                        help="window length in tokens (default: the one the model was trained with)")
    parser.add_argument("--stride", type=int, help="window overlap (default: the one the model was trained with)")
    parser.add_argument("--n-best", type=int, default=COURSE_N_BEST)
    parser.add_argument("--max-answer-length", type=int, default=COURSE_MAX_ANSWER_LENGTH)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--max-samples", type=int, help="evaluate the first N questions only")
    parser.add_argument("--version-2-with-negative", action="store_true", help="SQuAD v2.0: questions may be unanswerable")
    parser.add_argument("--null-score-diff-threshold", type=float,
                        help="v2.0: answer \"\" when null score - best span score is above it (default 0.0)")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace, source: ModelSource) -> tuple[TokenizeConfig, EvaluateConfig]:
    """Checked tokenize and post-processing settings: flags, else the export's, else the defaults."""
    if args.null_score_diff_threshold is not None and not args.version_2_with_negative:
        raise PipelineError("--null-score-diff-threshold applies to SQuAD v2.0 only; add --version-2-with-negative")
    max_length = args.max_length or source.max_length
    stride = args.stride if args.stride is not None else source.stride
    if max_length is None or stride is None:
        raise PipelineError(
            f"--model {args.model}: no record of the windows it was trained with (qa_windows.json or inference.json); "
            "pass --max-length and --stride"
        )
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
        TokenizeConfig(max_length=max_length, stride=stride, warn_windows=None),
        EvaluateConfig(n_best=args.n_best, max_answer_length=args.max_answer_length, batch_size=args.batch_size,
                       null_score_diff_threshold=threshold),
    )


def run(argv: list[str], progress: bool = True) -> dict[str, Any]:
    """The command line, minus the error formatting: returns the metrics written to --out."""
    args = parse_args(argv)
    source = resolve_model_dir(args.model)
    tokenize_cfg, evaluate_cfg = settings_from_args(args, source)
    if not args.data.is_file():
        raise PipelineError(f"--data {args.data}: file not found")
    targets = {"--out": args.out, **({"--predictions-dir": args.predictions_dir} if args.predictions_dir else {})}
    refuse_pipeline_outputs(targets, [Path.cwd() / "dvc.yaml", PROJECT_ROOT / "dvc.yaml"])

    metrics, predictions = evaluate_file(source.model_dir, args.data, tokenize_cfg, evaluate_cfg, args.version_2_with_negative,
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
