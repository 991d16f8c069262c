"""Evaluate a trained or exported model on one or several SQuAD-format files, without retraining.

    python -m pipeline.evaluate_model --model models/export --data dev-v1.1.json --out eval/dev-v1.1.json
    python -m pipeline.evaluate_model --model models/trained --data dev-v2.0.json.gz --out eval/dev-v2.0.json \\
        --version-2-with-negative --predictions-dir eval/dev-v2.0-predictions --max-length 384 --stride 128
    python -m pipeline.evaluate_model --model models/export --data dev-v1.1.json --data news.json.gz \\
        --out eval/report.json --report eval/report.md --max-samples 2000 --bad-records repair

--model is a save_pretrained directory (models/trained) or a model export (models/export:
its hf/ model). The windows default to the ones the model was trained with (recorded in
models/trained/qa_windows.json and the export's inference.json); a model without that
record needs --max-length and --stride. Each --data file (.json or .json.gz, SQuAD v1.1 or
v2.0 layout) is validated like the download stage's input before the model loads; with
--bad-records error (the default) a bad record stops the run, with repair or drop the run
scores what is left and reports what it repaired and dropped. --data may also be a YAML
file listing sets (see sets_from_yaml). Prediction is batched and sorted by length
(pipeline.qa.inference), and one set is held at a time, so memory follows the batch size
and the largest set, not the number of sets.

One set: --out gets its metrics (as metrics/eval.json, plus the slices, bad-record counts
and settings); --predictions-dir gets predictions.json, nbest_predictions.json and (v2.0)
null_odds.json (other files there are left alone). Several sets: --out gets one report
({"sets": [...], "settings": ...}), --report (default: --out with .md) a markdown table
(EM and F1 with 95% intervals, questions, features, F1 difference to the first set), and
--predictions-dir one subdirectory per set. It never writes the DVC pipeline's outputs (it
refuses paths inside them) and logs nothing to MLflow.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.qa.int8 import ENGINES, FLOAT32, INT8, INT8_MODEL_FILE
from pipeline.qa.modeling import read_windows
from pipeline.qa.predictions import (
    COURSE_MAX_ANSWER_LENGTH,
    COURSE_N_BEST,
    LoadedModel,
    evaluate_examples,
    write_prediction_files,
)
from pipeline.qa.serving import HF_DIR, INFERENCE_FILE, INT8_DIR, read_settings
from pipeline.qa.squad import read_examples
from pipeline.runtime.config import (
    BAD_RECORD_POLICIES,
    MIN_BOOTSTRAP_SAMPLES,
    PRECISION_POLICIES,
    EvaluateConfig,
    TokenizeConfig,
)
from pipeline.runtime.errors import PipelineError, stage_entry_point
from pipeline.runtime.files import write_json

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BATCH_SIZE = 64  # conf/config.yaml's evaluate.batch_size
DEFAULT_BOOTSTRAP_SAMPLES = 1000  # conf/config.yaml's evaluate.bootstrap_samples
DEFAULT_BOOTSTRAP_SEED = 0  # conf/config.yaml's evaluate.bootstrap_seed
SET_LIST_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class ModelSource:
    """Where the save_pretrained files are, and the windows an export was made for."""

    model_dir: Path
    max_length: Optional[int] = None
    stride: Optional[int] = None
    int8_model: Optional[Path] = None  # an export's int8 model, when it has one


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
        int8_model = path / INT8_DIR / INT8_MODEL_FILE
        return ModelSource(
            hf_dir, settings.get("max_length"), settings.get("stride"), int8_model if int8_model.is_file() else None
        )
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


@dataclass(frozen=True)
class EvalSet:
    """One file to score: its name in the report, its path, and how many questions to score."""

    name: str
    path: Path
    max_samples: Optional[int]


def set_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".json"):
        name = name.removesuffix(suffix)
    return name or path.name


def sets_from_yaml(path: Path, max_samples: Optional[int]) -> list[EvalSet]:
    """Sets listed in a YAML file: a list (or {"sets": list}) of paths or of mappings with
    path and optionally name and max_samples; relative paths are relative to the YAML file.

        sets:
          - dev-v1.1.json
          - {name: news, path: news.json.gz, max_samples: 500}
    """
    if not path.is_file():
        raise PipelineError(f"--data {path}: file not found")
    try:
        listed = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise PipelineError(f"--data {path}: not a readable YAML list of sets ({str(err).splitlines()[0]})") from None
    if isinstance(listed, dict):
        listed = listed.get("sets")
    if not isinstance(listed, list) or not listed:
        raise PipelineError(
            f"--data {path}: expected a list of sets (or a 'sets' key holding one), e.g. "
            "'sets: [dev.json, {name: news, path: news.json.gz, max_samples: 500}]'"
        )
    sets = []
    for i, entry in enumerate(listed):
        entry = {"path": entry} if isinstance(entry, str) else entry
        unknown = set(entry) - {"name", "path", "max_samples"} if isinstance(entry, dict) else set()
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or unknown:
            raise PipelineError(
                f"--data {path}: set {i + 1} ({entry!r}) must be a path or a mapping with 'path' "
                "and optionally 'name' and 'max_samples'"
            )
        limit = entry.get("max_samples", max_samples)
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise PipelineError(f"--data {path}: set {i + 1}: max_samples={limit!r} is invalid: use at least 1")
        file = Path(entry["path"]).expanduser()
        file = file if file.is_absolute() else path.parent / file
        sets.append(EvalSet(str(entry.get("name") or set_name(file)), file, limit))
    return sets


def eval_sets(data: list[Path], max_samples: Optional[int]) -> list[EvalSet]:
    """The --data values in order, YAML lists expanded; names made unique and safe as directory names."""
    sets: list[EvalSet] = []
    for path in data:
        if path.suffix in SET_LIST_SUFFIXES:
            sets.extend(sets_from_yaml(path, max_samples))
        else:
            sets.append(EvalSet(set_name(path), path, max_samples))
    named, seen = [], set()
    for s in sets:
        name = s.name.replace("/", "_").replace("\\", "_").strip(". ") or "set"
        base, n = name, 2
        while name in seen:
            name, n = f"{base}-{n}", n + 1
        seen.add(name)
        named.append(EvalSet(name, s.path, s.max_samples))
    return named


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.evaluate_model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", type=Path, required=True, help="models/trained or models/export (or any such directory)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        action="append",
        help="SQuAD-format .json or .json.gz, or a .yaml listing sets; repeat for several sets",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="JSON to write: the metrics (one set) or the report (several sets)"
    )
    parser.add_argument(
        "--report", type=Path, help="markdown table of the sets' scores (default with several sets: --out with .md)"
    )
    parser.add_argument(
        "--predictions-dir",
        type=Path,
        help="also write predictions.json, nbest_predictions.json, null_odds.json "
        "(several sets: one subdirectory per set)",
    )
    parser.add_argument(
        "--max-length", type=int, help="window length in tokens (default: the one the model was trained with)"
    )
    parser.add_argument("--stride", type=int, help="window overlap (default: the one the model was trained with)")
    parser.add_argument("--n-best", type=int, default=COURSE_N_BEST)
    parser.add_argument("--max-answer-length", type=int, default=COURSE_MAX_ANSWER_LENGTH)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--max-samples", type=int, help="evaluate the first N questions of each set only")
    parser.add_argument(
        "--bad-records",
        choices=BAD_RECORD_POLICIES,
        default="error",
        help="error: stop at a bad record (default); repair: move answers whose text is a few "
        "characters off their answer_start, drop the rest; drop: drop bad records",
    )
    parser.add_argument(
        "--bootstrap-samples",
        type=int,
        default=DEFAULT_BOOTSTRAP_SAMPLES,
        help="resamples for the 95%% intervals of EM and F1",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_BOOTSTRAP_SEED, help="the bootstrap's seed")
    parser.add_argument(
        "--precision",
        choices=PRECISION_POLICIES,
        default="float32",
        help="predict in float32 (as the export serves) or auto / mixed_bfloat16 (faster on a "
        "CPU with AVX512-BF16/AMX; the logits stay float32)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=FLOAT32,
        help="float32: the model's weights in TensorFlow (at --precision); int8: an export's int8 model "
        "(export.engine=int8), run by OpenVINO",
    )
    parser.add_argument(
        "--version-2-with-negative", action="store_true", help="SQuAD v2.0: questions may be unanswerable"
    )
    parser.add_argument(
        "--null-score-diff-threshold",
        type=float,
        help='v2.0: answer "" when null score - best span score is above it (default 0.0)',
    )
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
    for flag, value in (
        ("--n-best", args.n_best),
        ("--max-answer-length", args.max_answer_length),
        ("--batch-size", args.batch_size),
        ("--max-samples", args.max_samples),
    ):
        if value is not None and value < 1:
            raise PipelineError(f"{flag}={value} is invalid: use at least 1")
    if args.bootstrap_samples < MIN_BOOTSTRAP_SAMPLES:
        raise PipelineError(
            f"--bootstrap-samples={args.bootstrap_samples} is invalid: use at least "
            f"{MIN_BOOTSTRAP_SAMPLES} (1000 is usual)"
        )
    if args.seed < 0:
        raise PipelineError(f"--seed={args.seed} is invalid: use a seed >= 0")
    if args.engine == INT8 and source.int8_model is None:
        raise PipelineError(
            f"--engine int8: {args.model} has no {INT8_DIR}/{INT8_MODEL_FILE}; give an export made with "
            "export.engine=int8 (`dvc exp run -S export.engine=int8`)"
        )
    if args.engine == INT8 and args.precision != FLOAT32:
        raise PipelineError(f"--precision={args.precision} applies to the float32 engine; drop it with --engine int8")
    threshold = args.null_score_diff_threshold if args.null_score_diff_threshold is not None else 0.0
    return (
        TokenizeConfig(max_length=max_length, stride=stride, warn_windows=None),
        EvaluateConfig(
            n_best=args.n_best,
            max_answer_length=args.max_answer_length,
            batch_size=args.batch_size,
            null_score_diff_threshold=threshold,
            bootstrap_samples=args.bootstrap_samples,
            bootstrap_seed=args.seed,
            precision=args.precision,
        ),
    )


def report_bad_records(name: str, counts: dict[str, Any]) -> None:
    if counts["repaired"]:
        print(
            f"{name}: repaired {counts['repaired']} record(s) (--bad-records {counts['policy']}), "
            f"e.g. {counts['repaired_examples'][0]}",
            file=sys.stderr,
        )
    if counts["dropped"]:
        print(
            f"{name}: dropped {counts['dropped']} bad record(s) (--bad-records {counts['policy']}), "
            f"e.g. {counts['dropped_examples'][0]}",
            file=sys.stderr,
        )


def interval(metrics: dict[str, Any], key: str) -> str:
    return f"{metrics[key]:.2f} [{metrics[f'{key}_ci95_low']:.2f}, {metrics[f'{key}_ci95_high']:.2f}]"


def markdown_report(report: dict[str, Any]) -> str:
    """The sets side by side: questions, features, EM and F1 with 95% intervals, F1 - first set's."""
    settings = report["settings"]
    lines = [
        f"Model `{settings['model']}` (windows {settings['max_length']}/{settings['stride']}"
        f"{', SQuAD v2.0' if settings['version_2_with_negative'] else ''}); intervals: 95% percentile bootstrap "
        f"over questions ({settings['bootstrap_samples']} resamples, seed {settings['bootstrap_seed']}).",
        "",
        "| set | questions | features | EM [95% CI] | F1 [95% CI] | F1 − first set |",
        "|---|---:|---:|---|---|---:|",
    ]
    for i, s in enumerate(report["sets"]):
        diff = "—" if i == 0 else f"{s['f1_diff_to_first']:+.2f}"
        lines.append(
            f"| {s['name']} | {s['examples']} | {s['features']} | {interval(s, 'exact_match')} | "
            f"{interval(s, 'f1')} | {diff} |"
        )
    notes = [
        f"{s['name']}: repaired {s['bad_records']['repaired']}, dropped {s['bad_records']['dropped']}"
        for s in report["sets"]
        if s["bad_records"]["repaired"] or s["bad_records"]["dropped"]
    ]
    if notes:
        lines += ["", f"Bad records (--bad-records {settings['bad_records']}): " + "; ".join(notes) + "."]
    return "\n".join(lines) + "\n"


def load_model(args: argparse.Namespace, source: ModelSource, evaluate_cfg: EvaluateConfig) -> LoadedModel:
    if args.engine == INT8:
        return LoadedModel.load_int8(source.model_dir, source.int8_model)
    return LoadedModel.load(source.model_dir, evaluate_cfg.precision, key="--precision")


def run(argv: list[str], progress: bool = True) -> dict[str, Any]:
    """The command line, minus the error formatting: returns what it writes to --out (one set:
    its metrics; several: the report)."""
    args = parse_args(argv)
    source = resolve_model_dir(args.model)
    tokenize_cfg, evaluate_cfg = settings_from_args(args, source)
    sets = eval_sets(args.data, args.max_samples)
    single = len(sets) == 1
    report_file = args.report or (None if single else args.out.with_suffix(".md"))
    targets = {
        "--out": args.out,
        **({"--report": report_file} if report_file else {}),
        **({"--predictions-dir": args.predictions_dir} if args.predictions_dir else {}),
    }
    refuse_pipeline_outputs(targets, [Path.cwd() / "dvc.yaml", PROJECT_ROOT / "dvc.yaml"])
    for flag, path in targets.items():  # checked before any work, not after it
        if flag != "--predictions-dir" and path.is_dir():
            raise PipelineError(f"{flag} {path}: is a directory; give a file path, e.g. {path / 'metrics.json'}")
    # Every set is read and validated before the model loads: a bad file stops the run at once.
    # Only counts are kept, so one set's examples are in memory at a time.
    for s in sets:
        if not s.path.is_file():
            raise PipelineError(f"--data {s.path}: file not found")
        read_examples(s.path, args.version_2_with_negative, s.max_samples, args.bad_records)

    loaded = load_model(args, source, evaluate_cfg)
    settings = {
        "model": str(args.model),
        **({"data": str(sets[0].path), "max_samples": sets[0].max_samples} if single else {}),
        "version_2_with_negative": args.version_2_with_negative,
        "bad_records": args.bad_records,
        "engine": args.engine,
        **asdict(tokenize_cfg),
        **asdict(evaluate_cfg),
    }
    results = []
    for i, s in enumerate(sets):
        examples, bad_records = read_examples(s.path, args.version_2_with_negative, s.max_samples, args.bad_records)
        report_bad_records(s.name, bad_records)
        label = "Predicting" if single else f"{s.name} ({i + 1}/{len(sets)})"
        evaluation = evaluate_examples(
            loaded, examples, tokenize_cfg, evaluate_cfg, args.version_2_with_negative, progress, label
        )
        if args.predictions_dir:
            out_dir = args.predictions_dir if single else args.predictions_dir / s.name
            out_dir.mkdir(parents=True, exist_ok=True)
            write_prediction_files(out_dir, evaluation.predictions)
        entry = {"name": s.name, "data": str(s.path), "max_samples": s.max_samples, **evaluation.metrics}
        entry["f1_diff_to_first"] = entry["f1"] - (results[0]["f1"] if results else entry["f1"])
        entry.update(slices=evaluation.analysis.slices, bad_records=bad_records)
        results.append(entry)
        del examples, evaluation  # one set in memory at a time

    if single:
        drop = ("name", "data", "max_samples", "f1_diff_to_first")
        output = {**{k: v for k, v in results[0].items() if k not in drop}, "settings": settings}
    else:
        output = {"sets": results, "settings": settings}
    write_json(args.out, output)
    if report_file:
        report_file.parent.mkdir(parents=True, exist_ok=True)
        report_file.write_text(markdown_report({"sets": results, "settings": settings}), encoding="utf-8")
    return output


@stage_entry_point
def main() -> None:
    output = run(sys.argv[1:])
    if "sets" in output:
        print(markdown_report(output), end="")
        return
    print(
        f"exact_match {interval(output, 'exact_match')}  f1 {interval(output, 'f1')}  on {output['examples']} "
        f"questions ({output['features']} features; 95% bootstrap intervals)"
    )


if __name__ == "__main__":
    main()
