"""pipeline.predict on a SQuAD v2.0 export answers "" when the null score wins, as evaluate does."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import TokenizeConfig
from pipeline.predict import ExportedQA
from pipeline.tokenize import prepare_validation_features

CONTEXT = "The Eiffel Tower is in Paris. It was finished in 1889."


def _exported(tokenizer, **settings) -> ExportedQA:
    qa = object.__new__(ExportedQA)  # the answer rule only; loading a SavedModel is tested end to end
    qa.tokenizer = tokenizer
    qa.settings = {"max_length": 64, "stride": 16, **settings}
    return qa


@pytest.fixture()
def features(tokenizer):
    return prepare_validation_features({"id": ["q"], "question": ["Where is the tower?"], "context": [CONTEXT]},
                                       tokenizer, TokenizeConfig(max_length=64, stride=16))


def _logits(features, span_logit: float, cls_logit: float):
    """The span "paris" scores 2 * span_logit, CLS (no answer) 2 * cls_logit."""
    offsets = features["offset_mapping"][0]
    paris = next(i for i, o in enumerate(offsets) if o is not None and CONTEXT[o[0]:o[1]] == "paris".capitalize())
    start = np.zeros(len(offsets), np.float32)
    end = np.zeros(len(offsets), np.float32)
    start[paris] = end[paris] = span_logit
    start[0] = end[0] = cls_logit
    return [start], [end]


def test_v1_export_always_answers_with_the_best_span(tokenizer, features):
    qa = _exported(tokenizer)
    result = qa.answer_from_logits(CONTEXT, features, *_logits(features, 3.0, 9.0), 20, 30)
    assert result["answer"] == "Paris" and result["score"] == 6.0
    assert "null_odds" not in result


def test_v2_export_answers_nothing_when_the_null_score_wins(tokenizer, features):
    qa = _exported(tokenizer, version_2_with_negative=True, null_score_diff_threshold=0.0)
    result = qa.answer_from_logits(CONTEXT, features, *_logits(features, 3.0, 4.0), 20, 30)
    assert result["answer"] == "" and result["start"] is None
    assert result["null_odds"] == pytest.approx(8.0 - 6.0)


def test_v2_export_answers_when_the_span_wins_or_the_threshold_allows(tokenizer, features):
    qa = _exported(tokenizer, version_2_with_negative=True, null_score_diff_threshold=0.0)
    wins = qa.answer_from_logits(CONTEXT, features, *_logits(features, 3.0, 1.0), 20, 30)
    assert wins["answer"] == "Paris" and wins["null_odds"] == pytest.approx(2.0 - 6.0)
    # the export's threshold, then a caller's override
    lenient = _exported(tokenizer, version_2_with_negative=True, null_score_diff_threshold=5.0)
    assert lenient.answer_from_logits(CONTEXT, features, *_logits(features, 3.0, 4.0), 20, 30)["answer"] == "Paris"
    assert lenient.answer_from_logits(CONTEXT, features, *_logits(features, 3.0, 4.0), 20, 30,
                                      null_score_diff_threshold=1.0)["answer"] == ""
