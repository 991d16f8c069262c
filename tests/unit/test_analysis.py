"""pipeline.qa.analysis on hand-built predictions with known answers: slices, per-question
scores that agree with the metrics, seeded bootstrap intervals, risk-coverage, calibration."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.qa.analysis import (
    analyse,
    answer_confidence,
    bootstrap_intervals,
    calibration,
    question_scores,
    question_word,
    risk_coverage,
    slice_labels,
)
from pipeline.qa.answers import QAPredictions
from pipeline.qa.metrics import load_metric

CONTEXT = "Paris is the capital of France. It has 2 million people. The Seine runs through it."
#          0         1         2         3         4         5         6         7         8


def example(qid, question, text, start=None):
    start = CONTEXT.index(text) if start is None else start
    return {"id": qid, "question": question, "context": CONTEXT, "answers": {"text": [text], "answer_start": [start]}}


EXAMPLES = [
    example("a", "What is the capital of France?", "Paris"),  # 1 token, first third
    example("b", "Who lives there?", "2 million people"),  # 3 tokens, second third
    example("c", "Which river runs through it?", "The Seine"),  # 2 tokens, last third
    example("d", "Name the country.", "France"),  # other, 1 token, first third
]
# predictions: a right, b half right (F1 2/3 of "2 million people" vs "2 million"), c wrong, d right
ANSWERS = {"a": "Paris", "b": "2 million", "c": "France", "d": "France"}
NBEST = {
    "a": [{"text": "Paris", "probability": 0.9}, {"text": "France", "probability": 0.1}],
    "b": [{"text": "2 million", "probability": 0.6}, {"text": "people", "probability": 0.4}],
    "c": [{"text": "France", "probability": 0.3}, {"text": "The Seine", "probability": 0.2}],
    "d": [{"text": "France", "probability": 0.8}],
}
WINDOWS = {"a": 1, "b": 2, "c": 3, "d": 5}
F1_B = 100 * 2 * (1.0 * 2 / 3) / (1.0 + 2 / 3)  # precision 1, recall 2/3


def columns(examples):
    return {key: [e[key] for e in examples] for key in ("id", "question", "context", "answers")}


def predictions(answers=ANSWERS, nbest=NBEST):
    return QAPredictions(answers=dict(answers), nbest=dict(nbest))


@pytest.mark.parametrize(
    "question,word",
    [
        ("What is it?", "what"),
        ("In what year?", "what"),
        ("What's that?", "what"),
        ("Whose dog barked?", "who"),
        ("To whom?", "who"),
        ("WHEN did it end?", "when"),
        ("How many?", "how"),
        ("The team beat which rival?", "which"),
        ("Where and why?", "where"),
        ("Why?", "why"),
        ("Name the river.", "other"),
        ("Somewhat large?", "other"),
    ],
)
def test_question_word_is_the_first_wh_word(question, word):
    assert question_word(question) == word


def test_slice_labels_of_each_dimension():
    assert slice_labels("Who?", CONTEXT, EXAMPLES[1]["answers"], 2) == {
        "question_word": "who",
        "answer_tokens": "3-4",
        "windows": "2",
        "answer_position": "second third",
    }
    assert slice_labels("Why?", CONTEXT, {"text": [], "answer_start": []}, 7) == {
        "question_word": "why",
        "answer_tokens": "no answer",
        "windows": "3+",
        "answer_position": "no answer",
    }
    long = {"text": ["one two three four five six seven eight nine"], "answer_start": [len(CONTEXT) - 1]}
    assert slice_labels("How?", CONTEXT, long, 1)["answer_tokens"] == "9+"
    assert slice_labels("How?", CONTEXT, long, 1)["answer_position"] == "last third"


def test_slices_on_known_predictions():
    result = analyse(predictions(), columns(EXAMPLES), WINDOWS, False, bootstrap_samples=200, seed=0)
    s = result.slices
    assert s["question_word"] == {
        "what": {"exact_match": 100.0, "f1": 100.0, "count": 1},
        "who": {"exact_match": 0.0, "f1": pytest.approx(F1_B), "count": 1},
        "which": {"exact_match": 0.0, "f1": 0.0, "count": 1},
        "other": {"exact_match": 100.0, "f1": 100.0, "count": 1},
    }
    assert s["answer_tokens"] == {
        "1": {"exact_match": 100.0, "f1": 100.0, "count": 2},
        "2": {"exact_match": 0.0, "f1": 0.0, "count": 1},
        "3-4": {"exact_match": 0.0, "f1": pytest.approx(F1_B), "count": 1},
    }
    assert list(s["windows"]) == ["1", "2", "3+"] and s["windows"]["3+"]["count"] == 2
    assert s["windows"]["3+"]["f1"] == 50.0  # c wrong, d right
    assert s["answer_position"] == {
        "first third": {"exact_match": 100.0, "f1": 100.0, "count": 2},
        "second third": {"exact_match": 0.0, "f1": pytest.approx(F1_B), "count": 1},
        "last third": {"exact_match": 0.0, "f1": 0.0, "count": 1},
    }
    rows = result.slice_rows()
    assert rows[0] == {"slice": "question word: what", "f1": 100.0, "exact_match": 100.0, "count": 1}
    assert len(rows) == 4 + 3 + 3 + 3
    table = result.slice_table()
    assert table["dimension"][:4] == ["question_word"] * 4 and table["slice"][:4] == ["what", "who", "which", "other"]


@pytest.mark.parametrize("version_2", [False, True], ids=["v1.1", "v2.0"])
def test_per_question_scores_average_to_the_metric(version_2):
    examples = (
        EXAMPLES
        + [{"id": "e", "question": "Who flew?", "context": CONTEXT, "answers": {"text": [], "answer_start": []}}]
        if version_2
        else EXAMPLES
    )
    answers = {**ANSWERS, "e": "", "a": "the Paris!"} if version_2 else {**ANSWERS, "a": "the Paris!"}
    references = [{"id": e["id"], "answers": e["answers"]} for e in examples]
    exact, f1 = question_scores(answers, references, version_2)
    if version_2:
        metric = load_metric("squad_v2").compute(
            predictions=[{"id": i, "prediction_text": t, "no_answer_probability": 0.0} for i, t in answers.items()],
            references=references,
            no_answer_threshold=1.0,
        )
        expected = (metric["exact"], metric["f1"])
        assert exact[-1] == f1[-1] == 100.0  # "" on an unanswerable question
    else:
        metric = load_metric("squad").compute(
            predictions=[{"id": i, "prediction_text": t} for i, t in answers.items()], references=references
        )
        expected = (metric["exact_match"], metric["f1"])
    assert exact[0] == 100.0  # normalised as the metric does: articles and punctuation ignored
    assert (exact.mean(), f1.mean()) == pytest.approx(expected)


def test_answer_confidence_is_the_probability_of_the_answer_given():
    preds = predictions(
        answers={**ANSWERS, "d": ""},
        nbest={**NBEST, "d": [], "b": [{"text": "", "probability": 0.7}, {"text": "2 million", "probability": 0.3}]},
    )
    assert answer_confidence(preds, ["a", "b", "c", "d"]).tolist() == [0.9, 0.3, 0.3, 0.0]


def test_bootstrap_is_seeded_reproducible_and_brackets_the_mean():
    rng = np.random.default_rng(1)
    exact = 100.0 * (rng.random(400) < 0.6)
    f1 = np.clip(exact + rng.normal(0, 10, 400), 0, 100)
    scores = {"exact_match": exact, "f1": f1}
    first = bootstrap_intervals(scores, 1000, seed=7)
    assert bootstrap_intervals(scores, 1000, seed=7) == first
    assert bootstrap_intervals(scores, 1000, seed=8) != first
    for name, values in scores.items():
        low, high = first[name]
        assert low < values.mean() < high
    # a proportion's 95% interval is about +-1.96 standard errors wide
    half_width = (first["exact_match"][1] - first["exact_match"][0]) / 2
    standard_error = 100.0 * np.sqrt(exact.mean() / 100 * (1 - exact.mean() / 100) / len(exact))
    assert half_width == pytest.approx(1.96 * standard_error, rel=0.15)
    assert bootstrap_intervals({"x": np.full(50, 42.0)}, 200, seed=0) == {"x": (42.0, 42.0)}


def test_analyse_reports_reproducible_intervals_around_the_scores():
    columns_ = columns(EXAMPLES)
    one = analyse(predictions(), columns_, WINDOWS, False, bootstrap_samples=500, seed=3)
    two = analyse(predictions(), columns_, WINDOWS, False, bootstrap_samples=500, seed=3)
    assert one.summary == two.summary
    f1 = (100 + F1_B + 0 + 100) / 4
    assert one.summary["f1_ci95_low"] <= f1 <= one.summary["f1_ci95_high"]
    assert 0.0 <= one.summary["exact_match_ci95_low"] <= 50.0 <= one.summary["exact_match_ci95_high"] <= 100.0


def test_risk_coverage_on_a_constructed_case():
    # most confident first: 100, 100, 0, 0 -> F1 of the answered: 100, 100, 66.7, 50
    curve = risk_coverage(np.array([0.2, 0.9, 0.4, 0.8]), np.array([0.0, 100.0, 0.0, 100.0]))
    assert curve.coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert curve.f1 == pytest.approx([100.0, 100.0, 200 / 3, 50.0])
    assert curve.threshold.tolist() == [0.9, 0.8, 0.4, 0.2]
    assert curve.area == pytest.approx((100 + 100 + 200 / 3 + 50) / 4)
    # a perfect ranking beats the reverse one; the last point is always the overall F1
    reverse = risk_coverage(np.array([0.8, 0.1, 0.6, 0.2]), np.array([0.0, 100.0, 0.0, 100.0]))
    assert reverse.area < curve.area and reverse.f1[-1] == curve.f1[-1] == 50.0


def test_risk_coverage_counts_tied_confidences_with_their_mean():
    # two questions tied at 0.5 (one right, one wrong) cannot be split by a cut-off
    curve = risk_coverage(np.array([0.9, 0.5, 0.5]), np.array([100.0, 0.0, 100.0]))
    assert curve.f1 == pytest.approx([100.0, 75.0, 200 / 3])
    assert risk_coverage(np.array([0.5, 0.5, 0.9]), np.array([100.0, 0.0, 100.0])).f1 == pytest.approx(curve.f1)


def test_expected_calibration_error_on_a_constructed_case():
    confidence = np.array([0.95, 0.95, 0.95, 0.95, 0.15, 0.15, 1.0])
    correct = np.array([1, 1, 1, 0, 0, 0, 1])
    ece, bins = calibration(confidence, correct)
    # bin 0.9-1.0: 5 questions, accuracy 4/5, confidence 0.96; bin 0.1-0.2: 2 questions, accuracy 0, confidence 0.15
    assert ece == pytest.approx(5 / 7 * abs(0.8 - 0.96) + 2 / 7 * 0.15)
    assert [(b["bin_low"], b["count"]) for b in bins] == [(0.1, 2), (0.9, 5)]
    assert calibration(np.array([1.0, 0.0]), np.array([1, 0]))[0] == 0.0  # perfectly calibrated


def test_curve_rows_are_thinned_but_keep_the_last_point():
    n = 1234
    preds = QAPredictions(
        answers={str(i): "Paris" for i in range(n)},
        nbest={str(i): [{"text": "Paris", "probability": (i % 97) / 97}] for i in range(n)},
    )
    examples = {
        "id": [str(i) for i in range(n)],
        "question": ["What?"] * n,
        "context": [CONTEXT] * n,
        "answers": [{"text": ["Paris" if i % 2 else "France"], "answer_start": [0 if i % 2 else 24]} for i in range(n)],
    }
    result = analyse(preds, examples, {}, False, bootstrap_samples=100, seed=0)
    rows = result.curve_rows(max_points=100)
    assert len(rows) == 100 and rows[-1]["coverage"] == 1.0
    assert rows[-1]["f1"] == pytest.approx(100 * (n // 2) / n, abs=1e-4)
