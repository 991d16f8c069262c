"""The export as an MLflow model: a pyfunc PythonModel over qa.exported.ExportedQA.

Logged by the export stage (pipeline.export), loaded by `mlflow.pyfunc.load_model`,
`mlflow models serve` and pipeline.predict (models:/ URIs). Its artifacts are the export's
parts (qa.serving's layout): the SavedModel, the tokenizer files and inference.json; the
`pipeline` package ships with it (code_paths), so it loads wherever its pip requirements
are installed, without this repo.

predict() answers every row through qa.predictions.answer_questions, the code the evaluate
stage and pipeline.predict answer with: all rows tokenized at once into the same stride
windows, logits in length-sorted batches, the vectorized post-processing and the one answer
rule. A bad row (missing or non-string field, empty question, context over
max_context_chars, question too long for a window) raises MlflowException with
INVALID_PARAMETER_VALUE, which `mlflow models serve` returns as HTTP 400.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any, Optional

import pandas as pd

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.qa.exported import ExportedQA
from pipeline.qa.predictions import check_questions
from pipeline.qa.int8 import FLOAT32, INT8
from pipeline.qa.serving import HF_DIR, INDEX_DIR, INFERENCE_FILE, INT8_DIR, SAVED_MODEL_DIR
from pipeline.runtime.errors import PipelineError
from pipeline.runtime.paths import PROJECT_ROOT

import mlflow.pyfunc
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

# Artifact keys of the logged model (context.artifacts).
SAVED_MODEL_ARTIFACT = "saved_model"
TOKENIZER_ARTIFACT = "tokenizer"
SETTINGS_ARTIFACT = "inference"
INT8_ARTIFACT = "int8"
INDEX_ARTIFACT = "index"
# Overrides the logged max_context_chars where the model is served.
MAX_CONTEXT_ENV = "QA_MAX_CONTEXT_CHARS"
# Needed to train or run the pipeline, not to answer questions.
NOT_NEEDED_TO_SERVE = ("dvc",)
# Weights in hf/ duplicate the SavedModel's: the MLflow model ships only the tokenizer files.
WEIGHT_SUFFIXES = (".h5", ".safetensors", ".bin", ".msgpack")


def input_example() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "question": "What is the capital of France?",
                "context": "Paris is the capital and most populous city of France.",
            }
        ]
    )


class InvalidRequest(MlflowException):
    """A bad request (HTTP 400 from `mlflow models serve`) whose message stays one line: the
    scoring server prefixes every prediction error with a dump of the input data, which this
    exception keeps out of its message."""

    def __init__(self, message: str) -> None:
        self._one_line = message
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._one_line

    @message.setter
    def message(self, value: str) -> None:
        pass  # the scoring server's "Failed to predict data '<the whole input>'" prefix


def tokenizer_files(hf_dir: Path, out_dir: Path) -> Path:
    """Copy hf/ without its weights (the SavedModel has them) into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(hf_dir.iterdir()):
        if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES):
            shutil.copy2(path, out_dir / path.name)
    return out_dir


def artifacts(export_dir: Path, scratch_dir: Path) -> dict[str, str]:
    files = {
        SAVED_MODEL_ARTIFACT: str(export_dir / SAVED_MODEL_DIR),
        TOKENIZER_ARTIFACT: str(tokenizer_files(export_dir / HF_DIR, scratch_dir / TOKENIZER_ARTIFACT)),
        SETTINGS_ARTIFACT: str(export_dir / INFERENCE_FILE),
    }
    if (export_dir / INT8_DIR).is_dir():
        files[INT8_ARTIFACT] = str(export_dir / INT8_DIR)
    if (export_dir / INDEX_DIR).is_dir():
        files[INDEX_ARTIFACT] = str(export_dir / INDEX_DIR)
    return files


def pip_requirements(pyproject: Path = PROJECT_ROOT / "pyproject.toml", engine: str = FLOAT32) -> list[str]:
    """The project's pinned dependencies (pyproject.toml), minus those only the pipeline needs,
    plus the int8 extra for an export that serves int8."""
    import tomllib

    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    dependencies = project["dependencies"] + (project["optional-dependencies"][INT8] if engine == INT8 else [])
    return [d for d in dependencies if d.split("==")[0].strip() not in NOT_NEEDED_TO_SERVE]


def model_kwargs(
    export_dir: Path,
    scratch_dir: Path,
    pip_requirements: list[str],
    n_best: int,
    max_answer_length: int,
    batch_size: int,
    max_context_chars: int,
    engine: Optional[str] = None,
) -> dict[str, Any]:
    """The arguments of mlflow.pyfunc.log_model / save_model for an export: the QAModel, its
    artifacts, the `pipeline` package as code (copied without caches into scratch_dir), the
    signature, an input example, the requirements and the model config."""
    import json

    settings = json.loads((Path(export_dir) / INFERENCE_FILE).read_text(encoding="utf-8"))
    version_2 = bool(settings.get("version_2_with_negative"))
    code = Path(scratch_dir) / "code" / "pipeline"
    shutil.copytree(Path(pipeline.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return {
        "python_model": QAModel(),
        "artifacts": artifacts(Path(export_dir), Path(scratch_dir)),
        "code_paths": [str(code)],
        "signature": signature(version_2, n_best, max_answer_length, settings.get("null_score_diff_threshold", 0.0)),
        "input_example": input_example(),
        "pip_requirements": pip_requirements,
        "model_config": {
            "n_best": n_best,
            "max_answer_length": max_answer_length,
            "batch_size": batch_size,
            "max_context_chars": max_context_chars,
            **({"engine": engine} if engine else {}),  # None: the export's own (inference.json)
        },
    }


def signature(version_2_with_negative: bool, n_best: int, max_answer_length: int, null_score_diff_threshold: float):
    """question, context (optional with an index: a row without one is answered from it; and an
    optional id) in; answer, score, start, end (and null_odds; doc_id and title of an answer from
    the index) out; the post-processing settings as inference params."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema(
        [
            ColSpec("string", "question"),
            ColSpec("string", "context", required=False),
            ColSpec("string", "id", required=False),
        ]
    )
    outputs = [
        ColSpec("string", "answer"),
        ColSpec("double", "score", required=False),
        ColSpec("long", "start", required=False),
        ColSpec("long", "end", required=False),
    ]
    params = [ParamSpec("n_best", "long", n_best), ParamSpec("max_answer_length", "long", max_answer_length)]
    if version_2_with_negative:
        outputs.append(ColSpec("double", "null_odds", required=False))
        params.append(ParamSpec("null_score_diff_threshold", "double", null_score_diff_threshold))
    outputs.append(ColSpec("string", "engine", required=False))  # float32 or int8: what computed the logits
    outputs.append(ColSpec("string", "doc_id", required=False))  # an answer from the index: its document
    outputs.append(ColSpec("string", "title", required=False))
    return ModelSignature(inputs=inputs, outputs=Schema(outputs), params=ParamSchema(params))


def _columns(model_input: Any) -> tuple[list, list, int]:
    """(questions, contexts, rows) from a DataFrame, a dict of columns or a list of records."""
    frame = (
        model_input
        if isinstance(model_input, pd.DataFrame)
        else pd.DataFrame(
            [model_input]
            if isinstance(model_input, dict) and not any(isinstance(v, list) for v in model_input.values())
            else model_input
        )
    )
    if "question" not in frame.columns:
        raise InvalidRequest("missing field 'question': every row needs a question")
    contexts = frame["context"].tolist() if "context" in frame.columns else [None] * len(frame)
    return frame["question"].tolist(), [None if _absent(c) else c for c in contexts], len(frame)


def _absent(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


class QAModel(mlflow.pyfunc.PythonModel):
    """Answers SQuAD-style questions from a context with the exported TensorFlow model."""

    def load_context(self, context) -> None:
        art = context.artifacts
        self.qa = ExportedQA.from_files(
            art[SAVED_MODEL_ARTIFACT],
            art[TOKENIZER_ARTIFACT],
            art[SETTINGS_ARTIFACT],
            art.get(INT8_ARTIFACT),
            (context.model_config or {}).get("engine"),
            art.get(INDEX_ARTIFACT),
        )
        print(f"squad-pipeline QA model: answers with the {self.qa.engine} engine", flush=True)
        self.index = None
        if self.qa.index_dir is not None:
            self.index = self.qa.load_index()
            choice = self.index.choice()
            if choice is None:
                raise PipelineError(f"{self.qa.index_dir}: no retrieval.json (k and weight); re-export the model")
            self.k, self.weight = choice
            print(
                f"squad-pipeline QA model: a question without a context is answered from {self.index.meta['passages']} "
                f"passages (top {self.k}, weight {self.weight})",
                flush=True,
            )
        config = dict(context.model_config or {})
        self.n_best = int(config.get("n_best", 20))
        self.max_answer_length = int(config.get("max_answer_length", 30))
        self.batch_size = int(config.get("batch_size", 32))
        limit = os.environ.get(MAX_CONTEXT_ENV) or config.get("max_context_chars")
        self.max_context_chars: Optional[int] = int(limit) if limit else None
        # The scoring server calls predict() from several threads at once; a fast tokenizer
        # switching truncation settings under another thread fails ("Already borrowed"), and on
        # a CPU TensorFlow already uses every core for one batch: one request at a time.
        self._lock = threading.Lock()

    # A DataFrame hint: MLflow infers no signature from it (the explicit one stays).
    def predict(self, context, model_input: pd.DataFrame, params: Optional[dict[str, Any]] = None) -> pd.DataFrame:
        params = params or {}
        n_best = int(params.get("n_best", self.n_best))
        max_answer_length = int(params.get("max_answer_length", self.max_answer_length))
        if not 1 <= n_best <= 100 or not 1 <= max_answer_length <= self.qa.windows.max_length:
            raise InvalidRequest(
                f"n_best must be in [1, 100] and max_answer_length in "
                f"[1, {self.qa.windows.max_length}]; got {n_best} and {max_answer_length}"
            )
        questions, contexts, rows = _columns(model_input)
        if rows == 0:
            return pd.DataFrame(columns=self.output_columns)
        given = [i for i, c in enumerate(contexts) if c is not None]
        open_rows = [i for i, c in enumerate(contexts) if c is None]
        if open_rows and self.index is None:
            raise InvalidRequest(
                f"row {open_rows[0]} has no context, and this model carries no passage index: send a context"
            )
        results: list[dict[str, Any]] = [{} for _ in range(rows)]
        with self._lock:
            try:
                check_questions(  # a row without a context is read against passages: only its question is checked
                    self.qa.tokenizer,
                    questions,
                    ["-" if c is None else c for c in contexts],
                    self.qa.windows,
                    self.max_context_chars,
                )
            except PipelineError as err:
                raise InvalidRequest(str(err)) from None
            if given:
                answered = self.qa.answer_many(
                    [questions[i] for i in given],
                    [contexts[i] for i in given],
                    n_best,
                    max_answer_length,
                    params.get("null_score_diff_threshold"),
                    batch_size=self.batch_size,
                )
                for i, result in zip(given, answered):
                    results[i] = result
            if open_rows:
                answered = self.qa.answer_open(
                    self.index,
                    [questions[i] for i in open_rows],
                    self.k,
                    self.weight,
                    n_best,
                    max_answer_length,
                    self.batch_size,
                )
                for i, result in zip(open_rows, answered):
                    results[i] = result
        out = [{**{k: r.get(k) for k in self.output_columns}, "engine": self.qa.engine} for r in results]
        return pd.DataFrame(out, columns=self.output_columns)

    @property
    def output_columns(self) -> list[str]:
        columns = ["answer", "score", "start", "end"]
        columns += (["null_odds"] if self.qa.version_2_with_negative else []) + ["engine"]
        return columns + (["doc_id", "title"] if self.index is not None else [])
