"""answer_question (what pipeline.predict and the MLflow model answer with) applies the
evaluate stage's rule: for SQuAD v2.0, "" when the null score beats the best span."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.qa.exported import ExportedQA
from pipeline.qa.features import prepare_validation_features
from pipeline.qa.predictions import answer_question
from pipeline.runtime.config import TokenizeConfig

CONTEXT = "The Eiffel Tower is in Paris. It was finished in 1889."
QUESTION = "Where is the tower?"
WINDOWS = TokenizeConfig(max_length=64, stride=16)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def logits_fn(tokenizer, span_logit: float, cls_logit: float):
    """A model whose span "Paris" scores 2 * span_logit and CLS (no answer) 2 * cls_logit."""
    features = prepare_validation_features(
        {"id": ["q"], "question": [QUESTION], "context": [CONTEXT]}, tokenizer, WINDOWS
    )
    offsets = features["offset_mapping"][0]
    paris = next(i for i, o in enumerate(offsets) if o is not None and CONTEXT[o[0] : o[1]] == "Paris")

    def run(batch):
        start = np.zeros(batch["input_ids"].shape, np.float32)
        end = np.zeros(batch["input_ids"].shape, np.float32)
        start[:, paris] = end[:, paris] = span_logit
        start[:, 0] = end[:, 0] = cls_logit
        return start, end

    return run


def answer(tokenizer, span_logit, cls_logit, version_2, threshold=0.0):
    return answer_question(
        logits_fn(tokenizer, span_logit, cls_logit),
        tokenizer,
        QUESTION,
        CONTEXT,
        WINDOWS,
        INPUTS,
        20,
        30,
        version_2,
        threshold,
    )


def test_v1_always_answers_with_the_best_span(tokenizer):
    result = answer(tokenizer, 3.0, 9.0, version_2=False)
    assert result["answer"] == "Paris" and result["score"] == 6.0
    assert CONTEXT[result["start"] : result["end"]] == "Paris" and result["windows"] == 1
    assert "null_odds" not in result


def test_v2_answers_nothing_when_the_null_score_wins(tokenizer):
    result = answer(tokenizer, 3.0, 4.0, version_2=True)
    assert result["answer"] == "" and result["start"] is None and result["score"] is None
    assert result["null_odds"] == pytest.approx(8.0 - 6.0)


def test_v2_answers_when_the_span_wins_or_the_threshold_allows(tokenizer):
    wins = answer(tokenizer, 3.0, 1.0, version_2=True)
    assert wins["answer"] == "Paris" and wins["null_odds"] == pytest.approx(2.0 - 6.0)
    assert answer(tokenizer, 3.0, 4.0, version_2=True, threshold=5.0)["answer"] == "Paris"


def test_an_export_applies_its_recorded_threshold_unless_given_one(tokenizer):
    qa = object.__new__(ExportedQA)  # the settings only; loading a SavedModel is tested end to end
    qa.tokenizer = tokenizer
    qa.settings = {
        "max_length": 64,
        "stride": 16,
        "signature_inputs": list(INPUTS),
        "version_2_with_negative": True,
        "null_score_diff_threshold": 5.0,
    }
    qa.logits = logits_fn(tokenizer, 3.0, 4.0)
    assert qa.answer(QUESTION, CONTEXT, 20, 30)["answer"] == "Paris"
    assert qa.answer(QUESTION, CONTEXT, 20, 30, null_score_diff_threshold=1.0)["answer"] == ""
