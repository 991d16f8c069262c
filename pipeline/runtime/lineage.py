"""What each stage output was built from, recorded beside it and checked by the next stage.

`dvc repro` runs stages one after another while the workspace can change under it: DVC
releases its lock while a stage's command runs, so a concurrent `dvc exp run` in the same
workspace rewrites params.yaml and rebuilds data/raw or data/tokenized between two stages.
Each stage records the settings it built with and the content md5 (DVC's form: files.dvc_md5)
of every stage output it read; the next stage compares them with params.yaml and with the
outputs it reads, and stops with one line instead of producing, say, metrics for a model
trained on other features than the ones it is scored on.

  data/tokenized/built_with.json   settings, model.checkpoint md5, data/raw md5
  models/trained/built_with.json   model.checkpoint md5, data/tokenized md5
  predictions/evaluation.json      answer settings, models/trained md5 (and the scores)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pipeline.runtime.config import PipelineConfig
from pipeline.runtime.errors import PipelineError
from pipeline.runtime.files import dvc_md5, read_json

BUILT_WITH_FILE_NAME = "built_with.json"
# Written inside predictions/ by the evaluate stage: the scores, the evaluation data's digest,
# the answer settings they were scored with and the md5 of the model scored. The export stage
# depends on predictions/, so the model it registers carries the scores of its own answers.
EVALUATION_FILE_NAME = "evaluation.json"
MD5_SUFFIX = " md5"  # "data/raw md5": the content md5 of an input, beside the settings


def check_built_with(recorded: Mapping[str, Any], expected: Mapping[str, Any], where: Path) -> None:
    """Stop when a recorded setting differs from params.yaml (only keys present in both count)."""
    for key, value in expected.items():
        if key in recorded and recorded[key] != value:
            if key.endswith(MD5_SUFFIX):
                name = key.removesuffix(MD5_SUFFIX)
                raise PipelineError(
                    f"{where} was built from {name} with content md5 {recorded[key]}, but {name} now has md5 {value}: "
                    "it changed since (a concurrent `dvc exp run` in this workspace, files changed by hand, or "
                    "another installed version of a checkpoint); run `dvc repro` again, and run experiments with "
                    "`dvc exp run --queue` or `--temp` while a repro runs"
                )
            raise PipelineError(
                f"{where} was built with {key}={recorded[key]!r} but params.yaml has {key}={value!r}: "
                "the workspace changed during the run (a concurrent `dvc exp run`?); run `dvc repro` again, "
                "and run experiments with `dvc exp run --queue` or `--temp` while a repro runs"
            )


def content_inputs(*paths: Path) -> dict[str, str]:
    """{"<path> md5": md5} of stage outputs a stage reads: recorded with what it builds."""
    return {f"{path}{MD5_SUFFIX}": dvc_md5(path) for path in paths}


def check_content_inputs(recorded: Mapping[str, Any], where: Path, *paths: Path) -> None:
    """Stop when one of `paths` is not the content `where` was built from."""
    check_built_with(recorded, content_inputs(*paths), where)


def read_built_with(directory: Path, name: str = BUILT_WITH_FILE_NAME) -> dict[str, Any]:
    path = directory / name
    return read_json(path) if path.is_file() else {}


def tokenized_inputs(cfg: PipelineConfig, checkpoint_md5: str) -> dict[str, Any]:
    """What data/tokenized is built from: the settings, and the checkpoint's content (the md5 of
    pipeline.qa.modeling.checkpoint_fingerprint). Tokenize records them, train and evaluate check them."""
    return {
        "model.checkpoint": cfg.model.checkpoint,
        f"model.checkpoint{MD5_SUFFIX}": checkpoint_md5,
        "tokenize.max_length": cfg.tokenize.max_length,
        "tokenize.stride": cfg.tokenize.stride,
    }


def check_model_windows(windows: Mapping[str, Any], cfg: PipelineConfig, model_dir: Path) -> None:
    """Stop when a trained model's windows record (qa_windows.json) differs from params.yaml."""
    recorded = {f"tokenize.{k}": windows[k] for k in ("max_length", "stride") if k in windows}
    if "version_2_with_negative" in windows:
        recorded["data.version_2_with_negative"] = windows["version_2_with_negative"]
    check_built_with(
        recorded,
        {
            "tokenize.max_length": cfg.tokenize.max_length,
            "tokenize.stride": cfg.tokenize.stride,
            "data.version_2_with_negative": cfg.data.version_2_with_negative,
        },
        model_dir,
    )


def answer_settings(cfg: PipelineConfig, precision: str) -> dict[str, Any]:
    """Everything that shapes a model's answer to a question, beside its weights: the windows,
    the post-processing knobs and the dtype policy it predicts in. The evaluate stage records
    the settings it scored with; the export stage compares them with the settings it serves."""
    return {
        "tokenize.max_length": cfg.tokenize.max_length,
        "tokenize.stride": cfg.tokenize.stride,
        "data.version_2_with_negative": cfg.data.version_2_with_negative,
        "evaluate.n_best": cfg.evaluate.n_best,
        "evaluate.max_answer_length": cfg.evaluate.max_answer_length,
        "evaluate.null_score_diff_threshold": cfg.evaluate.null_score_diff_threshold,
        "precision": precision,
    }


def read_evaluation(predictions_dir: Path) -> dict[str, Any]:
    """The evaluate stage's record in predictions_dir (PipelineError when there is none)."""
    path = predictions_dir / EVALUATION_FILE_NAME
    if not path.is_file():
        raise PipelineError(
            f"{path}: no evaluation record (predictions built before it was written, or the "
            "evaluate stage did not run); run `dvc repro -f evaluate`"
        )
    return read_json(path)
