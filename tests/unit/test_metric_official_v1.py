"""The local squad metric equals the official SQuAD v1.1 evaluation, re-implemented here,
on real predictions over the whole shipped validation sample.

The reference follows the published evaluate-v1.1 definition step by step (normalise:
lower case, drop punctuation, drop a/an/the, collapse whitespace; exact match; bag-of-tokens
F1; maximum over the ground truths; mean over questions, as a percentage) and is written
independently of pipeline/metrics/squad/squad.py.
"""

from __future__ import annotations

import re
import string
from collections import Counter

import numpy as np
import pytest

from pipeline.runtime.config import TokenizeConfig
from pipeline.qa.metrics import load_metric
from tests.helpers.postprocess import postprocess_predictions
from pipeline.qa.features import prepare_validation_features
from tests.helpers.qa_logits import realistic_logits


def official_normalize_answer(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def official_f1(prediction, ground_truth):
    prediction_tokens = official_normalize_answer(prediction).split()
    ground_truth_tokens = official_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def official_exact(prediction, ground_truth):
    return official_normalize_answer(prediction) == official_normalize_answer(ground_truth)


def official_evaluate(answers_by_id, predictions):
    f1 = exact_match = total = 0
    per_question_f1 = []
    for qid, ground_truths in answers_by_id.items():
        total += 1
        if qid not in predictions:
            continue
        prediction = predictions[qid]
        exact_match += max(official_exact(prediction, gt) for gt in ground_truths)
        question_f1 = max(official_f1(prediction, gt) for gt in ground_truths)
        per_question_f1.append(question_f1)
        f1 += question_f1
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}, per_question_f1


def restyle(text, rng):
    """The same answer as a person might write it: articles, punctuation, case, spacing."""
    if not text:
        return text
    style = rng.integers(0, 5)
    return [text, f"The {text}", f"{text.upper()}!", f"  {text} .", f"({text.lower()})"][style]


@pytest.fixture(scope="module")
def validation(sample_raw, tokenizer):
    examples = sample_raw["validation"][:]
    features = prepare_validation_features(examples, tokenizer, TokenizeConfig(max_length=384, stride=128))
    return examples, features


@pytest.mark.parametrize("seed", [0, 1])
def test_local_squad_metric_equals_the_official_definition(validation, seed):
    examples, features = validation
    answers_by_id = dict(zip(examples["id"], examples["answers"]))
    starts, ends = realistic_logits(features, answers_by_id, seed)
    answers = postprocess_predictions(
        examples["id"], examples["context"], features["example_id"], features["offset_mapping"], starts, ends
    ).answers
    rng = np.random.default_rng(seed)
    answers = {qid: restyle(text, rng) if rng.random() < 0.3 else text for qid, text in answers.items()}

    expected, per_question_f1 = official_evaluate({q: a["text"] for q, a in answers_by_id.items()}, answers)
    got = load_metric("squad").compute(
        predictions=[{"id": q, "prediction_text": answers[q]} for q in examples["id"]],
        references=[{"id": q, "answers": a} for q, a in answers_by_id.items()],
    )

    assert got == pytest.approx(expected, abs=1e-9)
    # real predictions, not a degenerate case: right, partly right and wrong answers
    assert len(per_question_f1) == len(examples["id"]) == 627
    assert 20.0 < expected["exact_match"] < 80.0
    assert expected["f1"] > expected["exact_match"] + 2.0
    assert sum(0.0 < f < 1.0 for f in per_question_f1) >= 30
