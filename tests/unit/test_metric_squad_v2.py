"""The local squad_v2 metric: the published SQuAD v2.0 definition, hand-checked cases, and
agreement with transformers' own v2.0 evaluation (transformers.data.metrics.squad_metrics)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tests.helpers.project import SAMPLE_DIR
from pipeline.qa.squad import read_squad_json
from pipeline.qa.metrics import METRICS_DIR, load_metric

KEYS = [
    "exact",
    "f1",
    "total",
    "HasAns_exact",
    "HasAns_f1",
    "HasAns_total",
    "NoAns_exact",
    "NoAns_f1",
    "NoAns_total",
    "best_exact",
    "best_exact_thresh",
    "best_f1",
    "best_f1_thresh",
]


@pytest.fixture(scope="module")
def squad_v2():
    return load_metric("squad_v2")


def compute(metric, rows, **kwargs):
    """rows: (prediction, no-answer probability, gold answers)."""
    predictions = [
        {"id": str(i), "prediction_text": p, "no_answer_probability": na} for i, (p, na, _) in enumerate(rows)
    ]
    references = [
        {"id": str(i), "answers": {"text": g, "answer_start": [0] * len(g)}} for i, (_, _, g) in enumerate(rows)
    ]
    return metric.compute(predictions=predictions, references=references, **kwargs)


def test_loaded_from_the_repo_not_the_hub(squad_v2):
    assert (METRICS_DIR / "squad_v2" / "squad_v2.py").is_file()
    assert type(squad_v2).__name__ == "SquadV2"


def test_answerable_and_unanswerable_questions_are_scored_apart(squad_v2):
    result = compute(
        squad_v2,
        [
            ("the Denver Broncos", 0.0, ["Denver Broncos"]),  # right
            ("Broncos", 0.0, ["Denver Broncos", "Carolina"]),  # partly right: F1 2/3
            ("", 0.0, ["Santa Clara"]),  # answerable, said "no answer"
            ("", 0.0, []),  # unanswerable, said "no answer"
            ("Levi's Stadium", 0.0, []),  # unanswerable, answered
        ],
    )
    assert list(result) == KEYS
    assert result["total"] == 5 and result["HasAns_total"] == 3 and result["NoAns_total"] == 2
    assert result["HasAns_exact"] == pytest.approx(100 / 3)
    assert result["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert result["NoAns_exact"] == result["NoAns_f1"] == 50.0
    assert result["exact"] == pytest.approx(100 * 2 / 5)
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 5)


def test_gold_answers_that_normalise_to_nothing_leave_the_empty_answer(squad_v2):
    # "The" normalises to "": the question keeps only the gold answer "", yet counts as answerable
    result = compute(squad_v2, [("", 0.0, ["The"])])
    assert (result["exact"], result["f1"], result["HasAns_total"]) == (100.0, 100.0, 1)
    assert "NoAns_total" not in result  # a group without questions has no keys, as in the official script


def test_no_answer_threshold_overrides_the_prediction_text(squad_v2):
    rows = [("Denver Broncos", 0.9, ["Denver Broncos"]), ("Paris", 0.9, [])]
    assert compute(squad_v2, rows)["exact"] == 50.0  # default threshold 1.0: texts as predicted
    result = compute(squad_v2, rows, no_answer_threshold=0.5)  # both count as answered ""
    assert (result["HasAns_exact"], result["NoAns_exact"]) == (0.0, 100.0)


def test_best_threshold_over_no_answer_probabilities(squad_v2):
    result = compute(
        squad_v2,
        [
            ("Denver Broncos", 0.1, ["Denver Broncos"]),
            ("Paris", 0.8, []),
            ("Santa Clara", 0.5, ["Santa Clara"]),
            ("", 0.3, []),
        ],
    )
    # start: all "" -> 2 right; past 0.1: +1 (3); past 0.3: +0; past 0.5: +1 (4, best); past 0.8: -1
    assert result["exact"] == 75.0
    assert (result["best_exact"], result["best_exact_thresh"]) == (100.0, 0.5)
    assert (result["best_f1"], result["best_f1_thresh"]) == (100.0, 0.5)


def test_every_question_needs_exactly_one_prediction(squad_v2):
    with pytest.raises(ValueError, match="same unique ids"):
        squad_v2.compute(
            predictions=[{"id": "a", "prediction_text": "", "no_answer_probability": 0.0}],
            references=[{"id": "b", "answers": {"text": [], "answer_start": []}}],
        )


def varied_predictions(records, seed):
    """Right, restyled, partial, wrong and empty answers, with ties among the probabilities."""
    rng = np.random.default_rng(seed)
    answerable = [r for r in records if r["answers"]["text"]]
    predictions = []
    for r in records:
        gold = r["answers"]["text"][0] if r["answers"]["text"] else None
        other = answerable[int(rng.integers(len(answerable)))]["answers"]["text"][0]
        choice = rng.integers(0, 5)
        if gold is None:
            text = ["", "", other, other.lower(), " "][choice]
        else:
            text = [gold, f"the {gold.upper()}.", gold.split()[0], other, ""][choice]
        predictions.append(
            {"id": r["id"], "prediction_text": text, "no_answer_probability": float(np.round(rng.normal(0, 2), 1))}
        )
    return predictions


@pytest.mark.parametrize("seed,threshold", [(0, 1.0), (1, 0.0), (2, -1.5)])
def test_agrees_with_transformers_squad_v2_evaluation(squad_v2, seed, threshold):
    from transformers.data.metrics.squad_metrics import squad_evaluate

    records = read_squad_json(SAMPLE_DIR / "validation-v2.json.gz")
    predictions = varied_predictions(records, seed)
    expected = squad_evaluate(
        [SimpleNamespace(qas_id=r["id"], answers=[{"text": t} for t in r["answers"]["text"]]) for r in records],
        {p["id"]: p["prediction_text"] for p in predictions},
        no_answer_probs={p["id"]: p["no_answer_probability"] for p in predictions},
        no_answer_probability_threshold=threshold,
    )
    got = squad_v2.compute(
        predictions=predictions,
        references=[{"id": r["id"], "answers": r["answers"]} for r in records],
        no_answer_threshold=threshold,
    )
    assert list(got) == KEYS
    assert got == pytest.approx(dict(expected), abs=1e-9)
    assert 0 < got["HasAns_f1"] < 100 and 0 < got["NoAns_exact"] < 100
    # the sweep visits every threshold, the one applied included
    assert got["best_f1"] >= got["f1"] - 1e-9 and got["best_exact"] >= got["exact"] - 1e-9
