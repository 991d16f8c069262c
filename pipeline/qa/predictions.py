"""Predict a split or one question, score predictions, write the prediction files.

Both paths go through the same code: features (qa.features), logits in length-sorted
batches (qa.inference), the vectorized post-processing (qa.postprocess) and the one answer
rule (qa.answers.PredictionCollector). So pipeline.predict answers a question exactly as
the evaluate stage does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from pipeline.qa.analysis import Analysis, analyse, windows_per_example
from pipeline.qa.answers import QAPredictions
from pipeline.qa.batching import FeatureTable, RaggedColumn
from pipeline.qa.features import check_windows, prepare_validation_features, tokenize_examples
from pipeline.qa.int8 import int8_logits_fn
from pipeline.qa.inference import LogitsFn, keras_logits_fn, load_inference_model, predict_logits
from pipeline.qa.metrics import load_metric
from pipeline.qa.modeling import load_tokenizer
from pipeline.qa.postprocess import ContextOffsets, postprocess_predictions
from pipeline.qa.squad import load_examples
from pipeline.runtime.config import EvaluateConfig, TokenizeConfig
from pipeline.runtime.errors import PipelineError
from pipeline.runtime.files import write_json

# transformers' utils_qa layouts, which the official SQuAD evaluation scripts read unchanged.
PREDICTIONS_FILE = "predictions.json"  # id -> answer text ("" = no answer)
NBEST_FILE = "nbest_predictions.json"  # id -> the n_best candidates
NULL_ODDS_FILE = "null_odds.json"  # id -> null score minus best span score (SQuAD v2.0 only)

# The course's post-processing settings: the defaults of the commands (conf/config.yaml
# has the same values for the pipeline; a test checks they agree).
COURSE_N_BEST = 20
COURSE_MAX_ANSWER_LENGTH = 30


def predict_split(
    logits_fn: LogitsFn,
    examples,
    features,
    cfg: EvaluateConfig,
    version_2_with_negative: bool,
    pad_token_id: int = 0,
    progress: bool = True,
    progress_label: str = "Predicting",
) -> QAPredictions:
    """Post-processed predictions for a split and its features.

    `examples` needs id and context columns, `features` (a datasets.Dataset) the model
    inputs, example_id and offset_mapping.
    """
    table = FeatureTable.from_dataset(features, pad_token_id=pad_token_id)
    max_length = int(table.lengths.max()) if len(table) else 1
    starts, ends = predict_logits(
        logits_fn, table, cfg.batch_size, max_length, progress=progress, progress_label=progress_label
    )
    return postprocess_predictions(
        examples["id"],
        examples["context"],
        features["example_id"],
        ContextOffsets.from_dataset(features),
        starts,
        ends,
        cfg.n_best,
        cfg.max_answer_length,
        version_2_with_negative,
        cfg.null_score_diff_threshold,
    )


class InvalidQuestion(PipelineError):
    """A question (or its context) the model cannot answer as given; the message names the
    row, the field and the fix."""


def check_questions(
    tokenizer: Any,
    questions: Sequence[Any],
    contexts: Sequence[Any],
    windows: TokenizeConfig,
    max_context_chars: Optional[int] = None,
    first_row: int = 0,
) -> None:
    """Raise InvalidQuestion for the first row that is not a non-empty string question and
    context, has a context over `max_context_chars` characters, or a question too long to
    leave room for `stride` context tokens in a window (the tokenizer would panic)."""
    for i, (question, context) in enumerate(zip(questions, contexts)):
        row = f"row {first_row + i}"
        for field_name, value in (("question", question), ("context", context)):
            if not isinstance(value, str):
                missing = value is None or (isinstance(value, float) and value != value)
                shown = "null" if missing else f"{type(value).__name__} {value!r:.40}"
                raise InvalidQuestion(f"{row}: {field_name} must be a string, got {shown}")
            if not value.strip():
                raise InvalidQuestion(
                    f"{row}: {field_name} is empty; "
                    + ("ask a question" if field_name == "question" else "give the text to answer from")
                )
        if max_context_chars is not None and len(context) > max_context_chars:
            raise InvalidQuestion(
                f"{row}: context has {len(context):,} characters, over the limit of "
                f"{max_context_chars:,}; split it or raise max_context_chars"
            )
    # The question-length rule is qa.features.check_windows' (one rule, one place).
    try:
        check_windows(
            [first_row + i for i in range(len(questions))], questions, contexts, tokenizer, windows, label="row {id}"
        )
    except PipelineError as err:
        raise InvalidQuestion(str(err)) from None


def answer_question(
    logits_fn: LogitsFn,
    tokenizer: Any,
    question: str,
    context: str,
    windows: TokenizeConfig,
    input_names: tuple[str, ...],
    n_best: int,
    max_answer_length: int,
    version_2_with_negative: bool,
    null_score_diff_threshold: float,
) -> dict[str, Any]:
    """One question: the answer, its score (start + end logit), character offsets and the
    number of windows; for SQuAD v2.0 also null_odds ("" answers when they pass the threshold)."""
    if not question.strip():
        raise PipelineError("--question is empty; ask a question")
    if not context.strip():
        raise PipelineError("--context is empty; give the text to answer from")
    check_questions(tokenizer, [question], [context], windows)
    return answer_questions(
        logits_fn,
        tokenizer,
        [question],
        [context],
        windows,
        input_names,
        n_best,
        max_answer_length,
        version_2_with_negative,
        null_score_diff_threshold,
    )[0]


def answer_questions(
    logits_fn: LogitsFn,
    tokenizer: Any,
    questions: Sequence[str],
    contexts: Sequence[str],
    windows: TokenizeConfig,
    input_names: tuple[str, ...],
    n_best: int,
    max_answer_length: int,
    version_2_with_negative: bool,
    null_score_diff_threshold: float,
    batch_size: int = 16,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Many questions at once, each answered as answer_question answers it: every question's
    windows tokenized in one call, logits in length-sorted batches of `batch_size` windows,
    then the vectorized post-processing. One result dict per question, in input order."""
    ids = [str(i) for i in range(len(questions))]  # internal ids: the caller's may repeat or be absent
    features = prepare_validation_features(
        {"id": ids, "question": list(questions), "context": list(contexts)}, tokenizer, windows
    )
    columns = {
        name: RaggedColumn.from_lists(
            features[name] if name in features else [[0] * len(r) for r in features["input_ids"]]
        )
        for name in input_names
    }
    table = FeatureTable(columns, {}, tokenizer.pad_token_id or 0)
    starts, ends = predict_logits(
        logits_fn, table, batch_size=batch_size, max_length=windows.max_length, progress=progress
    )
    predictions = postprocess_predictions(
        ids,
        list(contexts),
        features["example_id"],
        ContextOffsets.from_lists(features["offset_mapping"]),
        starts,
        ends,
        n_best,
        max_answer_length,
        version_2_with_negative,
        null_score_diff_threshold,
    )
    n_windows = Counter(features["example_id"])
    results = []
    for i in ids:
        span = predictions.spans[i]
        result: dict[str, Any] = {
            "answer": predictions.answers[i],
            "score": None,
            "start": None,
            "end": None,
            "windows": n_windows[i],
        }
        if span is not None:
            result.update(score=round(float(np.float32(span.score)), 4), start=span.start_char, end=span.end_char)
        if version_2_with_negative:
            odds = predictions.null_odds[i]
            result["null_odds"] = round(float(np.float32(odds)), 4) if np.isfinite(odds) else None
        results.append(result)
    return results


def passage_reader(
    logits_fn: LogitsFn,
    tokenizer: Any,
    windows: TokenizeConfig,
    input_names: tuple[str, ...],
    n_best: int,
    max_answer_length: int,
    batch_size: int = 64,
) -> Callable[[Sequence[str], Sequence[str]], list[dict[str, Any]]]:
    """The evaluate stage's answer rule as qa.open_domain's Reader: every passage's best span (never the null
    answer), with its null odds."""

    def read(questions: Sequence[str], contexts: Sequence[str]) -> list[dict[str, Any]]:
        return answer_questions(
            logits_fn,
            tokenizer,
            questions,
            contexts,
            windows,
            input_names,
            n_best,
            max_answer_length,
            version_2_with_negative=True,  # null odds for every passage ...
            null_score_diff_threshold=float("inf"),  # ... and the best span always answered
            batch_size=batch_size,
        )

    return read


def score(
    predictions: QAPredictions, examples, version_2_with_negative: bool, null_score_diff_threshold: float
) -> dict[str, float]:
    """SQuAD v1.1 or v2.0 metrics of the predictions against the examples' answers.

    For v2.0 the null odds go to the metric as no-answer probabilities, with the
    post-processing threshold as its no-answer threshold: the metric then scores exactly
    the answers post-processing chose, and its best_*_thresh are null-odds thresholds that
    can be set as evaluate.null_score_diff_threshold. v2.0 results add exact_match (= exact)
    so every run has exact_match and f1.
    """
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
    return {"exact_match": result["exact"], **result}


@dataclass
class LoadedModel:
    """A save_pretrained QA model ready to score sets: its tokenizer and batched logits."""

    tokenizer: Any
    logits_fn: LogitsFn
    policy: str = "float32"  # the Keras dtype policy the logits are computed in ("int8" for that engine)

    @classmethod
    def load(cls, model_dir: Path, precision: str = "float32", key: str = "evaluate.precision") -> "LoadedModel":
        model = load_inference_model(str(model_dir), precision, key)
        return cls(load_tokenizer(str(model_dir)), keras_logits_fn(model), model.dtype_policy.name)

    @classmethod
    def load_int8(cls, model_dir: Path, int8_model: Path) -> "LoadedModel":
        """The int8 engine (qa.int8) of an export: the tokenizer from model_dir, logits from int8_model."""
        return cls(load_tokenizer(str(model_dir)), int8_logits_fn(int8_model), "int8")

    def reader(
        self, windows: TokenizeConfig, n_best: int, max_answer_length: int, batch_size: int = 64
    ) -> Callable[[Sequence[str], Sequence[str]], list[dict[str, Any]]]:
        """This model as a passage reader (passage_reader), on the tokenizer's own inputs."""
        return passage_reader(
            self.logits_fn,
            self.tokenizer,
            windows,
            tuple(self.tokenizer.model_input_names),
            n_best,
            max_answer_length,
            batch_size,
        )


@dataclass
class SetEvaluation:
    """A set's metrics (the SQuAD metric's, plus examples and features), its predictions, and
    the analysis (slices, intervals, risk-coverage, calibration)."""

    metrics: dict[str, Any]
    predictions: QAPredictions
    analysis: Analysis


def evaluate_examples(
    loaded: LoadedModel,
    examples: dict[str, list],
    tokenize_cfg: TokenizeConfig,
    evaluate_cfg: EvaluateConfig,
    version_2_with_negative: bool = False,
    progress: bool = True,
    progress_label: str = "Predicting",
) -> SetEvaluation:
    """Score a loaded model on examples (id/question/context/answers columns): features,
    predictions, the SQuAD metric, and the analysis with evaluate_cfg's bootstrap settings."""
    features = tokenize_examples(examples, loaded.tokenizer, tokenize_cfg)
    predictions = predict_split(
        loaded.logits_fn,
        examples,
        features,
        evaluate_cfg,
        version_2_with_negative,
        loaded.tokenizer.pad_token_id or 0,
        progress,
        progress_label,
    )
    metrics = score(predictions, examples, version_2_with_negative, evaluate_cfg.null_score_diff_threshold)
    result = analyse(
        predictions,
        examples,
        windows_per_example(features["example_id"]),
        version_2_with_negative,
        evaluate_cfg.bootstrap_samples,
        evaluate_cfg.bootstrap_seed,
    )
    metrics.update(result.summary, examples=len(examples["id"]), features=features.num_rows)
    return SetEvaluation(metrics, predictions, result)


def evaluate_file(
    model_dir: Path,
    data_file: Path,
    tokenize_cfg: TokenizeConfig,
    evaluate_cfg: EvaluateConfig,
    version_2_with_negative: bool = False,
    max_samples: Optional[int] = None,
    progress: bool = True,
) -> tuple[dict[str, Any], Any]:
    """(metrics, QAPredictions) of a save_pretrained model on a SQuAD-format file, every question
    validated and scored."""
    examples = load_examples(data_file, version_2_with_negative, max_samples)
    loaded = LoadedModel.load(model_dir, evaluate_cfg.precision)
    evaluation = evaluate_examples(loaded, examples, tokenize_cfg, evaluate_cfg, version_2_with_negative, progress)
    return evaluation.metrics, evaluation.predictions


def write_prediction_files(out_dir: Path, predictions: QAPredictions) -> list[Path]:
    """predictions.json, nbest_predictions.json and (v2.0) null_odds.json in out_dir."""
    files: dict[str, Optional[dict]] = {PREDICTIONS_FILE: predictions.answers, NBEST_FILE: predictions.nbest}
    if predictions.null_odds is not None:
        files[NULL_ODDS_FILE] = predictions.null_odds
    for name, content in files.items():
        write_json(out_dir / name, content)
    return [out_dir / name for name in files]
